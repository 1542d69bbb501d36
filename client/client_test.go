package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/client"
	"github.com/synod-io/synod/internal/testcluster"
)

func connect(t *testing.T, eps ...string) *client.Client {
	t.Helper()
	if len(eps) == 0 {
		eps = endpoints
	}
	cli, err := client.New(t.Context(), client.Config{Endpoints: eps})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func session(t *testing.T, cli *client.Client, ttl int) *client.Session {
	t.Helper()
	s, err := cli.NewSession(t.Context(), client.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	return testcluster.Context(t, d)
}

// closedWithin reports whether ch is closed within d.
func closedWithin(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestMutexFencing(t *testing.T) {
	cli := connect(t)
	ctx := ctxFor(t, 30*time.Second)
	a, b := client.NewMutex(session(t, cli, 10), "t/fence"), client.NewMutex(session(t, cli, 10), "t/fence")
	if !isClosed(a.Lost()) || a.Token() != 0 {
		t.Fatalf("before Lock: Lost open or token %d, want closed and 0", a.Token())
	}
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.TryLock(ctx); !errors.Is(err, client.ErrLocked) {
		t.Fatalf("TryLock of a held lock: got %v, want ErrLocked", err)
	}
	got := make(chan error, 1)
	go func() { got <- b.Lock(ctx) }() // ends when b gets the lock or ctx ends

	// a's holder "pauses" and its lease ends (revoked here, to be quick):
	// b gets the lock, a's Lost fires, and a's guarded writes fail.
	g, err := cli.Get(ctx, a.Key())
	if err != nil || len(g.Kvs) != 1 {
		t.Fatalf("a's key: %v %v", g, err)
	}
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(g.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("lock after the holder's lease ended: %v", err)
	}
	if !closedWithin(a.Lost(), 10*time.Second) {
		t.Fatalf("Lost of a lock whose lease was revoked: still open after 10s")
	}
	if b.Token() <= a.Token() {
		t.Fatalf("tokens: %d then %d, want strictly increasing", a.Token(), b.Token())
	}
	if _, err := a.GuardedPut(ctx, "t/fenced", "stale"); !errors.Is(err, client.ErrNotHeld) {
		t.Fatalf("guarded put by the former holder: got %v, want ErrNotHeld", err)
	}
	if _, err := b.GuardedPut(ctx, "t/fenced", "b"); err != nil {
		t.Fatalf("guarded put by the holder: %v", err)
	}
	if err := a.Unlock(ctx); !errors.Is(err, client.ErrNotHeld) {
		t.Fatalf("unlock of a lost lock: got %v, want ErrNotHeld", err)
	}
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if !isClosed(b.Lost()) {
		t.Fatalf("Lost open after Unlock")
	}
}

func TestMutexCancelledLockLeavesNoKey(t *testing.T) {
	cli := connect(t)
	ctx := ctxFor(t, 30*time.Second)
	holder := client.NewMutex(session(t, cli, 10), "t/cancel")
	if err := holder.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := client.NewMutex(session(t, cli, 10), "t/cancel").Lock(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lock with an expiring context: got %v, want DeadlineExceeded", err)
	}
	g, err := cli.Get(ctx, "t/cancel/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || g.Count != 1 {
		t.Fatalf("keys after the abandoned wait: %v (%v), want the holder's only", g.Count, err)
	}
}

func TestMutexMutualExclusion(t *testing.T) {
	cli := connect(t)
	ctx := ctxFor(t, 60*time.Second)
	var inside atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 4 {
		m := client.NewMutex(session(t, cli, 10), "t/excl")
		wg.Go(func() {
			for range 5 {
				if err := m.Lock(ctx); err != nil {
					errs <- err
					return
				}
				if n := inside.Add(1); n != 1 {
					errs <- fmt.Errorf("%d holders at once", n)
				}
				if _, err := m.GuardedPut(ctx, "t/excl-owner", fmt.Sprint(m.Token())); err != nil {
					errs <- err
				}
				inside.Add(-1)
				if err := m.Unlock(ctx); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestSemaphoreLimit(t *testing.T) {
	cli := connect(t)
	ctx := ctxFor(t, 60*time.Second)
	const limit, sessions = 2, 5
	var sems []*client.Semaphore
	for range sessions {
		sems = append(sems, client.NewSemaphore(session(t, cli, 10), "t/sem", limit))
	}
	var inside, most atomic.Int32
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	release := make(chan struct{})
	for i, sm := range sems {
		wg.Go(func() {
			if err := sm.Acquire(ctx); err != nil {
				errs <- err
				return
			}
			n := inside.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			<-release
			inside.Add(-1)
			if err := sm.Release(ctx); err != nil {
				errs <- err
			}
		})
	}
	countIn := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(order)
	}
	deadline := time.Now().Add(20 * time.Second)
	for countIn() < limit && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polls the state waited for
	}
	// Let the holders go one at a time; all must get in, never more than
	// limit at once.
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := countIn(); got != sessions {
		t.Fatalf("%d of %d sessions got a slot", got, sessions)
	}
	if m := most.Load(); m > limit {
		t.Fatalf("%d holders at once, limit %d", m, limit)
	}
}

func TestSemaphoreWakesNextWaiter(t *testing.T) {
	cli := connect(t)
	ctx := ctxFor(t, 60*time.Second)
	a, b := client.NewSemaphore(session(t, cli, 10), "t/sem2", 2), client.NewSemaphore(session(t, cli, 10), "t/sem2", 2)
	c, d := client.NewSemaphore(session(t, cli, 10), "t/sem2", 2), client.NewSemaphore(session(t, cli, 10), "t/sem2", 2)
	for _, sm := range []*client.Semaphore{a, b} {
		if err := sm.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	gotC, gotD := make(chan error, 1), make(chan error, 1)
	go func() { gotC <- c.Acquire(ctx) }()
	waitKeys(t, cli, "t/sem2/", 3)
	go func() { gotD <- d.Acquire(ctx) }()
	waitKeys(t, cli, "t/sem2/", 4)
	// b (a holder that is not the first) releases: the first waiter, c,
	// gets in; then a releases and the next waiter, d, gets in.
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-gotC; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-gotD:
		t.Fatalf("fourth session got a slot (%v) with 2 held", err)
	default:
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-gotD; err != nil {
		t.Fatal(err)
	}
}

func waitKeys(t *testing.T, cli *client.Client, pfx string, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g, err := cli.Get(t.Context(), pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && g.Count == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("keys under %s: want %d, got %v (%v)", pfx, n, g, err)
		}
		time.Sleep(10 * time.Millisecond) // polls the state waited for
	}
}

func TestRWMutex(t *testing.T) {
	cli := connect(t)
	ctx := ctxFor(t, 60*time.Second)
	r1, r2 := client.NewRWMutex(session(t, cli, 10), "t/rw"), client.NewRWMutex(session(t, cli, 10), "t/rw")
	w, r3 := client.NewRWMutex(session(t, cli, 10), "t/rw"), client.NewRWMutex(session(t, cli, 10), "t/rw")
	if err := r1.RLock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r2.RLock(ctx); err != nil {
		t.Fatalf("second reader: %v", err)
	}
	gotW, gotR3 := make(chan error, 1), make(chan error, 1)
	go func() { gotW <- w.Lock(ctx) }()
	waitKeys(t, cli, "t/rw/", 3)
	// A reader queued after a waiting writer waits for it.
	go func() { gotR3 <- r3.RLock(ctx) }()
	waitKeys(t, cli, "t/rw/", 4)
	if err := r1.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-gotW:
		t.Fatalf("writer got the lock (%v) with a reader inside", err)
	default:
	}
	if err := r2.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-gotW; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-gotR3:
		t.Fatalf("reader got the lock (%v) while the writer holds it", err)
	default:
	}
	if err := w.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-gotR3; err != nil {
		t.Fatal(err)
	}
}

func TestElectionSharedWithEtcdConcurrency(t *testing.T) {
	cli := connect(t)
	ctx := ctxFor(t, 60*time.Second)
	ours := client.NewElection(session(t, cli, 10), "t/elect")
	if err := ours.Campaign(ctx, "ours"); err != nil {
		t.Fatal(err)
	}
	es, err := concurrency.NewSession(cli.Client, concurrency.WithTTL(10))
	if err != nil {
		t.Fatal(err)
	}
	defer es.Close()
	theirs := concurrency.NewElection(es, "t/elect")
	won := make(chan error, 1)
	go func() { won <- theirs.Campaign(ctx, "theirs") }()
	waitKeys(t, cli, "t/elect/", 2)
	if l, err := ours.Leader(ctx); err != nil || string(l.Value) != "ours" || l.Token != ours.Token() {
		t.Fatalf("leader: %+v (%v), want ours with token %d", l, err, ours.Token())
	}
	if err := ours.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-won; err != nil {
		t.Fatal(err)
	}
	if err := ours.Proclaim(ctx, "late"); !errors.Is(err, client.ErrNotHeld) {
		t.Fatalf("proclaim after resigning: got %v, want ErrNotHeld", err)
	}
	if theirs.Rev() <= ours.Token() {
		t.Fatalf("etcd's election won with revision %d after ours had token %d", theirs.Rev(), ours.Token())
	}
}

func TestGroupExpiryAndConflicts(t *testing.T) {
	cli := connect(t)
	ctx := ctxFor(t, 60*time.Second)
	g := cli.Group("t-expiry")
	changes := g.Watch(ctx, 0)
	s1 := session(t, cli, 1)
	if _, err := g.Join(ctx, s1, "m1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Join(ctx, session(t, cli, 10), "m1", nil); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("join of a taken member ID: got %v, want AlreadyExists", err)
	}
	// The member's process stops renewing: it must expire.
	s1.Orphan()
	var got []string
	for len(got) < 2 {
		select {
		case r, ok := <-changes:
			if !ok || r.Err != nil {
				t.Fatalf("watch ended: %v", r.Err)
			}
			for _, e := range r.Events {
				got = append(got, fmt.Sprintf("%s %s", e.Type, e.Member.ID))
			}
		case <-ctx.Done():
			t.Fatalf("watch saw %v, want a join and an expiry", got)
		}
	}
	if fmt.Sprint(got) != "[JOIN m1 EXPIRE m1]" {
		t.Fatalf("events: got %v, want [JOIN m1 EXPIRE m1]", got)
	}
}

// TestClientSurvivesNodeCrashes crashes the nodes one after the other
// under a client connected to all of them: its session, lock and group
// watch must go on, the watch without missing an event.
func TestClientSurvivesNodeCrashes(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	var eps []string
	for _, n := range c.Nodes() {
		eps = append(eps, n.ClientAddr)
	}
	cli := connect(t, eps...)
	ctx := ctxFor(t, 90*time.Second)
	s := session(t, cli, 5)
	m := client.NewMutex(s, "t/failover")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	g := cli.Group("failover")
	changes := g.Watch(ctx, 0)
	joins := 0
	for i, n := range c.Nodes() {
		n.Crash()
		c.WaitLeader()
		for j := range 3 {
			ms, err := g.Join(ctx, s, fmt.Sprintf("m%d-%d", i, j), nil)
			if err != nil {
				t.Fatalf("join with %s down: %v", n.Name, err)
			}
			joins++
			if err := ms.Leave(ctx); err != nil {
				t.Fatalf("leave with %s down: %v", n.Name, err)
			}
		}
		if _, err := m.GuardedPut(ctx, "t/failover-data", n.Name); err != nil {
			t.Fatalf("guarded put with %s down: %v", n.Name, err)
		}
		n.Restart()
	}
	var got []client.GroupEvent
	for len(got) < 2*joins {
		select {
		case r := <-changes:
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			got = append(got, r.Events...)
		case <-ctx.Done():
			t.Fatalf("watch saw %d of %d events", len(got), 2*joins)
		}
	}
	for i := range joins {
		want := fmt.Sprintf("m%d-%d", i/3, i%3)
		if j, l := got[2*i], got[2*i+1]; j.Type != client.Joined || l.Type != client.Left || j.Member.ID != want || l.Member.ID != want {
			t.Fatalf("events %d, %d: %v %v, want JOIN and LEAVE of %s", 2*i, 2*i+1, j, l, want)
		}
	}
	if isClosed(s.Done()) || isClosed(m.Lost()) {
		t.Fatalf("session or lock lost across node crashes (session err %v)", s.Err())
	}
}

func TestSessionDoneWhenLeaseLost(t *testing.T) {
	cli := connect(t)
	ctx := ctxFor(t, 30*time.Second)

	// Revoked by someone else: the next renewal finds the lease gone.
	s := session(t, cli, 2)
	if isClosed(s.Done()) || s.Err() != nil {
		t.Fatalf("new session: got done %v, err %v; want alive", isClosed(s.Done()), s.Err())
	}
	if _, err := cli.Revoke(ctx, s.Lease()); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(s.Done(), 10*time.Second) {
		t.Fatalf("session whose lease was revoked: Done not closed after 10s")
	}
	if err := s.Err(); !errors.Is(err, client.ErrSessionLost) {
		t.Errorf("Err: got %v, want ErrSessionLost", err)
	}

	// Closed by its owner: Done, with ErrSessionClosed.
	s2 := session(t, cli, 2)
	if err := s2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if !isClosed(s2.Done()) || !errors.Is(s2.Err(), client.ErrSessionClosed) {
		t.Errorf("closed session: got done %v, err %v; want done, ErrSessionClosed", isClosed(s2.Done()), s2.Err())
	}
	// A lock cannot be taken on a lost session.
	if err := client.NewMutex(s, "t/lost-session").Lock(ctx); !errors.Is(err, client.ErrSessionLost) {
		t.Errorf("Lock on a lost session: got %v, want ErrSessionLost", err)
	}
}
