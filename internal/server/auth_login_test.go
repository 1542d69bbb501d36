package server_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// clientFrom returns a client without a login that connects to n from the
// loopback address ip, so that the node sees distinct client addresses.
func clientFrom(t *testing.T, n *testcluster.Node, ip string) *clientv3.Client {
	t.Helper()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{n.ClientAddr},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", addr)
		})},
	})
	if err != nil {
		t.Fatalf("client from %s: %v", ip, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestFailedLoginsAreThrottled checks issue 20 item 9 (logins) with etcd
// clients: after three failed logins in a row a user name, and after ten
// a client address (which users may share), must wait before the next
// attempt, which is refused
// meanwhile with a clear error, even with the right password. An unknown
// user is refused exactly as a wrong password is. The wait is a minute here
// so that nothing depends on timing.
func TestFailedLoginsAreThrottled(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 1, Configure: func(i int, cfg *server.Config) {
		fastBcrypt(i, cfg)
		cfg.AuthLoginBackoff = time.Minute
		cfg.AuthLoginMaxBackoff = time.Minute
	}})
	c.WaitLeader()
	ctx := testcluster.Context(t, 30*time.Second)
	enableAuth(t, ctx, c.Client())
	root := authClient(t, c.Nodes(), "root", "rootpw")
	_, err := root.UserAdd(ctx, "bob", "bobpw")
	wantAuthOK(t, "add bob", err)

	n := c.Node(0)
	a, b, other := clientFrom(t, n, "127.0.0.2"), clientFrom(t, n, "127.0.0.3"), clientFrom(t, n, "127.0.0.4")
	failed, throttled := rpctypes.ErrGRPCAuthFailed, auth.ErrGRPCLoginThrottled

	_, err = a.Authenticate(ctx, "nobody", "guess")
	wantAuthErr(t, "unknown user from A", err, failed)
	_, err = a.Authenticate(ctx, "bob", "guess1")
	wantAuthErr(t, "bob, wrong password, from A", err, failed)
	_, err = a.Authenticate(ctx, "bob", "guess2")
	wantAuthErr(t, "bob, wrong password again, from A", err, failed)
	// Others' typos from A do not lock root out (an address may be shared).
	_, err = a.Authenticate(ctx, "root", "rootpw")
	wantAuthOK(t, "root from A after three failures of others from A", err)
	// A guesser spraying user names from A soon waits, any user with it.
	for i := range 7 {
		_, err = a.Authenticate(ctx, fmt.Sprintf("user%d", i), "guess")
		wantAuthErr(t, "spraying names from A", err, failed)
	}
	_, err = a.Authenticate(ctx, "root", "rootpw")
	wantAuthErr(t, "root from A after ten failures from A", err, throttled)

	_, err = b.Authenticate(ctx, "bob", "guess3")
	wantAuthErr(t, "bob, wrong password, from B", err, failed)
	// bob has failed three times: bob waits, from any address, even with
	// the right password.
	_, err = other.Authenticate(ctx, "bob", "bobpw")
	wantAuthErr(t, "bob, right password, from a third address", err, throttled)
	_, err = other.Authenticate(ctx, "root", "rootpw")
	wantAuthOK(t, "root from a third address", err)

	// Logged-in clients are not affected.
	_, err = root.Put(ctx, "k", "v")
	wantAuthOK(t, "root put with its token", err)
}
