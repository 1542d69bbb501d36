package chaos

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/client"
	"github.com/synod-io/synod/internal/lincheck"
	"github.com/synod-io/synod/internal/testcluster"
)

// The lock workload: contenders take one lock in turns with Synod's Go
// client and, while holding it, write a fenced key with guarded writes (a
// txn that puts the holder's token only if CREATE(lock key) = token). Two
// contenders, the stallers, act like processes paused past their lease:
// each time one holds the lock it stops renewing its session, stalls past
// the TTL, and then attempts its guarded write. Meanwhile the leader is
// crashed and restarted again and again. lincheck.CheckLock then checks
// that no two holders succeeded at guarded writes for overlapping periods,
// and that the tokens in the fenced key never went back.

const (
	lockName   = "chaos/lock"
	fencedKey  = "chaos/fenced"
	lockTTL    = 2 // seconds
	contenders = 6
	// stallers is how many of the contenders pause past their lease each
	// time they get the lock.
	stallers = 2
)

// lockStats counts what the workload did, to show that the run exercised
// what it claims to.
type lockStats struct {
	acquired, written, unknown, staleRefused, staleAccepted, leaderKills atomic.Int64
}

// lockRun is one run of the lock workload.
type lockRun struct {
	// duration is how long the workload runs at least.
	duration time.Duration
	// enough, when set, extends the run past duration (up to maxDuration)
	// until it returns true: a slow machine then still exercises what the
	// test asserts, and a cluster that makes no progress still fails.
	enough      func(*lockStats) bool
	maxDuration time.Duration
	killLeaders bool
	// unfenced makes the stallers write without the guard, as a client of
	// an unfenced lock would: the run that shows the checker catches it.
	unfenced bool
}

// runLockWorkload runs the workload on a new 3-node cluster and returns the
// checker's verdict.
func runLockWorkload(t *testing.T, lr lockRun) (violations []string, st *lockStats) {
	t.Helper()
	takeInProcessTurn(t)
	c := newInProcess(t, testcluster.Options{Nodes: 3})
	c.WaitLeader()
	var eps []string
	for _, n := range c.Nodes() {
		eps = append(eps, n.ClientAddr)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	rec := &lincheck.LockRecorder{}
	st = &lockStats{}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { stopWhenDone(wctx, stop, lr, st) })
	for i := range contenders {
		wg.Go(func() {
			if err := contend(wctx, ctx, i, eps, i < stallers, lr.unfenced, rec, st); err != nil {
				t.Errorf("contender %d: %v", i, err)
			}
		})
	}
	if lr.killLeaders {
		wg.Go(func() { killLeaders(wctx, c, st, t.Logf) })
	}
	wg.Wait()

	for _, n := range c.Nodes() {
		if !n.Running() {
			if err := n.Start(); err != nil {
				t.Fatalf("restart %s: %v", n.Name, err)
			}
		}
	}
	if err := waitServing(ctx, inProcess{c}); err != nil {
		t.Fatal(err)
	}
	fenced, err := fencedTokens(ctx, eps)
	if err != nil {
		t.Fatal(err)
	}
	writes := rec.Writes()
	t.Logf("lock workload: %d acquisitions, %d guarded writes recorded (%d succeeded), %d with unknown outcome, stale writes refused %d, accepted %d; %d leader kills; fenced key written %d times",
		st.acquired.Load(), len(writes), st.written.Load(), st.unknown.Load(), st.staleRefused.Load(), st.staleAccepted.Load(), st.leaderKills.Load(), len(fenced))
	if got := int64(len(fenced)); got != st.written.Load() && st.unknown.Load() == 0 {
		t.Errorf("fenced key writes in its history: got %d, want %d (the successful writes)", got, st.written.Load())
	}
	return lincheck.CheckLock(writes, fenced), st
}

// stopWhenDone calls stop once the run has lasted lr.duration and
// lr.enough (if set) holds, or once it has lasted lr.maxDuration.
func stopWhenDone(ctx context.Context, stop func(), lr lockRun, st *lockStats) {
	defer stop()
	start := time.Now()
	if !sleep(ctx, lr.duration) || lr.enough == nil {
		return
	}
	for !lr.enough(st) && time.Since(start) < lr.maxDuration {
		if !sleep(ctx, 100*time.Millisecond) {
			return
		}
	}
}

const (
	minLeaderKills  = 2
	minStaleRefused = 1
	minAcquisitions = 10
)

func TestLockMutualExclusionUnderFaults(t *testing.T) {
	t.Parallel()
	v, st := runLockWorkload(t, lockRun{
		duration:    12 * time.Second,
		killLeaders: true,
		enough: func(st *lockStats) bool {
			return st.leaderKills.Load() >= minLeaderKills &&
				st.staleRefused.Load() >= minStaleRefused &&
				st.acquired.Load() >= minAcquisitions
		},
		maxDuration: 45 * time.Second,
	})
	if len(v) > 0 {
		t.Fatalf("mutual exclusion violated:\n%s", strings.Join(v, "\n"))
	}
	// The run must have exercised what it claims to.
	if got := st.leaderKills.Load(); got < minLeaderKills {
		t.Errorf("leader kills: got %d, want at least %d", got, minLeaderKills)
	}
	if got := st.staleRefused.Load(); got < minStaleRefused {
		t.Errorf("guarded writes of a holder paused past its lease that were refused: got %d, want at least %d", got, minStaleRefused)
	}
	if got := st.acquired.Load(); got < minAcquisitions {
		t.Errorf("acquisitions in 45 s: got %d, want at least %d", got, minAcquisitions)
	}
}

// TestLockCheckerCatchesUnfencedWrites runs the workload with the stallers
// writing without the guard, as holders of an unfenced lock do: a holder
// paused past its lease then overwrites its successor's data, and the
// checker must say so.
func TestLockCheckerCatchesUnfencedWrites(t *testing.T) {
	t.Parallel()
	v, st := runLockWorkload(t, lockRun{duration: 8 * time.Second, unfenced: true})
	if st.staleAccepted.Load() == 0 {
		t.Fatalf("unfenced writes of holders paused past their lease: got none accepted, want some (refused %d)", st.staleRefused.Load())
	}
	if len(v) == 0 {
		t.Fatalf("checker: got no violation in a run where %d paused holders wrote unfenced, want one", st.staleAccepted.Load())
	}
	t.Logf("checker found, as it must:\n%s", strings.Join(v, "\n"))
}

// contend takes the lock in turns until ctx ends. Its final cleanup (and
// the staller's stale write) run under outer, which outlives ctx.
func contend(ctx, outer context.Context, id int, eps []string, staller, unfenced bool, rec *lincheck.LockRecorder, st *lockStats) error {
	cli, err := client.New(outer, client.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer cli.Close()
	for ctx.Err() == nil {
		s, err := cli.NewSession(ctx, client.WithTTL(lockTTL))
		if err != nil {
			sleep(ctx, 50*time.Millisecond) // back off: the cluster is failing over
			continue
		}
		m := client.NewMutex(s, lockName)
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = m.Lock(lctx)
		cancel()
		if err != nil {
			closeSession(outer, s)
			continue
		}
		st.acquired.Add(1)
		token := m.Token()
		if staller {
			// A pause: no renewals, no progress, for longer than the lease.
			s.Orphan()
			if !sleep(ctx, lockTTL*time.Second+2*time.Second) {
				return nil
			}
			w, ok := guardedWrite(outer, cli.Client, id, m.Key(), token, true, unfenced)
			if ok {
				rec.Add(w)
				if w.Succeeded {
					st.staleAccepted.Add(1)
					st.written.Add(1)
				} else {
					st.staleRefused.Add(1)
				}
			} else {
				st.unknown.Add(1)
			}
			continue
		}
		for range 3 {
			w, ok := guardedWrite(ctx, cli.Client, id, m.Key(), token, false, false)
			if !ok {
				st.unknown.Add(1)
				continue
			}
			rec.Add(w)
			if !w.Succeeded {
				break // lost the lock
			}
			st.written.Add(1)
		}
		uctx, cancel := context.WithTimeout(outer, 2*time.Second)
		_ = m.Unlock(uctx) // ErrNotHeld if lost meanwhile
		cancel()
		closeSession(outer, s)
	}
	return nil
}

func closeSession(ctx context.Context, s *client.Session) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_ = s.Close(ctx) // an unrevoked lease expires on its own
}

// guardedWrite puts the token in the fenced key only while key exists with
// create revision token. ok is false when the outcome is unknown.
// With unfenced, the guard is left out (the write always applies).
func guardedWrite(ctx context.Context, cli *clientv3.Client, id int, key string, token int64, stale, unfenced bool) (lincheck.LockWrite, bool) {
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	guard := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", token)}
	if unfenced {
		guard = nil
	}
	call := time.Now()
	resp, err := cli.Txn(wctx).If(guard...).
		Then(clientv3.OpPut(fencedKey, strconv.FormatInt(token, 10))).
		Commit()
	ret := time.Now()
	if err != nil {
		return lincheck.LockWrite{}, false
	}
	return lincheck.LockWrite{Client: id, Token: token, Call: call, Return: ret,
		Succeeded: resp.Succeeded, Revision: resp.Header.Revision, Stale: stale}, true
}

// killLeaders crashes the leader, lets the others elect a new one, and
// restarts it, until ctx ends.
func killLeaders(ctx context.Context, c *testcluster.Cluster, st *lockStats, logf func(string, ...any)) {
	for sleep(ctx, 1500*time.Millisecond) {
		n := c.SomeLeader()
		if n == nil {
			continue
		}
		n.Crash()
		st.leaderKills.Add(1)
		logf("crashed leader %s", n.Name)
		sleep(ctx, 800*time.Millisecond)
		if err := n.Start(); err != nil {
			logf("restart %s: %v", n.Name, err)
		}
	}
}

// fencedTokens returns the tokens written to the fenced key, in revision
// order, from its whole history.
func fencedTokens(ctx context.Context, eps []string) ([]int64, error) {
	cli, err := client.New(ctx, client.Config{Endpoints: eps})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	cur, err := cli.Get(ctx, fencedKey)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", fencedKey, err)
	}
	if len(cur.Kvs) == 0 {
		return nil, nil
	}
	last := cur.Kvs[0].ModRevision
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var out []int64
	for wr := range cli.Watch(wctx, fencedKey, clientv3.WithRev(1)) {
		if err := wr.Err(); err != nil {
			return nil, fmt.Errorf("history of %s: %w", fencedKey, err)
		}
		for _, ev := range wr.Events {
			tok, err := strconv.ParseInt(string(ev.Kv.Value), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("value of %s at revision %d: %w", fencedKey, ev.Kv.ModRevision, err)
			}
			out = append(out, tok)
			if ev.Kv.ModRevision >= last {
				return out, nil
			}
		}
	}
	return nil, fmt.Errorf("history of %s: watch ended before revision %d: %w", fencedKey, last, ctx.Err())
}
