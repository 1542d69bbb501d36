package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc/metadata"

	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// authClient returns a client logged in as user on the given nodes.
func authClient(t *testing.T, nodes []*testcluster.Node, user, password string) *clientv3.Client {
	t.Helper()
	var eps []string
	for _, n := range nodes {
		eps = append(eps, n.ClientAddr)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		Username:    user,
		Password:    password,
	})
	if err != nil {
		t.Fatalf("client for %s: %v", user, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// isErr reports whether err is the etcd error want, as a client sees it.
func isErr(err, want error) bool {
	return err != nil && strings.Contains(err.Error(), rpctypes.ErrorDesc(want))
}

func wantAuthErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !isErr(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

func wantAuthOK(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: got error %v, want success", what, err)
	}
}

func fastBcrypt(_ int, cfg *server.Config) { cfg.BcryptCost = bcrypt.MinCost }

// enableAuth creates root and enables auth, checking etcd's preconditions.
func enableAuth(t *testing.T, ctx context.Context, cli *clientv3.Client) {
	t.Helper()
	_, err := cli.AuthEnable(ctx)
	wantAuthErr(t, "enable without root", err, rpctypes.ErrGRPCRootUserNotExist)
	_, err = cli.UserAdd(ctx, "root", "rootpw")
	wantAuthOK(t, "add root", err)
	_, err = cli.AuthEnable(ctx)
	wantAuthErr(t, "enable without root role", err, rpctypes.ErrGRPCRootRoleNotExist)
	_, err = cli.UserGrantRole(ctx, "root", "root")
	wantAuthOK(t, "grant root", err)
	_, err = cli.AuthEnable(ctx)
	wantAuthOK(t, "enable", err)
}

func TestAuthPermissionsOnThreeNodes(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 3, OnDisk: true, Configure: fastBcrypt})
	c.WaitLeader()
	ctx := testcluster.Context(t, 60*time.Second)
	open := c.Client()
	enableAuth(t, ctx, open)

	_, err := open.Put(ctx, "x", "1")
	wantAuthErr(t, "put without credentials", err, rpctypes.ErrGRPCUserEmpty)
	if _, err := clientv3.New(clientv3.Config{Endpoints: []string{c.Node(0).ClientAddr}, Username: "root", Password: "bad", Logger: zap.NewNop(), DialTimeout: 5 * time.Second}); !isErr(err, rpctypes.ErrGRPCAuthFailed) {
		t.Fatalf("login with a wrong password: got %v, want %v", err, rpctypes.ErrGRPCAuthFailed)
	}

	root := authClient(t, c.Nodes()[:1], "root", "rootpw")
	for _, step := range []struct {
		what string
		do   func() error
	}{
		{"add role reader", func() error { _, err := root.RoleAdd(ctx, "reader"); return err }},
		{"grant read pub/", func() error {
			_, err := root.RoleGrantPermission(ctx, "reader", "pub/", clientv3.GetPrefixRangeEnd("pub/"), clientv3.PermissionType(clientv3.PermRead))
			return err
		}},
		{"add role writer", func() error { _, err := root.RoleAdd(ctx, "writer"); return err }},
		{"grant write w", func() error {
			_, err := root.RoleGrantPermission(ctx, "writer", "w", "", clientv3.PermissionType(clientv3.PermWrite))
			return err
		}},
		{"add role rw", func() error { _, err := root.RoleAdd(ctx, "rw"); return err }},
		{"grant readwrite [a, c)", func() error {
			_, err := root.RoleGrantPermission(ctx, "rw", "a", "c", clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		}},
		{"add alice", func() error { _, err := root.UserAdd(ctx, "alice", "alicepw"); return err }},
		{"grant reader", func() error { _, err := root.UserGrantRole(ctx, "alice", "reader"); return err }},
		{"grant writer", func() error { _, err := root.UserGrantRole(ctx, "alice", "writer"); return err }},
		{"grant rw", func() error { _, err := root.UserGrantRole(ctx, "alice", "rw"); return err }},
		{"root put pub/x", func() error { _, err := root.Put(ctx, "pub/x", "1"); return err }},
		{"root put secret", func() error { _, err := root.Put(ctx, "secret", "s"); return err }},
	} {
		wantAuthOK(t, step.what, step.do())
	}
	_, err = root.UserAdd(ctx, "alice", "again")
	wantAuthErr(t, "add alice twice", err, rpctypes.ErrGRPCUserAlreadyExist)

	// alice talks to every node: simple tokens are known cluster-wide.
	alice := authClient(t, c.Nodes(), "alice", "alicepw")
	denied := rpctypes.ErrGRPCPermissionDenied
	for i := 0; i < 3; i++ { // spread over the nodes by the balancer
		resp, err := alice.Get(ctx, "pub/x")
		wantAuthOK(t, "alice get pub/x", err)
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "1" {
			t.Fatalf("alice get pub/x: got %v, want value 1", resp.Kvs)
		}
	}
	_, err = alice.Get(ctx, "pub/", clientv3.WithPrefix())
	wantAuthOK(t, "alice get prefix pub/", err)
	_, err = alice.Get(ctx, "pub", clientv3.WithPrefix())
	wantAuthErr(t, "alice get prefix pub (wider)", err, denied)
	_, err = alice.Get(ctx, "secret")
	wantAuthErr(t, "alice get secret", err, denied)
	_, err = alice.Get(ctx, "", clientv3.WithFromKey())
	wantAuthErr(t, "alice get everything", err, denied)
	_, err = alice.Put(ctx, "pub/x", "2")
	wantAuthErr(t, "alice put read-only pub/x", err, denied)
	_, err = alice.Put(ctx, "w", "1")
	wantAuthOK(t, "alice put write-only w", err)
	_, err = alice.Get(ctx, "w")
	wantAuthErr(t, "alice get write-only w", err, denied)
	_, err = alice.Put(ctx, "w", "2", clientv3.WithPrevKV())
	wantAuthErr(t, "alice put w with prev kv", err, denied)
	_, err = alice.Put(ctx, "b", "1")
	wantAuthOK(t, "alice put b in [a, c)", err)
	_, err = alice.Get(ctx, "a", clientv3.WithRange("c"))
	wantAuthOK(t, "alice get [a, c)", err)
	_, err = alice.Get(ctx, "a", clientv3.WithRange("d"))
	wantAuthErr(t, "alice get [a, d)", err, denied)
	_, err = alice.Delete(ctx, "a", clientv3.WithRange("d"))
	wantAuthErr(t, "alice delete [a, d)", err, denied)
	_, err = alice.Delete(ctx, "b")
	wantAuthOK(t, "alice delete b", err)
	_, err = alice.Compact(ctx, 1)
	wantAuthErr(t, "alice compact", err, denied)
	_, err = alice.UserList(ctx)
	wantAuthErr(t, "alice user list", err, denied)
	if resp, err := alice.UserGet(ctx, "alice"); err != nil || len(resp.Roles) != 3 {
		t.Fatalf("alice user get self: got %v, %v, want 3 roles", resp, err)
	}

	// Transactions: compares need read, every op of both branches is checked.
	_, err = alice.Txn(ctx).If(clientv3.Compare(clientv3.Value("pub/x"), "=", "1")).
		Then(clientv3.OpPut("w", "3")).Else(clientv3.OpGet("pub/x")).Commit()
	wantAuthOK(t, "alice txn compare pub/x then put w", err)
	_, err = alice.Txn(ctx).If(clientv3.Compare(clientv3.Value("pub/x"), "=", "1")).
		Then(clientv3.OpPut("w", "3")).Else(clientv3.OpPut("secret", "x")).Commit()
	wantAuthErr(t, "alice txn with forbidden else branch", err, denied)
	_, err = alice.Txn(ctx).If(clientv3.Compare(clientv3.Version("w"), ">", 0)).Then(clientv3.OpPut("w", "4")).Commit()
	wantAuthErr(t, "alice txn comparing write-only w", err, denied)
	_, err = alice.Txn(ctx).Then(clientv3.OpGet("a", clientv3.WithRange("c")), clientv3.OpGet("secret")).Commit()
	wantAuthErr(t, "alice txn reading secret", err, denied)
	if got, _ := root.Get(ctx, "secret"); string(got.Kvs[0].Value) != "s" {
		t.Fatalf("secret after refused txns: got %q, want %q", got.Kvs[0].Value, "s")
	}

	// Watches: a readable prefix delivers events, a forbidden key is refused.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wch := alice.Watch(wctx, "pub/", clientv3.WithPrefix())
	bad := alice.Watch(wctx, "secret")
	select {
	case wr := <-bad:
		if !wr.Canceled || !strings.Contains(wr.Err().Error(), "permission denied") {
			t.Fatalf("watch on secret: got canceled=%v err=%v, want canceled with permission denied", wr.Canceled, wr.Err())
		}
	case <-ctx.Done():
		t.Fatal("watch on secret: got no response, want a canceled watch")
	}
	wantAuthOK(t, "root put pub/y", func() error { _, err := root.Put(ctx, "pub/y", "2"); return err }())
	evs := collectEvents(t, wch, 1, 10*time.Second)
	if string(evs[0].Kv.Key) != "pub/y" {
		t.Fatalf("watch pub/: got event on %q, want pub/y", evs[0].Kv.Key)
	}

	// Leases: revoking a lease deletes its keys, so it needs write on all.
	lease, err := alice.Grant(ctx, 60)
	wantAuthOK(t, "alice grant lease", err)
	_, err = root.Put(ctx, "secret/leased", "x", clientv3.WithLease(lease.ID))
	wantAuthOK(t, "root put on alice's lease", err)
	_, err = alice.Revoke(ctx, lease.ID)
	wantAuthErr(t, "alice revoke lease holding secret/leased", err, denied)
	_, err = root.Revoke(ctx, lease.ID)
	wantAuthOK(t, "root revoke", err)

	// Revocation takes effect on the next request, on any node: alice's
	// client on node 2 learns of a change made through node 0.
	alice2 := authClient(t, c.Nodes()[2:], "alice", "alicepw")
	_, err = alice2.Put(ctx, "w", "5")
	wantAuthOK(t, "alice put w on node 2", err)
	_, err = root.UserRevokeRole(ctx, "alice", "writer")
	wantAuthOK(t, "revoke writer", err)
	_, err = alice2.Put(ctx, "w", "6")
	wantAuthErr(t, "alice put w after revocation", err, denied)
	_, err = root.RoleRevokePermission(ctx, "reader", "pub/", clientv3.GetPrefixRangeEnd("pub/"))
	wantAuthOK(t, "revoke read pub/", err)
	_, err = alice2.Get(ctx, "pub/x")
	wantAuthErr(t, "alice get pub/x after revocation", err, denied)

	// The auth state is the same on every node and survives a restart.
	want := waitSameAuthState(t, c, 10*time.Second)
	c.Node(1).Stop()
	c.Node(1).Restart()
	c.WaitLeader()
	got := waitSameAuthState(t, c, 10*time.Second)
	if got.Revision != want.Revision || !reflect.DeepEqual(userNames(got), userNames(want)) {
		t.Fatalf("auth state after restart: got revision %d users %v, want revision %d users %v",
			got.Revision, userNames(got), want.Revision, userNames(want))
	}
	alice1 := authClient(t, c.Nodes()[1:2], "alice", "alicepw")
	_, err = alice1.Put(ctx, "b", "after restart")
	wantAuthOK(t, "alice put b on restarted node", err)
	_, err = alice1.Get(ctx, "secret")
	wantAuthErr(t, "alice get secret on restarted node", err, denied)

	// Disabling needs root; afterwards everyone may do everything again.
	_, err = alice.AuthDisable(ctx)
	wantAuthErr(t, "alice disable auth", err, denied)
	_, err = root.AuthDisable(ctx)
	wantAuthOK(t, "root disable auth", err)
	_, err = open.Get(ctx, "secret")
	wantAuthOK(t, "get secret with auth disabled", err)
}

type authView struct {
	Revision uint64
	Enabled  bool
	Users    map[string][]string
	Roles    map[string]string
}

func userNames(v authView) []string {
	var out []string
	for n := range v.Users {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// waitSameAuthState polls until every running node has the same auth state.
func waitSameAuthState(t *testing.T, c *testcluster.Cluster, d time.Duration) authView {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var views []authView
		for _, n := range c.Nodes() {
			srv := n.Server()
			if srv == nil {
				continue
			}
			st, err := srv.Authorizer().State()
			if err != nil {
				t.Fatalf("auth state of %s: %v", n.Name, err)
			}
			v := authView{Revision: st.Revision, Enabled: st.Enabled, Users: map[string][]string{}, Roles: map[string]string{}}
			for name, u := range st.Users {
				v.Users[name] = u.Roles
			}
			for name, r := range st.Roles {
				v.Roles[name] = r.String()
			}
			views = append(views, v)
		}
		same := len(views) > 0
		for _, v := range views[1:] {
			same = same && reflect.DeepEqual(v, views[0])
		}
		if same {
			return views[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("auth states differ after %v: got %+v, want all equal", d, views)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeECKeys writes a P-256 key pair as PEM files and returns their paths.
func writeECKeys(t *testing.T) (priv, pub string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	priv, pub = filepath.Join(dir, "jwt.key"), filepath.Join(dir, "jwt.pub")
	if err := os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

func TestAuthJWTTokensWorkOnEveryNode(t *testing.T) {
	busyParallel(t)
	priv, pub := writeECKeys(t)
	spec := "jwt,pub-key=" + pub + ",priv-key=" + priv + ",sign-method=ES256,ttl=10m"
	c := testcluster.New(t, testcluster.Options{Nodes: 3, Configure: func(i int, cfg *server.Config) {
		fastBcrypt(i, cfg)
		cfg.AuthToken = spec
	}})
	c.WaitLeader()
	ctx := testcluster.Context(t, 30*time.Second)
	enableAuth(t, ctx, c.Client())
	root := authClient(t, c.Nodes()[:1], "root", "rootpw")
	tok, err := root.Authenticate(ctx, "root", "rootpw")
	wantAuthOK(t, "authenticate", err)
	if strings.Count(tok.Token, ".") != 2 {
		t.Fatalf("token: got %q, want a JWT (three dot-separated parts)", tok.Token)
	}
	// A client logged in on node 0 uses its token on nodes 1 and 2.
	for _, n := range c.Nodes() {
		cli := authClient(t, []*testcluster.Node{n}, "root", "rootpw")
		_, err := cli.Put(ctx, "k", n.Name)
		wantAuthOK(t, "root put via "+n.Name, err)
	}
	_, err = c.Client().Get(ctx, "k")
	wantAuthErr(t, "get without token", err, rpctypes.ErrGRPCUserEmpty)
}

func TestAuthInvalidTokenIsRefused(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 1, Configure: fastBcrypt})
	c.WaitLeader()
	ctx := testcluster.Context(t, 20*time.Second)
	enableAuth(t, ctx, c.Client())
	cli := c.Client()
	ctx2 := clientv3.WithRequireLeader(ctx)
	_, err := cli.Get(metadataToken(ctx2, "not-a-token"), "k")
	if !errors.Is(err, rpctypes.ErrInvalidAuthToken) && !isErr(err, rpctypes.ErrGRPCInvalidAuthToken) {
		t.Fatalf("get with a forged token: got %v, want %v", err, rpctypes.ErrGRPCInvalidAuthToken)
	}
}

func metadataToken(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "token", tok)
}

// TestAuthAnswersAsEtcd checks two answers where Synod differed from etcd
// (found by the JSON gateway's comparison with etcd): the Auth service's
// header carries the KV revision, not the auth revision; and a Watch
// stream opened without a user is opened, each watch it asks for being
// cancelled with the reason (clientv3 reports it on the watch channel).
func TestAuthAnswersAsEtcd(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 1, Configure: fastBcrypt})
	c.WaitLeader()
	ctx := testcluster.Context(t, 30*time.Second)
	open := c.Client()
	var rev int64
	for i := range 5 {
		r, err := open.Put(ctx, fmt.Sprintf("k%d", i), "v")
		wantAuthOK(t, "put", err)
		rev = r.Header.Revision
	}
	enableAuth(t, ctx, open)
	root := authClient(t, c.Nodes(), "root", "rootpw")
	st, err := root.AuthStatus(ctx)
	wantAuthOK(t, "auth status", err)
	if st.Header.Revision != rev || st.AuthRevision == uint64(rev) {
		t.Fatalf("auth status: got header revision %d (auth revision %d), want the KV revision %d", st.Header.Revision, st.AuthRevision, rev)
	}

	// Raw gRPC: clientv3 reports a refused stream and a cancelled watch
	// alike.
	ws, err := pb.NewWatchClient(open.ActiveConnection()).Watch(ctx)
	wantAuthOK(t, "open a watch stream without a user", err)
	if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("k")}}}); err != nil {
		t.Fatalf("create a watch without a user: %v", err)
	}
	wr, err := ws.Recv()
	if err != nil || !wr.Created || !wr.Canceled || !strings.Contains(wr.CancelReason, "user name is empty") {
		t.Fatalf("watch without a user: got %v (err %v), want it created and cancelled for want of a user", wr, err)
	}
}
