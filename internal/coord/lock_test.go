package coord_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/api/v3lockpb"
	"github.com/synod-io/synod/internal/replica"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// grant grants a lease through raw gRPC.
func grant(t *testing.T, lc pb.LeaseClient, ttl int64) int64 {
	t.Helper()
	resp, err := lc.LeaseGrant(ctxFor(t, 10*time.Second), &pb.LeaseGrantRequest{TTL: ttl})
	if err != nil {
		t.Fatalf("grant: %v", err)
	}
	return resp.ID
}

// guardedPut writes key only while lockKey exists with create revision
// token: the fencing check.
func guardedPut(t *testing.T, cli *clientv3.Client, lockKey string, token int64, key, val string) bool {
	t.Helper()
	resp, err := cli.Txn(ctxFor(t, 10*time.Second)).
		If(clientv3.Compare(clientv3.CreateRevision(lockKey), "=", token)).
		Then(clientv3.OpPut(key, val)).Commit()
	if err != nil {
		t.Fatalf("guarded put: %v", err)
	}
	return resp.Succeeded
}

type lockResult struct {
	resp *v3lockpb.LockResponse
	err  error
}

// lockAsync calls Lock in a goroutine that ends when the call returns.
func lockAsync(ctx context.Context, lk v3lockpb.LockClient, name string, lease int64) <-chan lockResult {
	ch := make(chan lockResult, 1)
	go func() {
		resp, err := lk.Lock(ctx, &v3lockpb.LockRequest{Name: []byte(name), Lease: lease})
		ch <- lockResult{resp, err}
	}()
	return ch
}

func TestLockServiceThroughRawGRPC(t *testing.T) {
	c := newCluster(t)
	cli := c.Client()
	ccA, ccB := conn(t, c.Node(0)), conn(t, c.Node(1))
	lkA, lkB := v3lockpb.NewLockClient(ccA), v3lockpb.NewLockClient(ccB)
	leaseA, leaseB := grant(t, pb.NewLeaseClient(ccA), 30), grant(t, pb.NewLeaseClient(ccB), 30)
	ctx := ctxFor(t, 60*time.Second)

	a, err := lkA.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("svc"), Lease: leaseA})
	if err != nil {
		t.Fatalf("lock: %v", err)
	}
	if want := fmt.Sprintf("svc/%x", leaseA); string(a.Key) != want {
		t.Fatalf("lock key: got %q, want %q (etcd's layout)", a.Key, want)
	}
	g, err := cli.Get(ctx, string(a.Key))
	if err != nil || len(g.Kvs) != 1 {
		t.Fatalf("lock key %s: %v, %v", a.Key, g, err)
	}
	if tok := a.Header.Revision; tok != g.Kvs[0].CreateRevision || g.Kvs[0].Lease != leaseA {
		t.Fatalf("fencing token (header revision) %d, key created at %d on lease %x: want the create revision on lease %x",
			tok, g.Kvs[0].CreateRevision, g.Kvs[0].Lease, leaseA)
	}
	// Locking again with the same lease is the same acquisition.
	again, err := lkA.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("svc"), Lease: leaseA})
	if err != nil || string(again.Key) != string(a.Key) || again.Header.Revision != a.Header.Revision {
		t.Fatalf("lock again with the same lease: got %v (%v), want key %s token %d", again, err, a.Key, a.Header.Revision)
	}

	waiting := lockAsync(ctx, lkB, "svc", leaseB)
	// B is queued once its key exists; it must not own the lock.
	waitUntil(t, 10*time.Second, "second locker queued", func() (bool, string) {
		n := keysUnder(t, cli, "svc/")
		return n == 2, fmt.Sprintf("%d keys", n)
	})
	select {
	case r := <-waiting:
		t.Fatalf("second Lock returned (%v, %v) while the first holds the lock", r.resp, r.err)
	default:
	}
	if !guardedPut(t, cli, string(a.Key), a.Header.Revision, "resource", "by-a") {
		t.Fatalf("guarded write of the holder failed")
	}
	if _, err := lkA.Unlock(ctx, &v3lockpb.UnlockRequest{Key: a.Key}); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	b := <-waiting
	if b.err != nil {
		t.Fatalf("lock after release: %v", b.err)
	}
	if b.resp.Header.Revision <= a.Header.Revision {
		t.Fatalf("fencing tokens: second acquisition %d, first %d: want strictly increasing", b.resp.Header.Revision, a.Header.Revision)
	}
	if guardedPut(t, cli, string(a.Key), a.Header.Revision, "resource", "stale") {
		t.Fatalf("guarded write with the released token %d succeeded", a.Header.Revision)
	}
	if !guardedPut(t, cli, string(b.resp.Key), b.resp.Header.Revision, "resource", "by-b") {
		t.Fatalf("guarded write of the new holder failed")
	}

	// A lock without a lease gets a server-granted one (etcd's behaviour).
	nl, err := lkA.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("no-lease")})
	if err != nil {
		t.Fatalf("lock without lease: %v", err)
	}
	if g, err := cli.Get(ctx, string(nl.Key)); err != nil || len(g.Kvs) != 1 || g.Kvs[0].Lease == 0 {
		t.Fatalf("key of a lock without lease: %v, %v; want one key on a granted lease", g, err)
	}
	// A dead lease is refused with etcd's error.
	_, err = lkA.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("svc2"), Lease: 12345})
	if status.Convert(err).Message() != "etcdserver: requested lease not found" {
		t.Fatalf("lock with an unknown lease: got %v, want lease not found", err)
	}
}

// TestLockCancelledWhileEnqueuing cancels a waiter's Lock while its queue
// key is being written. A server that stopped waiting for that write would
// not know whether the key exists, and a key left behind blocks the queue
// until its lease ends. The member serving the Lock has its apply of the key
// held back while the caller cancels. The lock is held meanwhile, so the
// waiter cannot acquire it before the server sees the cancellation, however
// late that is.
func TestLockCancelledWhileEnqueuing(t *testing.T) {
	gate := testcluster.NewApplyGate(func(out replica.ApplyOutput) bool {
		return len(out.Events) > 0 && strings.HasPrefix(string(out.Events[0].KV.Key), "held/")
	})
	defer gate.Release()
	c := testcluster.New(t, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.TestingBeforeApply = gate.Hook(i)
	}})
	leader := c.WaitLeader()
	node := c.Followers(leader)[0] // holding a follower's apply stalls no one else
	cli := c.Client()
	cc := conn(t, node)
	lk, lc := v3lockpb.NewLockClient(cc), pb.NewLeaseClient(cc)
	ctx := ctxFor(t, 60*time.Second)
	if _, err := lk.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("held"), Lease: grant(t, lc, 30)}); err != nil {
		t.Fatal(err)
	}
	lease := grant(t, lc, 30)

	gate.Arm(node)
	wctx, cancel := context.WithCancel(ctx)
	w := lockAsync(wctx, lk, "held", lease)
	select {
	case <-gate.Held():
	case <-ctx.Done():
		t.Fatalf("the member never applied the queue key")
	}
	cancel()
	if r := <-w; status.Code(r.err) != codes.Canceled {
		t.Fatalf("cancelled lock: got %v, want Canceled", r.err)
	}
	// A server that gives up on the write does so as soon as it sees the
	// cancellation; give it that chance before the write completes.
	time.Sleep(300 * time.Millisecond)
	gate.Release()
	waitUntil(t, 10*time.Second, "key of the cancelled Lock removed", func() (bool, string) {
		n := keysUnder(t, cli, "held/")
		return n == 1, fmt.Sprintf("%d keys", n)
	})
}

func TestLockWaiterGivesUp(t *testing.T) {
	c := newCluster(t)
	cli := c.Client()
	cc := conn(t, c.Node(2))
	lk, lc := v3lockpb.NewLockClient(cc), pb.NewLeaseClient(cc)
	ctx := ctxFor(t, 60*time.Second)
	holder, err := lk.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("busy"), Lease: grant(t, lc, 30)})
	if err != nil {
		t.Fatal(err)
	}

	// A cancelled wait leaves no key behind.
	wctx, cancel := context.WithCancel(ctx)
	w := lockAsync(wctx, lk, "busy", grant(t, lc, 30))
	waitUntil(t, 10*time.Second, "waiter queued", func() (bool, string) {
		n := keysUnder(t, cli, "busy/")
		return n == 2, fmt.Sprintf("%d keys", n)
	})
	cancel()
	if r := <-w; status.Code(r.err) != codes.Canceled {
		t.Fatalf("cancelled lock: got %v, want Canceled", r.err)
	}
	waitUntil(t, 10*time.Second, "cancelled waiter's key removed", func() (bool, string) {
		n := keysUnder(t, cli, "busy/")
		return n == 1, fmt.Sprintf("%d keys", n)
	})

	// A waiter whose lease ends stops waiting at once, although the holder
	// keeps the lock.
	lease := grant(t, lc, 30)
	w = lockAsync(ctx, lk, "busy", lease)
	waitUntil(t, 10*time.Second, "waiter queued", func() (bool, string) {
		n := keysUnder(t, cli, "busy/")
		return n == 2, fmt.Sprintf("%d keys", n)
	})
	if _, err := lc.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: lease}); err != nil {
		t.Fatal(err)
	}
	r := <-w
	if status.Code(r.err) != codes.FailedPrecondition || !strings.Contains(status.Convert(r.err).Message(), "session is expired") {
		t.Fatalf("lock whose lease was revoked while waiting: got %v, want FailedPrecondition \"mutex: session is expired\"", r.err)
	}
	if g, err := cli.Get(ctx, string(holder.Key)); err != nil || len(g.Kvs) != 1 {
		t.Fatalf("holder's key: %v %v, want it still there", g, err)
	}
}

// TestLockInteroperates checks that the service and etcd's client-side
// mutex share one lock.
func TestLockInteroperates(t *testing.T) {
	c := newCluster(t)
	cli := c.Client(c.Node(1))
	lk := v3lockpb.NewLockClient(conn(t, c.Node(0)))
	ctx := ctxFor(t, 60*time.Second)
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := concurrency.NewMutex(s, "shared")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	w := lockAsync(ctx, lk, "shared", grant(t, pb.NewLeaseClient(conn(t, c.Node(0))), 30))
	waitUntil(t, 10*time.Second, "service locker queued", func() (bool, string) {
		n := keysUnder(t, cli, "shared/")
		return n == 2, fmt.Sprintf("%d keys", n)
	})
	select {
	case r := <-w:
		t.Fatalf("service Lock returned (%v) while the concurrency mutex holds the lock", r.err)
	default:
	}
	if err := m.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-w
	if r.err != nil {
		t.Fatal(r.err)
	}
	if err := m.TryLock(ctx); !errors.Is(err, concurrency.ErrLocked) {
		t.Fatalf("concurrency TryLock while the service holds the lock: got %v, want ErrLocked", err)
	}
}
