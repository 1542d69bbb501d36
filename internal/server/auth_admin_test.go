package server_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/synod-io/synod/internal/testcluster"
)

// TestConcurrentAdminCallsWithoutLogin reproduces issue 20 item 8: right
// after auth is disabled, concurrent admin calls from a client without a
// login failed with "revision of auth store is old" (a Node.js client's test
// suite hit it about one run in nine; etcd never fails there). Every call
// must succeed: with auth disabled a request carries no login and has no
// auth revision to clash on.
func TestConcurrentAdminCallsWithoutLogin(t *testing.T) {
	busyParallel(t)
	// One node: no election can cut a call short under load, and the
	// clash needs no followers.
	c := testcluster.New(t, testcluster.Options{Nodes: 1, Configure: fastBcrypt})
	c.WaitLeader()
	ctx := testcluster.Context(t, 60*time.Second)
	enableAuth(t, ctx, c.Client())
	root := authClient(t, c.Nodes()[:1], "root", "rootpw")
	_, err := root.AuthDisable(ctx)
	wantAuthOK(t, "disable auth", err)

	// Raw gRPC, no token, as the Node.js client.
	conn, err := grpc.NewClient(c.Node(0).ClientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	cli := pb.NewAuthClient(conn)

	// The Node.js case: two concurrent deletes right after the disable.
	for _, u := range []string{"u-a", "u-b"} {
		if _, err := cli.UserAdd(ctx, &pb.AuthUserAddRequest{Name: u, Password: "pw"}); err != nil {
			t.Fatalf("add %s: got error %v, want success", u, err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for _, u := range []string{"u-a", "u-b"} {
		wg.Go(func() {
			if _, err := cli.UserDelete(ctx, &pb.AuthUserDeleteRequest{Name: u}); err != nil {
				errs <- fmt.Errorf("delete %s: %w", u, err)
			}
		})
	}
	wg.Wait()

	// The stress case: 8 goroutines each adding then deleting a user.
	const workers, rounds = 8, 25
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				name := fmt.Sprintf("user-%d-%d", w, r)
				if _, err := cli.UserAdd(ctx, &pb.AuthUserAddRequest{Name: name, Password: "pw"}); err != nil {
					errs <- fmt.Errorf("add %s: %w", name, err)
				}
				if _, err := cli.UserDelete(ctx, &pb.AuthUserDeleteRequest{Name: name}); err != nil {
					errs <- fmt.Errorf("delete %s: %w", name, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	var failed []error
	for err := range errs {
		failed = append(failed, err)
	}
	if len(failed) > 0 {
		t.Fatalf("concurrent admin calls without a login: got %d failures (first: %v), want none", len(failed), failed[0])
	}
}

// TestConcurrentAdminCallsAsRoot runs the same concurrent admin calls with
// auth enabled, as root over raw gRPC (clientv3 would hide a refusal by
// re-authenticating and retrying). Every call moves the auth revision, so
// calls checked at the same revision clash at apply; the node checks a
// refused call again and proposes it anew until it goes through, so none
// fails.
func TestConcurrentAdminCallsAsRoot(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 1, Configure: fastBcrypt})
	c.WaitLeader()
	ctx := testcluster.Context(t, 60*time.Second)
	enableAuth(t, ctx, c.Client())

	conn, err := grpc.NewClient(c.Node(0).ClientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	cli := pb.NewAuthClient(conn)
	login, err := cli.Authenticate(ctx, &pb.AuthenticateRequest{Name: "root", Password: "rootpw"})
	if err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	rctx := metadataToken(ctx, login.Token)

	const workers, rounds = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers*rounds)
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				name := fmt.Sprintf("user-%d-%d", w, r)
				if _, err := cli.UserAdd(rctx, &pb.AuthUserAddRequest{Name: name, Password: "pw"}); err != nil {
					errs <- fmt.Errorf("add %s: %w", name, err)
				}
				if _, err := cli.UserDelete(rctx, &pb.AuthUserDeleteRequest{Name: name}); err != nil {
					errs <- fmt.Errorf("delete %s: %w", name, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	var failed []error
	for err := range errs {
		failed = append(failed, err)
	}
	if len(failed) > 0 {
		t.Fatalf("concurrent admin calls as root: got %d failures (first: %v), want none", len(failed), failed[0])
	}
}
