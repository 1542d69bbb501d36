package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Failed logins are throttled per user name and per client address. A name
// may fail loginFreeFailures times in a row, an address (which users may
// share) loginFreeAddrFailures times; after that, it
// waits Backoff before its next attempt, doubled with every further failure
// up to MaxBackoff, and makes one attempt at a time (a burst of concurrent
// guesses is not checked all at once). An attempt made while either waits
// is refused at once with ErrGRPCLoginThrottled, without looking at the
// password (checking it would leave a guesser an oracle answering at full
// speed). A successful login clears its user name's failures; failures are
// forgotten after loginForgetFactor times MaxBackoff without one (long
// enough that waiting to be forgotten is no faster for a guesser than
// guessing at the capped rate). The state is per node, in memory, and
// bounded.
//
// Every failed login costs the same: an unknown user, or one without a
// password, is compared against a dummy hash of the configured bcrypt cost,
// so the time of a refusal does not tell which user names exist.

const (
	// loginFreeFailures is how many failures in a row a user name makes
	// before it must wait: a typo or two costs nothing.
	loginFreeFailures = 3
	// loginFreeAddrFailures is the same for a client address, which many
	// users may share (a NAT, a host running several clients): another
	// user's typos from it must not lock a user out, while a guesser
	// spraying user names from it still soon waits.
	loginFreeAddrFailures = 10
	// loginForgetFactor times MaxBackoff without a failure forgets a user
	// name's or address's failures.
	loginForgetFactor = 10
)

// Defaults of LoginConfig.
const (
	DefaultLoginBackoff    = 100 * time.Millisecond
	DefaultLoginMaxBackoff = 10 * time.Second
	// DefaultLoginMaxTracked bounds the user names, and separately the
	// addresses, whose failures a node remembers.
	DefaultLoginMaxTracked = 4096
)

// ErrGRPCLoginThrottled answers a login attempted while its user name or
// client address waits after failed attempts. ResourceExhausted is gRPC's
// code for a rate limit; clientv3 does not retry it on its own (so a
// throttled client does not hammer the other members), and it differs
// from "authentication failed", so a user with the right password knows to
// wait rather than doubt the password. It tells nothing about whether the
// user exists: unknown names are throttled alike.
var ErrGRPCLoginThrottled = status.Error(codes.ResourceExhausted, "etcdserver: too many failed authentication attempts, retry later")

// LoginConfig configures the throttling of failed logins.
type LoginConfig struct {
	// Backoff is the wait after the failure that uses up a user name's or
	// address's free failures (default DefaultLoginBackoff; negative turns
	// throttling off). Every further failure doubles it, up to MaxBackoff
	// (default DefaultLoginMaxBackoff).
	Backoff    time.Duration
	MaxBackoff time.Duration
	// MaxTracked bounds the user names, and separately the client
	// addresses, whose failures are remembered (default
	// DefaultLoginMaxTracked): when full, forgotten entries go first, then
	// the one whose last failure is oldest.
	MaxTracked int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// loginThrottle remembers failed logins.
type loginThrottle struct {
	cfg LoginConfig
	mu  struct {
		sync.Mutex
		users map[string]*failures // by user name
		addrs map[string]*failures // by client address
	}
}

// failures are the consecutive failed logins of one user name or address.
type failures struct {
	free int       // failures in a row that cost nothing (per kind of key)
	n    int       // failures since the last success or forgetting
	last time.Time // of the latest failure
	busy int       // admitted attempts not finished yet
}

func newLoginThrottle(cfg LoginConfig) *loginThrottle {
	if cfg.Backoff == 0 {
		cfg.Backoff = DefaultLoginBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultLoginMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.Backoff)
	if cfg.MaxTracked <= 0 {
		cfg.MaxTracked = DefaultLoginMaxTracked
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	t := &loginThrottle{cfg: cfg}
	t.mu.users = map[string]*failures{}
	t.mu.addrs = map[string]*failures{}
	return t
}

// wait is how long f's key waits after its latest failure.
func (t *loginThrottle) wait(f *failures) time.Duration {
	if f.n < f.free {
		return 0
	}
	d := t.cfg.Backoff
	for i := f.free; i < f.n && d < t.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, t.cfg.MaxBackoff)
}

// blocked reports whether an attempt for f's key must wait. A key without
// failures is not limited (clients sharing one user may log in all at
// once); a key with failures on record that does not wait yet may have
// loginFreeFailures attempts in flight, and once it must wait, one attempt
// at a time. So a burst of concurrent guesses checks at most
// 2*loginFreeFailures-1 passwords before the waits begin, while a client
// that logs in to every member at once after someone else's typo from its
// address is not refused.
func (t *loginThrottle) blocked(f *failures, now time.Time) bool {
	switch {
	case f == nil || f.n == 0:
		return false
	case f.n < f.free:
		return f.busy >= f.free
	case f.busy > 0:
		return true
	}
	return now.Before(f.last.Add(t.wait(f)))
}

// forgettable reports whether f's failures are old enough to forget.
func (t *loginThrottle) forgettable(f *failures, now time.Time) bool {
	return f.busy == 0 && !now.Before(f.last.Add(t.wait(f)+loginForgetFactor*t.cfg.MaxBackoff))
}

// loginOutcome is how an admitted login attempt ended.
type loginOutcome int

const (
	loginFailed    loginOutcome = iota // wrong user name or password
	loginSucceeded                     // the user's failures are cleared
	loginAborted                       // neither (auth disabled, no leader, ...)
)

// admit lets a login attempt for user from addr ("": unknown) proceed, or
// refuses it with ErrGRPCLoginThrottled. The caller reports how an admitted
// attempt ended with done.
func (t *loginThrottle) admit(user, addr string) (done func(loginOutcome), err error) {
	if t.cfg.Backoff < 0 {
		return func(loginOutcome) {}, nil
	}
	user = throttleKey(user)
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Now()
	u, a := t.mu.users[user], t.mu.addrs[addr]
	if addr == "" {
		a = nil
	}
	if t.blocked(u, now) || t.blocked(a, now) {
		return nil, ErrGRPCLoginThrottled
	}
	for _, f := range []*failures{u, a} {
		if f != nil {
			f.busy++
		}
	}
	return func(o loginOutcome) { t.finish(user, addr, u, a, o) }, nil
}

func (t *loginThrottle) finish(user, addr string, u, a *failures, o loginOutcome) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range []*failures{u, a} {
		if f != nil {
			f.busy--
		}
	}
	now := t.cfg.Now()
	switch o {
	case loginSucceeded:
		delete(t.mu.users, user)
	case loginFailed:
		t.failLocked(t.mu.users, user, now, loginFreeFailures)
		if addr != "" {
			t.failLocked(t.mu.addrs, addr, now, loginFreeAddrFailures)
		}
	}
}

// failLocked records a failure of key in m, making room if m is full.
func (t *loginThrottle) failLocked(m map[string]*failures, key string, now time.Time, free int) {
	f, ok := m[key]
	if !ok {
		if len(m) >= t.cfg.MaxTracked {
			t.evictLocked(m, now)
		}
		f = &failures{free: free}
		m[key] = f
	}
	if t.forgettable(f, now) {
		f.n = 0
	}
	f.n++
	f.last = now
}

// evictLocked makes room in m: it drops the entries old enough to forget,
// or else the one whose last failure is oldest. Overwriting a victim's
// entry that way takes as many fresh failures as m holds, each a bcrypt
// comparison and each throttled per address.
func (t *loginThrottle) evictLocked(m map[string]*failures, now time.Time) {
	var oldest string
	var oldestAt time.Time
	found := false
	for k, f := range m {
		if t.forgettable(f, now) {
			delete(m, k)
			continue
		}
		if !found || f.last.Before(oldestAt) {
			oldest, oldestAt, found = k, f.last, true
		}
	}
	if len(m) >= t.cfg.MaxTracked {
		delete(m, oldest)
	}
}

// tracked returns how many user names and addresses have failures on record.
func (t *loginThrottle) tracked() (users, addrs int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.mu.users), len(t.mu.addrs)
}

// maxNameKey is the longest user name the throttle keeps as is; longer
// ones (any name may be tried, up to the request size limit) are kept as
// their hash, so that the memory the throttle holds stays bounded.
const maxNameKey = 128

func throttleKey(user string) string {
	if len(user) <= maxNameKey {
		return user
	}
	sum := sha256.Sum256([]byte(user))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// clientAddress is the throttling key of the client that sent ctx's
// request: its IP address, an IPv6 address cut to its /64 (a host commonly
// holds a whole /64), or "" if unknown.
func clientAddress(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	var ip net.IP
	switch a := p.Addr.(type) {
	case *net.TCPAddr:
		ip = a.IP
	default:
		host, _, err := net.SplitHostPort(p.Addr.String())
		if err != nil {
			return ""
		}
		ip = net.ParseIP(host)
	}
	if ip == nil {
		return ""
	}
	if ip4 := ip.To4(); ip4 != nil {
		return ip4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// passwordChecker compares passwords with their bcrypt hashes.
type passwordChecker struct {
	cost  int
	once  sync.Once
	dummy []byte // a hash of a random password at cost, made on first use

	// testingCompared, if set, sees every hash a password is compared with.
	testingCompared func(hash []byte)
}

// check reports whether password is u's. It spends one bcrypt comparison
// also when u is nil (no such user) or has no password, against a dummy hash
// of the configured cost, so that every refusal takes as long.
func (p *passwordChecker) check(u *authpb.User, password string) bool {
	hash, real := p.dummyHash(), false
	if u != nil && (u.Options == nil || !u.Options.NoPassword) && len(u.Password) > 0 {
		hash, real = u.Password, true
	}
	if p.testingCompared != nil {
		p.testingCompared(hash)
	}
	ok := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
	return ok && real
}

func (p *passwordChecker) dummyHash() []byte {
	p.once.Do(func() {
		var pw [16]byte
		_, _ = rand.Read(pw[:]) // crypto/rand never fails on Linux
		h, err := bcrypt.GenerateFromPassword(pw[:], p.cost)
		if err != nil {
			// Only an invalid cost fails, and then no user can be added
			// either; compare against the minimum cost rather than nothing.
			h, _ = bcrypt.GenerateFromPassword(pw[:], bcrypt.MinCost)
		}
		p.dummy = h
	})
	return p.dummy
}
