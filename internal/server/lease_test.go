package server_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/synod-io/synod/internal/rangesm"
	"github.com/synod-io/synod/internal/replica"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// waitGone polls until key no longer exists, and returns how long it took.
func waitGone(t *testing.T, cli *clientv3.Client, key string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		g := get(t, cli, key)
		if len(g.Kvs) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%q still exists after %v", key, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLeaseGrantRevokeAndErrors(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	cli := c.Client()
	ctx := testcluster.Context(t, 30*time.Second)

	l, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if l.ID == 0 || l.TTL != 30 {
		t.Fatalf("grant: got id %x ttl %d, want a non-zero id and ttl 30", l.ID, l.TTL)
	}
	if _, err := cli.Put(ctx, "lk/a", "1", clientv3.WithLease(l.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "lk/b", "2", clientv3.WithLease(l.ID)); err != nil {
		t.Fatal(err)
	}
	// Re-putting a key without the lease detaches it.
	detached, err := cli.Put(ctx, "lk/b", "3")
	if err != nil {
		t.Fatal(err)
	}
	ttl, err := cli.TimeToLive(ctx, l.ID, clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	if ttl.GrantedTTL != 30 || ttl.TTL <= 0 || ttl.TTL > 30 || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "lk/a" {
		t.Fatalf("time to live: got %+v", ttl)
	}
	leases, err := cli.Leases(ctx)
	if err != nil || len(leases.Leases) != 1 || leases.Leases[0].ID != l.ID {
		t.Fatalf("leases: got %+v, %v", leases, err)
	}

	// From the revision after the last put: the revocation's event comes
	// whether or not the watch was created before it.
	wch := cli.Watch(ctx, "lk/", clientv3.WithPrefix(), clientv3.WithRev(detached.Header.Revision+1))
	if _, err := cli.Revoke(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	evs := collectEvents(t, wch, 1, 10*time.Second)
	if evs[0].Type != mvccpb.DELETE || string(evs[0].Kv.Key) != "lk/a" {
		t.Fatalf("revoke event: got %s %q, want DELETE lk/a", evs[0].Type, evs[0].Kv.Key)
	}
	if g := get(t, cli, "lk/", clientv3.WithPrefix()); len(g.Kvs) != 1 || string(g.Kvs[0].Key) != "lk/b" {
		t.Fatalf("after revoke: got %v, want only lk/b", keysOf(g.Kvs))
	}
	// No resurrection through the revoked lease.
	_, err = cli.Put(ctx, "lk/a", "again", clientv3.WithLease(l.ID))
	wantErr(t, "put with a revoked lease", err, rpctypes.ErrGRPCLeaseNotFound)
	if ttl, err := cli.TimeToLive(ctx, l.ID); err != nil || ttl.TTL != -1 {
		t.Fatalf("time to live of a revoked lease: got %+v, %v, want TTL -1", ttl, err)
	}
	_, err = cli.Revoke(ctx, l.ID)
	wantErr(t, "revoke twice", err, rpctypes.ErrGRPCLeaseNotFound)
	if _, err := cli.KeepAliveOnce(ctx, l.ID); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatalf("keepalive of a revoked lease: got %v, want %v", err, rpctypes.ErrLeaseNotFound)
	}

	// Limits.
	if _, err := cli.Grant(ctx, server.MaxLeaseTTL+1); !errors.Is(err, rpctypes.ErrLeaseTTLTooLarge) {
		t.Fatalf("grant over the max TTL: got %v, want %v", err, rpctypes.ErrLeaseTTLTooLarge)
	}
	r, err := cli.Grant(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.TTL < 1 {
		t.Fatalf("grant below the minimum TTL: got %d", r.TTL)
	}
}

func TestLeaseExpiresAndKeysVanish(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	cli := c.Client()
	ctx := testcluster.Context(t, 30*time.Second)
	l, err := cli.Grant(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := cli.Put(ctx, "exp", "x", clientv3.WithLease(l.ID))
	if err != nil {
		t.Fatal(err)
	}
	// From the revision after the put: a watch "from now" starts at the
	// revision of the member serving it, which may not have applied the put
	// yet (the client spreads its calls over the members).
	wch := cli.Watch(ctx, "exp", clientv3.WithRev(pr.Header.Revision+1))
	waitGone(t, cli, "exp", 15*time.Second)
	if evs := collectEvents(t, wch, 1, 5*time.Second); evs[0].Type != mvccpb.DELETE {
		t.Fatalf("expiry event: got %s, want DELETE", evs[0].Type)
	}
}

// TestKeepAliveThroughFollower, like the lease tests below that keep a
// lease of 1 or 2 s alive or give a leader 300 ms to answer too early, runs
// next to no other such test or busy one (busyParallel).
func TestKeepAliveThroughFollower(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader()
	cli := c.Client(c.Followers(leader)[0])
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, err := cli.Grant(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "alive", "x", clientv3.WithLease(l.ID)); err != nil {
		t.Fatal(err)
	}
	ka, err := cli.KeepAlive(ctx, l.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Several TTLs pass while keepalives flow through the follower.
	deadline := time.Now().Add(4 * time.Second)
	renewals := 0
	for time.Now().Before(deadline) {
		select {
		case resp := <-ka:
			if resp == nil {
				t.Fatalf("keepalive channel closed")
			}
			renewals++
		case <-time.After(2 * time.Second):
			t.Fatalf("no keepalive response for 2s")
		}
		if g := get(t, cli, "alive"); len(g.Kvs) != 1 {
			t.Fatalf("key of a kept-alive lease vanished after %d renewals", renewals)
		}
	}
	if renewals < 3 {
		t.Fatalf("renewals in 4s of a 1s lease: got %d, want at least 3", renewals)
	}
}

// TestKeepAliveWaitsForTheLeadersApply holds back the leader's apply of a
// grant that a follower has already acknowledged. A keepalive sent then must
// not be told the lease does not exist (clientv3 would give the lease up for
// good): the leader first catches up with what is committed.
func TestKeepAliveWaitsForTheLeadersApply(t *testing.T) {
	busyParallel(t)
	gate := testcluster.NewApplyGate(func(out replica.ApplyOutput) bool {
		return slices.ContainsFunc(out.Leases, func(c rangesm.LeaseChange) bool { return c.Kind == rangesm.LeaseGranted })
	})
	defer gate.Release()
	c := testcluster.New(t, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		// Elections 2 s apart: the held leader sends no heartbeats.
		cfg.ElectionTicks = 200
		cfg.TestingBeforeApply = gate.Hook(i)
	}})
	leader := c.WaitLeader()
	cli := c.Client(c.Followers(leader)[0])
	ctx := testcluster.Context(t, 30*time.Second)
	// A first renewal makes the leader's lessor primary; from then on it
	// learns of grants only by applying them.
	first, err := cli.Grant(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.KeepAliveOnce(ctx, first.ID); err != nil {
		t.Fatal(err)
	}

	gate.Arm(leader)
	l, err := cli.Grant(ctx, 5) // acknowledged by the follower
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-gate.Held():
	case <-ctx.Done():
		t.Fatalf("the leader never applied the grant")
	}
	type result struct {
		resp *clientv3.LeaseKeepAliveResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := cli.KeepAliveOnce(ctx, l.ID)
		done <- result{resp, err}
	}()
	// A leader that answers before it has applied the grant answers now;
	// one that waits answers only once released.
	var r result
	select {
	case r = <-done:
	case <-time.After(300 * time.Millisecond):
		gate.Release()
		r = <-done
	}
	if r.err != nil {
		t.Fatalf("keepalive of a granted lease: got error %v, want its TTL", r.err)
	}
	if r.resp.TTL <= 0 {
		t.Fatalf("keepalive TTL: got %d, want > 0", r.resp.TTL)
	}
}

// TestSessionKeysVanishWithItsProcess uses the concurrency package as an
// application would: while the session's client lives, its key stays; once
// the client is gone without revoking, the key expires.
func TestSessionKeysVanishWithItsProcess(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	observer := c.Client()
	app, err := clientv3.New(clientv3.Config{Endpoints: []string{c.Nodes()[1].ClientAddr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	// A 2s TTL (keepalives every 2/3 s): a 1s one leaves too little margin
	// when CI runs every package's tests at once on two cores.
	sess, err := concurrency.NewSession(app, concurrency.WithTTL(2))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testcluster.Context(t, 30*time.Second)
	if _, err := app.Put(ctx, "service/instance-1", "up", clientv3.WithLease(sess.Lease())); err != nil {
		t.Fatal(err)
	}
	// Two TTLs later the key is still there: the session keeps it alive.
	stop := time.Now().Add(4 * time.Second)
	for time.Now().Before(stop) {
		if g := get(t, observer, "service/instance-1"); len(g.Kvs) != 1 {
			t.Fatalf("session key vanished while the session was alive")
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case <-sess.Done():
		t.Fatalf("session ended while its client was alive")
	default:
	}
	// The process dies: its connection closes, nobody revokes the lease.
	app.Close()
	waitGone(t, observer, "service/instance-1", 15*time.Second)
}

// TestLeaseTTLSurvivesFailover checks the two lease guarantees across a
// leader crash: a kept-alive lease does not expire, and an abandoned lease
// keeps counting down from its checkpointed remaining TTL instead of being
// reset to its full TTL.
func TestLeaseTTLSurvivesFailover(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.LeaseCheckpointInterval = 100 * time.Millisecond
	}})
	leader := c.WaitLeader()
	cli := c.Client(c.Followers(leader)...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	kept, err := cli.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "kept", "x", clientv3.WithLease(kept.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.KeepAlive(ctx, kept.ID); err != nil {
		t.Fatal(err)
	}
	const ttl = 6
	abandoned, err := cli.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "abandoned", "x", clientv3.WithLease(abandoned.ID)); err != nil {
		t.Fatal(err)
	}
	// Let the abandoned lease run down well below half its TTL, so that it
	// has been checkpointed (from half its TTL on, every 100ms here).
	var before int64
	for {
		r, err := cli.TimeToLive(ctx, abandoned.ID)
		if err != nil {
			t.Fatal(err)
		}
		if r.TTL <= 1 {
			before = r.TTL
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	leader.Crash()
	c.WaitLeader()
	var after *clientv3.LeaseTimeToLiveResponse
	for {
		tctx, tcancel := context.WithTimeout(ctx, 2*time.Second)
		after, err = cli.TimeToLive(tctx, abandoned.ID)
		tcancel()
		if err == nil {
			break
		}
	}
	// Remaining TTLs are reported in whole seconds; one more second covers
	// rounding and the checkpoint interval. A reset lease would report ~6.
	if after.TTL > before+1 {
		t.Fatalf("remaining TTL after failover: got %ds, had %ds before: the new leader reset the lease", after.TTL, before)
	}
	waitGone(t, cli, "abandoned", 15*time.Second)
	if g := get(t, cli, "kept"); len(g.Kvs) != 1 {
		t.Fatalf("a kept-alive lease expired across the failover")
	}
}

// TestRenewalDuringCheckpointSurvivesFailover renews a lease while a
// checkpoint of it is proposed but not yet applied on the leader, then
// fails the leader over. The checkpoint must not land after the renewal
// unreset: a new leader would start the renewed lease from the old, shorter
// remaining TTL.
func TestRenewalDuringCheckpointSurvivesFailover(t *testing.T) {
	busyParallel(t)
	var leaseID atomic.Int64
	gate := testcluster.NewApplyGate(func(out replica.ApplyOutput) bool {
		return slices.ContainsFunc(out.Leases, func(c rangesm.LeaseChange) bool {
			return c.Kind == rangesm.LeaseCheckpointed && c.ID == leaseID.Load() && c.RemainingMs > 0
		})
	})
	defer gate.Release()
	c := testcluster.New(t, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		// Elections 2 s apart: the held leader sends no heartbeats.
		cfg.ElectionTicks = 200
		cfg.LeaseCheckpointInterval = 100 * time.Millisecond
		cfg.TestingBeforeApply = gate.Hook(i)
	}})
	leader := c.WaitLeader()
	cli := c.Client(c.Followers(leader)...)
	ctx := testcluster.Context(t, 60*time.Second)

	const ttl = 6
	l, err := cli.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	leaseID.Store(int64(l.ID))
	// The lease goes unrenewed past half its TTL: the leader checkpoints
	// it, and the gate holds that checkpoint's apply on the leader.
	gate.Arm(leader)
	select {
	case <-gate.Held():
	case <-ctx.Done():
		t.Fatalf("the leader never checkpointed the lease")
	}
	done := make(chan error, 1)
	go func() {
		_, err := cli.KeepAliveOnce(ctx, l.ID)
		done <- err
	}()
	// The renewal reaches the leader while the checkpoint is held; it is
	// answered only once the gate lets the leader go on.
	var err2 error
	select {
	case err2 = <-done:
	case <-time.After(300 * time.Millisecond):
		gate.Release()
		err2 = <-done
	}
	if err := err2; err != nil {
		t.Fatalf("keepalive: got %v, want its TTL", err)
	}

	leader.Crash()
	c.WaitLeader()
	var after *clientv3.LeaseTimeToLiveResponse
	for {
		tctx, tcancel := context.WithTimeout(ctx, 2*time.Second)
		after, err = cli.TimeToLive(tctx, l.ID)
		tcancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
	}
	// Renewed to 6 s, the new leader starts it from its full TTL; from the
	// checkpoint taken before the renewal, it would have under 3 s.
	if after.TTL < ttl-2 {
		t.Fatalf("remaining TTL after failover: got %ds, want at least %ds (the lease was renewed to %ds before the failover)", after.TTL, ttl-2, ttl)
	}
}
