package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/raftcmd"
)

// fakeClock is a settable clock.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time          { return c.now }
func (c *fakeClock) advance(d time.Duration) { c.now = c.now.Add(d) }

// try makes one login attempt for user from addr that ends in o, or reports
// that it was throttled.
func try(t *testing.T, th *loginThrottle, user, addr string, o loginOutcome) (throttled bool) {
	t.Helper()
	done, err := th.admit(user, addr)
	if errors.Is(err, ErrGRPCLoginThrottled) {
		return true
	}
	if err != nil {
		t.Fatalf("admit %s from %s: %v", user, addr, err)
	}
	done(o)
	return false
}

func TestLoginThrottle(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1000, 0)}
	const base, top = time.Second, 8 * time.Second
	th := newLoginThrottle(LoginConfig{Backoff: base, MaxBackoff: top, Now: clock.Now})
	mustTry := func(what, user, addr string, o loginOutcome, wantThrottled bool) {
		t.Helper()
		if got := try(t, th, user, addr, o); got != wantThrottled {
			t.Fatalf("%s (%s from %s): got throttled %v, want %v", what, user, addr, got, wantThrottled)
		}
	}

	// Free failures, then a doubling wait up to the cap, per user name.
	for i := range loginFreeFailures {
		mustTry(fmt.Sprintf("free failure %d", i+1), "bob", fmt.Sprintf("10.0.0.%d", i), loginFailed, false)
	}
	for i, wait := range []time.Duration{base, 2 * base, 4 * base, top, top, top} {
		addr := fmt.Sprintf("10.1.0.%d", i) // a fresh address: only the name counts
		mustTry("right after a failure", "bob", addr, loginSucceeded, true)
		clock.advance(wait - time.Millisecond)
		mustTry("just before the wait ends", "bob", addr, loginSucceeded, true)
		clock.advance(time.Millisecond)
		mustTry("when the wait ends", "bob", addr, loginFailed, false)
	}
	// A success clears the name's failures: three free ones again.
	clock.advance(top)
	mustTry("right password after the wait", "bob", "10.2.0.1", loginSucceeded, false)
	for i := range loginFreeFailures {
		mustTry(fmt.Sprintf("free failure %d after a success", i+1), "bob", fmt.Sprintf("10.3.0.%d", i), loginFailed, false)
	}
	mustTry("fourth failure after a success", "bob", "10.3.0.9", loginFailed, true)

	// Per address: failures of any names throttle every name from it, and
	// a success does not clear an address.
	for i := range loginFreeAddrFailures {
		mustTry("spraying names", fmt.Sprintf("guess%d", i), "10.9.9.9", loginFailed, false)
	}
	mustTry("another name from the same address", "carol", "10.9.9.9", loginSucceeded, true)
	mustTry("the same name from another address", "carol", "10.9.9.8", loginSucceeded, false)
	clock.advance(base)
	mustTry("after the address's wait", "carol", "10.9.9.9", loginSucceeded, false)
	mustTry("after a success from it", "dave", "10.9.9.9", loginFailed, false)
	mustTry("the address still waits", "erin", "10.9.9.9", loginSucceeded, true)

	// Failures are forgotten after a quiet while.
	clock.advance(top + loginForgetFactor*top)
	mustTry("after the forget period", "frank", "10.9.9.9", loginFailed, false)
	mustTry("a single failure costs nothing", "frank", "10.9.9.9", loginSucceeded, false)

	// One attempt at a time for a name that must wait: a burst of
	// concurrent guesses is not checked all at once.
	for range loginFreeFailures {
		mustTry("failing", "gina", "", loginFailed, false)
	}
	clock.advance(top)
	done, err := th.admit("gina", "")
	if err != nil {
		t.Fatalf("first attempt after the wait: got %v, want admitted", err)
	}
	mustTry("a concurrent attempt", "gina", "", loginSucceeded, true)
	done(loginFailed)

	// Names without failures are not limited: clients sharing a user may
	// log in all at once.
	var dones []func(loginOutcome)
	for i := range 20 {
		d, err := th.admit("shared", "")
		if err != nil {
			t.Fatalf("concurrent login %d of a user without failures: got %v, want admitted", i, err)
		}
		dones = append(dones, d)
	}
	for _, d := range dones {
		d(loginSucceeded)
	}

	// Someone's typo from an address does not refuse another user's client
	// that logs in to three members at once from it (TestAuthWithEtcdctl
	// once failed so), but a burst of guesses from it stays bounded.
	mustTry("a typo", "bob", "10.7.7.7", loginFailed, false)
	dones = nil
	for i := range loginFreeAddrFailures {
		d, err := th.admit("root", "10.7.7.7")
		if err != nil {
			t.Fatalf("concurrent login %d of root after bob's typo: got %v, want admitted", i, err)
		}
		dones = append(dones, d)
	}
	mustTry("one more concurrent attempt from the address", "root", "10.7.7.7", loginSucceeded, true)
	for _, d := range dones {
		d(loginSucceeded)
	}
	mustTry("after the burst", "root", "10.7.7.7", loginSucceeded, false)
}

// TestLoginThrottleMemoryIsBounded: a guesser cycling through user names
// and addresses does not grow the throttle's maps past their bound.
func TestLoginThrottleMemoryIsBounded(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1000, 0)}
	th := newLoginThrottle(LoginConfig{MaxTracked: 16, Now: clock.Now})
	for i := range 5000 {
		try(t, th, fmt.Sprintf("user%d", i), fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255), loginFailed)
		clock.advance(time.Millisecond)
	}
	if users, addrs := th.tracked(); users > 16 || addrs > 16 {
		t.Fatalf("tracked after 5,000 names from 5,000 addresses: got %d names and %d addresses, want at most 16 each", users, addrs)
	}
	// Long names are kept as their hash, and still throttled.
	long := strings.Repeat("x", 1<<20)
	for range loginFreeFailures {
		try(t, th, long, "", loginFailed)
	}
	if !try(t, th, long, "", loginSucceeded) {
		t.Fatal("a 1 MiB user name after three failures: got admitted, want throttled")
	}
	th.mu.Lock()
	for k := range th.mu.users {
		if len(k) > maxNameKey {
			t.Errorf("throttle key of %d bytes: want at most %d", len(k), maxNameKey)
		}
	}
	th.mu.Unlock()
}

func TestClientAddress(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 5000}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 5000}, "2001:db8:1:2::/64"},
		{&net.UnixAddr{Name: "@sock", Net: "unix"}, ""},
	} {
		ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: c.addr})
		if got := clientAddress(ctx); got != c.want {
			t.Errorf("address of %v: got %q, want %q", c.addr, got, c.want)
		}
	}
	if got := clientAddress(context.Background()); got != "" {
		t.Errorf("address without a peer: got %q, want none", got)
	}
}

// loginBackend is a node for the Auth service over db: everything applies
// at once.
type loginBackend struct {
	t  *testing.T
	db *pebble.DB
	a  *Authorizer
}

func (b loginBackend) Header() *pb.ResponseHeader      { return &pb.ResponseHeader{} }
func (b loginBackend) Linearize(context.Context) error { return nil }
func (b loginBackend) Propose(_ context.Context, _ raftcmd.Kind, req proto.Message) (any, error) {
	bt := b.db.NewIndexedBatch()
	defer bt.Close()
	resp, tok, err := Apply(bt, req)
	if err != nil {
		return nil, err
	}
	if err := bt.Commit(nil); err != nil {
		b.t.Fatal(err)
	}
	if tok != nil {
		b.a.Tokens().Register(*tok)
	}
	b.a.Invalidate()
	return resp, nil
}

// TestFailedLoginsCostTheSame: a login of an unknown user, or of one without
// a password, compares the password with a hash of the configured cost, as
// a wrong password does, so that refusals do not tell which users exist.
func TestFailedLoginsCostTheSame(t *testing.T) {
	const cost = bcrypt.MinCost + 1
	db := openMem(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("alicepw"), cost)
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []proto.Message{
		&pb.AuthUserAddRequest{Name: "root", HashedPassword: string(hash)},
		&pb.AuthUserGrantRoleRequest{User: "root", Role: RootRole},
		&pb.AuthUserAddRequest{Name: "alice", HashedPassword: string(hash)},
		&pb.AuthUserAddRequest{Name: "cert-only", Options: &authpb.UserAddOptions{NoPassword: true}},
		&pb.AuthEnableRequest{},
	} {
		mustApply(t, db, req)
	}
	tokens, err := NewTokens(TokenConfig{}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := New(Config{DB: db, Tokens: tokens, BcryptCost: cost, Login: LoginConfig{Backoff: -1}})
	var costs []int
	a.passwords.testingCompared = func(h []byte) {
		c, err := bcrypt.Cost(h)
		if err != nil {
			t.Fatalf("compared with %q: not a bcrypt hash: %v", h, err)
		}
		costs = append(costs, c)
	}
	s := NewService(loginBackend{t: t, db: db, a: a}, a)
	ctx := context.Background()
	for _, c := range []struct {
		user, password string
		want           error
	}{
		{"alice", "wrong", rpctypes.ErrGRPCAuthFailed},
		{"nobody", "wrong", rpctypes.ErrGRPCAuthFailed},
		{"cert-only", "", rpctypes.ErrGRPCAuthFailed},
		{"cert-only", "guess", rpctypes.ErrGRPCAuthFailed},
		{"alice", "alicepw", nil},
	} {
		costs = nil
		resp, err := s.Authenticate(ctx, &pb.AuthenticateRequest{Name: c.user, Password: c.password})
		if !errors.Is(err, c.want) {
			t.Fatalf("login %s/%s: got %v, want %v", c.user, c.password, err, c.want)
		}
		if len(costs) != 1 || costs[0] != cost {
			t.Fatalf("login %s/%s: got bcrypt comparisons at costs %v, want one at %d", c.user, c.password, costs, cost)
		}
		if c.want == nil && resp.Token == "" {
			t.Fatalf("login %s/%s: got no token, want one", c.user, c.password)
		}
	}
}

// TestLoginIsThrottled checks the Auth service's use of the throttle: a
// throttled attempt is refused before its password is looked at.
func TestLoginIsThrottled(t *testing.T) {
	db := openMem(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("alicepw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []proto.Message{
		&pb.AuthUserAddRequest{Name: "root", HashedPassword: string(hash)},
		&pb.AuthUserGrantRoleRequest{User: "root", Role: RootRole},
		&pb.AuthUserAddRequest{Name: "alice", HashedPassword: string(hash)},
		&pb.AuthEnableRequest{},
	} {
		mustApply(t, db, req)
	}
	tokens, err := NewTokens(TokenConfig{}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Unix(1000, 0)}
	a := New(Config{DB: db, Tokens: tokens, BcryptCost: bcrypt.MinCost, Login: LoginConfig{Backoff: time.Second, Now: clock.Now}})
	compared := 0
	a.passwords.testingCompared = func([]byte) { compared++ }
	s := NewService(loginBackend{t: t, db: db, a: a}, a)
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}})
	for range loginFreeFailures {
		if _, err := s.Authenticate(ctx, &pb.AuthenticateRequest{Name: "alice", Password: "wrong"}); !errors.Is(err, rpctypes.ErrGRPCAuthFailed) {
			t.Fatalf("wrong password: got %v, want %v", err, rpctypes.ErrGRPCAuthFailed)
		}
	}
	compared = 0
	if _, err := s.Authenticate(ctx, &pb.AuthenticateRequest{Name: "alice", Password: "alicepw"}); !errors.Is(err, ErrGRPCLoginThrottled) {
		t.Fatalf("right password while throttled: got %v, want %v", err, ErrGRPCLoginThrottled)
	}
	if compared != 0 {
		t.Fatalf("throttled login: got %d password comparisons, want 0", compared)
	}
	clock.advance(time.Second)
	if _, err := s.Authenticate(ctx, &pb.AuthenticateRequest{Name: "alice", Password: "alicepw"}); err != nil {
		t.Fatalf("right password after the wait: got %v, want success", err)
	}
}
