package server_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/testcluster"
)

// Transactions across data ranges (issue 15, step 3): an etcd Txn whose
// keys lie in several ranges is atomic and strictly serializable, all its
// events carry one revision, and no lock outlives it.

// crossTransient reports whether err is one an etcd client may see while
// the leadership moves or a member crashes: the request may be tried again,
// and a write that failed so may or may not have been applied. Anything
// else (codes.Unimplemented, codes.Aborted, a Synod-only conflict error) is
// not something an etcd client expects from a Txn.
func crossTransient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true // the operation's own timeout
	}
	switch rpctypes.Error(err) {
	case rpctypes.ErrNoLeader, rpctypes.ErrLeaderChanged, rpctypes.ErrNotLeader, rpctypes.ErrStopped,
		rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost,
		rpctypes.ErrTooManyRequests:
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// describeErr names an error with its gRPC code, so that a test failing
// while cross-range writes are refused says so plainly.
func describeErr(err error) string {
	return fmt.Sprintf("%v (code %s)", err, status.Code(err))
}

// lockCounter is what *server.Server offers once cross-range transactions
// land: the number of cross-range transaction locks held in the member's
// replicas of the data ranges.
type lockCounter interface{ PendingLocks() int }

// waitNoPendingLocks waits until no member holds a lock of a cross-range
// transaction. poke, if set, runs before each look (a read that meets a
// lock resolves it).
func waitNoPendingLocks(t *testing.T, c *testcluster.Cluster, d time.Duration, poke func()) {
	t.Helper()
	waitFor(t, d, "no cross-range transaction lock left on any member", func() (bool, string) {
		if poke != nil {
			poke()
		}
		var held []string
		for _, n := range c.Nodes() {
			srv := n.Server()
			if srv == nil {
				held = append(held, n.Name+" is down")
				continue
			}
			lc, ok := any(srv).(lockCounter)
			if !ok {
				t.Fatal("server has no PendingLocks: *server.Server must have a method PendingLocks() int")
			}
			if k := lc.PendingLocks(); k != 0 {
				held = append(held, fmt.Sprintf("%s holds %d", n.Name, k))
			}
		}
		return len(held) == 0, strings.Join(held, ", ")
	})
}

// waitNoTxnRecords waits until no member holds the record of a
// transaction across ranges: every transaction ended without a fault, so
// their records were deleted.
func waitNoTxnRecords(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	for _, n := range c.Nodes() {
		waitFor(t, 10*time.Second, n.Name+"'s transaction records", func() (bool, string) {
			recs, err := n.Server().TxnRecords()
			if err != nil {
				t.Fatal(err)
			}
			return recs == 0, fmt.Sprintf("%d records", recs)
		})
	}
}

// atProgress is crossNemesis's reached for a workload of total operations
// counted by progress: fault i comes once progress passes a fraction of
// total (or the workload ended, end closed); false once the workload
// failed or stopped (stop done).
func atProgress(progress *atomic.Int64, total int64, end <-chan struct{}, stop context.Context, failed *atomic.Bool) func(step int) bool {
	fractions := []float64{0.15, 0.30, 0.45, 0.60, 0.80}
	return func(step int) bool {
		want := int64(fractions[step] * float64(total))
		for progress.Load() < want {
			select {
			case <-end:
				return !failed.Load()
			case <-stop.Done():
				return false
			case <-time.After(2 * time.Millisecond):
			}
		}
		return !failed.Load()
	}
}

// crossNemesis injects the faults of the workload tests from the test's
// goroutine: it moves the leadership to a follower, moves it again, crashes
// the leader and restarts it, then isolates the leader and heals the
// network, each once reached(i) (i = 0..4) says the workload progressed far
// enough, and splits a data range at splits[i] first. reached returns false when the workload
// failed: the faults left are skipped (a crashed member is still
// restarted).
func crossNemesis(t *testing.T, ctx context.Context, c *testcluster.Cluster, reached func(step int) bool, splits ...string) {
	t.Helper()
	start := time.Now()
	reachedThenSplit := reached
	reached = func(step int) bool {
		if !reachedThenSplit(step) {
			return false
		}
		if step < len(splits) {
			splitDuring(t, ctx, c, splits[step])
			t.Logf("%s: split at %q", time.Since(start).Round(time.Millisecond), splits[step])
		}
		return true
	}
	moveLeader := func(round int) {
		t.Helper()
		for attempt := 0; ; attempt++ {
			l := c.WaitLeader()
			fs := c.Followers(l)
			to := fs[(round+attempt)%len(fs)]
			mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := c.Client(l).MoveLeader(mctx, to.Server().MemberID())
			cancel()
			if err == nil {
				t.Logf("%s: leadership moved from %s to %s", time.Since(start).Round(time.Millisecond), l.Name, to.Name)
				return
			}
			if attempt == 4 || !crossTransient(err) {
				t.Fatalf("move the leadership from %s to %s: %v", l.Name, to.Name, err)
			}
		}
	}
	if !reached(0) {
		return
	}
	moveLeader(0)
	if !reached(1) {
		return
	}
	moveLeader(1)
	if !reached(2) {
		return
	}
	l := c.WaitLeader()
	l.Crash()
	t.Logf("%s: leader %s crashed", time.Since(start).Round(time.Millisecond), l.Name)
	if !reached(3) {
		l.Restart()
		return
	}
	l.Restart()
	t.Logf("%s: %s restarted", time.Since(start).Round(time.Millisecond), l.Name)
	// The leader cut off from the others (a partition): the majority
	// elects another while it still believes it leads.
	l = c.WaitLeader()
	c.Isolate(l)
	t.Logf("%s: leader %s isolated", time.Since(start).Round(time.Millisecond), l.Name)
	reached(4)
	c.Heal()
	t.Logf("%s: network healed", time.Since(start).Round(time.Millisecond))
}

// splitDuring splits the data range holding key at key through some member
// while a workload runs, trying again what a leader change may fail.
func splitDuring(t *testing.T, ctx context.Context, c *testcluster.Cluster, key string) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		var n *testcluster.Node
		for n == nil || !n.Running() {
			n = c.Node(rand.IntN(len(c.Nodes())))
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := synodpb.NewRangesClient(c.Client(n).ActiveConnection()).SplitRange(sctx, &synodpb.SplitRangeRequest{Keys: [][]byte{[]byte(key)}})
		cancel()
		if err == nil {
			return
		}
		if attempt == 4 || !(crossTransient(err) || status.Code(err) == codes.Unavailable) {
			t.Fatalf("split at %q through %s: %v", key, n.Name, err)
		}
	}
}

// ---------------------------------------------------------------------------
// Bank.

const (
	bankAccounts = 100
	bankInitial  = 100
	bankTotal    = bankAccounts * bankInitial
	bankWorkers  = 6
	// bankTransfersPerWorker is the number of acknowledged transfers each
	// worker makes: the workload is a fixed amount of work, not a duration.
	bankTransfersPerWorker = 20
	// bankPrefixes are the first bytes of the accounts' keys, one per data
	// range of bankSplits.
	bankPrefixes = "abcdefghi"
)

// bankSplits splits the keyspace into nine data ranges, [, b) to [i, ...),
// each holding the accounts of one prefix.
var bankSplits = []string{"b", "c", "d", "e", "f", "g", "h", "i"}

func bankKey(i int) string {
	return fmt.Sprintf("%c/acct%02d", bankPrefixes[i%len(bankPrefixes)], i)
}

// bankRange is the data range (by prefix) of account i.
func bankRange(i int) int { return i % len(bankPrefixes) }

// bankCheck checks a read of the whole keyspace: exactly the accounts,
// none negative, summing to the initial total.
func bankCheck(kvs []*mvccpb.KeyValue) error {
	if len(kvs) != bankAccounts {
		return fmt.Errorf("%d keys, want the %d accounts (%s)", len(kvs), bankAccounts, keysOf(kvs))
	}
	seen := map[string]bool{}
	sum := 0
	for _, kv := range kvs {
		k := string(kv.Key)
		var i int
		if len(k) < 3 || seen[k] {
			return fmt.Errorf("key %q is not an account (or is read twice)", k)
		}
		if _, err := fmt.Sscanf(k[2:], "acct%02d", &i); err != nil || i < 0 || i >= bankAccounts || bankKey(i) != k {
			return fmt.Errorf("key %q is not an account (or is read twice)", k)
		}
		seen[k] = true
		v, err := strconv.Atoi(string(kv.Value))
		if err != nil || v < 0 {
			return fmt.Errorf("account %s holds %q", k, kv.Value)
		}
		sum += v
	}
	if sum != bankTotal {
		return fmt.Errorf("the accounts sum to %d, want %d", sum, bankTotal)
	}
	return nil
}

// bankAck is an acknowledged transfer: at revision rev, accounts a and b
// were set to va and vb.
type bankAck struct {
	rev    int64
	a, b   int
	va, vb int
}

// TestCrossRangeBank: 100 accounts spread over nine data ranges, a fixed
// number of transfers between accounts of different ranges as etcd Txns
// (read both accounts with one read-only Txn of two Gets, then compare both
// mod revisions and put both; a failed compare or an error of unknown
// outcome is followed by fresh reads), while readers read every account at
// the current revision and at revisions seen before, the leadership moves
// twice and the leader crashes and restarts. Every read, current or past,
// linearizable or serializable, must see the 100 accounts, none negative,
// summing to the initial total; the history, replayed by a watch, must
// hold each transaction's two puts at one revision, in one response,
// conserving money, with every acknowledged transfer at its revision; and
// at the end no member may hold a lock.
func TestCrossRangeBank(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Configure: splitAt(bankSplits...)})
	c.WaitLeader()
	ctx := testcluster.Context(t, 180*time.Second)
	cli := c.Client()
	began := time.Now()

	// The accounts, by single puts, ten at a time.
	var (
		initRev  int64
		initMu   sync.Mutex
		initWG   sync.WaitGroup
		initErrs []error
	)
	for p := range 10 {
		initWG.Add(1)
		go func() {
			defer initWG.Done()
			for i := p; i < bankAccounts; i += 10 {
				resp, err := cli.Put(ctx, bankKey(i), strconv.Itoa(bankInitial))
				initMu.Lock()
				if err != nil {
					initErrs = append(initErrs, fmt.Errorf("put %s: %w", bankKey(i), err))
				} else {
					initRev = max(initRev, resp.Header.Revision)
				}
				initMu.Unlock()
			}
		}()
	}
	initWG.Wait()
	if len(initErrs) > 0 {
		t.Fatal(errors.Join(initErrs...))
	}
	// Every data range holds accounts.
	rl, err := synodpb.NewRangesClient(cli.ActiveConnection()).ListRanges(ctx, &synodpb.ListRangesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	data := 0
	for _, r := range rl.Ranges {
		if r.System || keys.RangeID(r.Id) == keys.SystemRangeID {
			continue
		}
		data++
		n := 0
		for i := range bankAccounts {
			k := bankKey(i)
			if k >= string(r.StartKey) && (len(r.EndKey) == 0 || k < string(r.EndKey)) {
				n++
			}
		}
		if n == 0 {
			t.Fatalf("data range %d [%s, %s) holds no account", r.Id, r.StartKey, r.EndKey)
		}
	}
	if data < 8 {
		t.Fatalf("%d data ranges, want at least 8", data)
	}
	if all, err := cli.Get(ctx, "", clientv3.WithFromKey()); err != nil {
		t.Fatal(err)
	} else if err := bankCheck(all.Kvs); err != nil {
		t.Fatalf("after the initial puts: %v", err)
	}

	var (
		wctx, stop  = context.WithCancel(ctx)
		failed      atomic.Bool
		wg, rwg     sync.WaitGroup
		workersDone = make(chan struct{})
		transfers   atomic.Int64 // acknowledged
		conflicts   atomic.Int64 // compares that failed
		unknown     atomic.Int64 // transfers of unknown outcome
		reads       atomic.Int64
		pastReads   atomic.Int64
		mu          sync.Mutex
		acks        []bankAck
		seenRevs    = []int64{initRev}
	)
	fail := func(format string, args ...any) {
		failed.Store(true)
		t.Errorf(format, args...)
		stop()
	}
	// Whatever ends the test (t.Fatal included), the clients stop first.
	defer func() {
		stop()
		wg.Wait()
		rwg.Wait()
	}()
	opCtx := func() (context.Context, context.CancelFunc) { return context.WithTimeout(wctx, 5*time.Second) }
	// outOfTime reports whether wctx ended, failing the test if it ended by
	// the test's deadline rather than by a failure.
	outOfTime := func(who string) bool {
		if wctx.Err() == nil {
			return false
		}
		if ctx.Err() != nil && !failed.Load() {
			fail("%s: the test's time ran out", who)
		}
		return true
	}
	// pause spaces the attempts of a client that met a transient error.
	pause := func() { time.Sleep(10 * time.Millisecond) }

	for w := range bankWorkers {
		wcli := c.Client()
		wg.Add(1)
		go func() {
			defer wg.Done()
			who := fmt.Sprintf("worker %d", w)
			rng := rand.New(rand.NewPCG(uint64(w), 15))
			// get reads two accounts' balances and mod revisions, with
			// one read-only Txn of two Gets (one round, not two); ok is
			// false when the read must be tried again (or the worker must
			// stop).
			get := func(ka, kb string) (bal [2]int, mod [2]int64, ok bool) {
				octx, cancel := opCtx()
				defer cancel()
				resp, err := wcli.Txn(octx).Then(clientv3.OpGet(ka), clientv3.OpGet(kb)).Commit()
				switch {
				case err != nil:
					if wctx.Err() == nil && !crossTransient(err) {
						fail("%s: get %s and %s: %s", who, ka, kb, describeErr(err))
					}
					pause()
					return bal, mod, false
				case len(resp.Responses) != 2:
					fail("%s: get %s and %s: %d responses, want 2", who, ka, kb, len(resp.Responses))
					return bal, mod, false
				}
				for j, k := range []string{ka, kb} {
					kvs := resp.Responses[j].GetResponseRange().GetKvs()
					if len(kvs) != 1 {
						fail("%s: get %s: %d keys, want the account", who, k, len(kvs))
						return bal, mod, false
					}
					v, err := strconv.Atoi(string(kvs[0].Value))
					if err != nil || v < 0 {
						fail("%s: account %s holds %q", who, k, kvs[0].Value)
						return bal, mod, false
					}
					bal[j], mod[j] = v, kvs[0].ModRevision
				}
				return bal, mod, true
			}
			for done := 0; done < bankTransfersPerWorker; {
				if outOfTime(fmt.Sprintf("%s, %d transfers done", who, done)) {
					return
				}
				a := rng.IntN(bankAccounts)
				b := rng.IntN(bankAccounts)
				for bankRange(b) == bankRange(a) {
					b = rng.IntN(bankAccounts)
				}
				ka, kb := bankKey(a), bankKey(b)
				bal, mod, ok := get(ka, kb)
				if !ok || bal[0] == 0 {
					continue
				}
				va, vb, ra, rb := bal[0], bal[1], mod[0], mod[1]
				x := 1 + rng.IntN(min(va, 20))
				octx, cancel := opCtx()
				resp, err := wcli.Txn(octx).If(
					clientv3.Compare(clientv3.ModRevision(ka), "=", ra),
					clientv3.Compare(clientv3.ModRevision(kb), "=", rb),
				).Then(
					clientv3.OpPut(ka, strconv.Itoa(va-x)),
					clientv3.OpPut(kb, strconv.Itoa(vb+x)),
				).Commit()
				cancel()
				switch {
				case err != nil:
					if wctx.Err() != nil {
						continue
					}
					if !crossTransient(err) {
						fail("%s: transfer of %d from %s to %s: %s", who, x, ka, kb, describeErr(err))
						return
					}
					// It may or may not have been applied: the next
					// transfer reads afresh, so the total holds either way.
					unknown.Add(1)
					pause()
				case !resp.Succeeded:
					conflicts.Add(1)
				default:
					mu.Lock()
					acks = append(acks, bankAck{rev: resp.Header.Revision, a: a, b: b, va: va - x, vb: vb + x})
					mu.Unlock()
					transfers.Add(1)
					done++
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		close(workersDone)
	}()
	for r := range 2 {
		rcli := c.Client()
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			who := fmt.Sprintf("reader %d", r)
			rng := rand.New(rand.NewPCG(uint64(r), 16))
			for i := 0; ; i++ {
				select {
				case <-workersDone:
					return
				default:
				}
				if outOfTime(who) {
					return
				}
				octx, cancel := opCtx()
				resp, err := rcli.Get(octx, "", clientv3.WithFromKey())
				cancel()
				if err != nil {
					if wctx.Err() == nil && !crossTransient(err) {
						fail("%s: read every account: %s", who, describeErr(err))
						return
					}
					pause()
					continue
				}
				if err := bankCheck(resp.Kvs); err != nil {
					fail("%s: read of every account at revision %d: %v", who, resp.Header.Revision, err)
					return
				}
				reads.Add(1)
				mu.Lock()
				seenRevs = append(seenRevs, resp.Header.Revision)
				past := seenRevs[rng.IntN(len(seenRevs))]
				mu.Unlock()
				if i%2 == 0 {
					continue
				}
				octx, cancel = opCtx()
				resp, err = rcli.Get(octx, "", clientv3.WithFromKey(), clientv3.WithRev(past))
				cancel()
				if err != nil {
					if wctx.Err() == nil && !crossTransient(err) {
						fail("%s: read every account at revision %d: %s", who, past, describeErr(err))
						return
					}
					pause()
					continue
				}
				if err := bankCheck(resp.Kvs); err != nil {
					fail("%s: read of every account at past revision %d: %v", who, past, err)
					return
				}
				pastReads.Add(1)
			}
		}()
	}

	crossNemesis(t, ctx, c, atProgress(&transfers, int64(bankWorkers*bankTransfersPerWorker), workersDone, wctx, &failed),
		"a/acct50", "c/acct50", "e/acct50", "g/acct50", "i/acct50")
	<-workersDone
	rwg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("%s: %d transfers acknowledged, %d compares failed, %d of unknown outcome; %d reads of every account, %d at a past revision",
		time.Since(began).Round(time.Millisecond), transfers.Load(), conflicts.Load(), unknown.Load(), reads.Load(), pastReads.Load())
	if reads.Load() == 0 || pastReads.Load() == 0 {
		t.Fatalf("the readers made %d reads and %d at past revisions during the transfers, want some of each", reads.Load(), pastReads.Load())
	}

	// The end: the current revision, past ones, and each member's
	// serializable view.
	c.WaitLeader()
	fcli := c.Client()
	now, err := fcli.Get(ctx, "", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := bankCheck(now.Kvs); err != nil {
		t.Fatalf("at the end, revision %d: %v", now.Header.Revision, err)
	}
	last := now.Header.Revision
	mu.Lock()
	byRev := slices.Clone(acks)
	pasts := []int64{initRev, seenRevs[len(seenRevs)/2], seenRevs[len(seenRevs)-1]}
	mu.Unlock()
	slices.SortFunc(byRev, func(a, b bankAck) int { return int(a.rev - b.rev) })
	for i := 1; i < len(byRev); i++ {
		if byRev[i].rev == byRev[i-1].rev {
			t.Fatalf("two transfers acknowledged at revision %d", byRev[i].rev)
		}
	}
	if byRev[0].rev <= initRev || byRev[len(byRev)-1].rev > last {
		t.Fatalf("transfers acknowledged at revisions %d to %d, want them in (%d, %d]", byRev[0].rev, byRev[len(byRev)-1].rev, initRev, last)
	}
	for _, a := range []bankAck{byRev[0], byRev[len(byRev)/2], byRev[len(byRev)-1]} {
		pasts = append(pasts, a.rev-1, a.rev)
	}
	for _, rev := range pasts {
		resp, err := fcli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithRev(rev))
		if err != nil {
			t.Fatalf("read every account at revision %d: %v", rev, err)
		}
		if err := bankCheck(resp.Kvs); err != nil {
			t.Fatalf("at the end, a read at past revision %d: %v", rev, err)
		}
	}
	for _, n := range c.Nodes() {
		ncli := c.Client(n)
		var torn error
		waitFor(t, 10*time.Second, n.Name+"'s serializable read up to the last revision", func() (bool, string) {
			resp, err := ncli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithSerializable())
			if err != nil {
				return false, err.Error()
			}
			if resp.Header.Revision >= initRev {
				if err := bankCheck(resp.Kvs); err != nil {
					torn = fmt.Errorf("serializable read at revision %d: %w", resp.Header.Revision, err)
					return true, ""
				}
			}
			return resp.Header.Revision >= last, fmt.Sprintf("at revision %d", resp.Header.Revision)
		})
		if torn != nil {
			t.Fatalf("%s: %v", n.Name, torn)
		}
	}

	// The history, replayed by a watch of the whole keyspace: every
	// revision after the initial puts is one transfer's two puts, in one
	// response, conserving money; every acknowledged transfer is there.
	bankCheckHistory(t, ctx, c, initRev, last, byRev)

	// No lock left: reads of every account meet (and resolve) any still
	// there.
	waitNoPendingLocks(t, c, 30*time.Second, func() {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, _ = fcli.Get(rctx, "", clientv3.WithFromKey())
	})
	t.Logf("done after %s", time.Since(began).Round(time.Millisecond))
}

// bankCheckHistory watches the whole keyspace from after the initial puts
// up to revision last and checks the transfers' history.
func bankCheckHistory(t *testing.T, ctx context.Context, c *testcluster.Cluster, initRev, last int64, acks []bankAck) {
	t.Helper()
	wcli := c.Client(c.Nodes()[0]) // one endpoint: progress speaks for the member serving the watch
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	wch := wcli.Watch(wctx, "", clientv3.WithFromKey(), clientv3.WithRev(initRev+1), clientv3.WithPrevKV())
	byRev := map[int64][]*clientv3.Event{}
	respOf := map[int64]int{} // the response a revision's events came in
	prev := initRev
	quiet := 0
watch:
	for resp := 0; ; {
		select {
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				t.Fatalf("watch of the history ended after revision %d: %v", prev, wr.Err())
			}
			if wr.IsProgressNotify() {
				if wr.Header.Revision >= last {
					break watch
				}
				continue
			}
			resp++
			for _, ev := range wr.Events {
				rev := ev.Kv.ModRevision
				if rev < prev {
					t.Fatalf("watch of the history: an event at revision %d after one at %d", rev, prev)
				}
				if r, ok := respOf[rev]; ok && r != resp {
					t.Fatalf("watch of the history: the events of revision %d came in two responses", rev)
				}
				respOf[rev] = resp
				prev = rev
				byRev[rev] = append(byRev[rev], ev)
			}
		case <-time.After(500 * time.Millisecond):
			if quiet++; quiet > 40 {
				t.Fatalf("watch of the history: no progress notification at revision %d or above after 20s (events up to %d)", last, prev)
			}
			if err := wcli.RequestProgress(wctx); err != nil {
				t.Fatalf("request watch progress: %v", err)
			}
		}
	}
	for rev, evs := range byRev {
		if rev > last {
			continue
		}
		if len(evs) != 2 {
			t.Fatalf("revision %d holds %d events, want one transfer's two puts: %v", rev, len(evs), evs)
		}
		delta := 0
		for _, ev := range evs {
			if ev.Type != clientv3.EventTypePut || ev.PrevKv == nil {
				t.Fatalf("revision %d: event %v, want a put with its previous value", rev, ev)
			}
			v, err1 := strconv.Atoi(string(ev.Kv.Value))
			p, err2 := strconv.Atoi(string(ev.PrevKv.Value))
			if err1 != nil || err2 != nil || !strings.Contains(string(ev.Kv.Key), "/acct") {
				t.Fatalf("revision %d: event %v is not a transfer's", rev, ev)
			}
			delta += v - p
		}
		if string(evs[0].Kv.Key) == string(evs[1].Kv.Key) {
			t.Fatalf("revision %d: both events on %s", rev, evs[0].Kv.Key)
		}
		if delta != 0 {
			var hist []string
			for _, ev := range evs {
				for _, n := range c.Nodes() {
					if n.Server() == nil {
						continue
					}
					var h []string
					_ = mvcc.ChangesSince(n.Server().DB(), ev.Kv.Key, nil, 0, func(ch mvcc.Change) error {
						if string(ch.KV.Key) == string(ev.Kv.Key) {
							h = append(h, fmt.Sprintf("%s@%d", ch.KV.Value, ch.KV.ModRevision))
						}
						return nil
					})
					hist = append(hist, fmt.Sprintf("%s on %s: %v", ev.Kv.Key, n.Name, h))
				}
				hist = append(hist, fmt.Sprintf("event %s=%s@%d prev %s@%d", ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision, ev.PrevKv.Value, ev.PrevKv.ModRevision))
			}
			t.Fatalf("revision %d: the transfer changes the total by %d\n%s", rev, delta, strings.Join(hist, "\n"))
		}
	}
	for _, a := range acks {
		evs := byRev[a.rev]
		got := map[string]string{}
		for _, ev := range evs {
			got[string(ev.Kv.Key)] = string(ev.Kv.Value)
		}
		if len(evs) != 2 || got[bankKey(a.a)] != strconv.Itoa(a.va) || got[bankKey(a.b)] != strconv.Itoa(a.vb) {
			t.Fatalf("the transfer acknowledged at revision %d (%s=%d, %s=%d) is not in the history: %v",
				a.rev, bankKey(a.a), a.va, bankKey(a.b), a.vb, got)
		}
	}
	t.Logf("the history holds %d transfers (%d acknowledged) between revisions %d and %d", len(byRev), len(acks), initRev, last)
}

// ---------------------------------------------------------------------------
// Linearizability of transactions over several ranges.

// The keys of the porcupine-checked workload, one in each data range of
// splitAt("b", "c", "d"): [, b) [b, c) [c, d) [d, ...).
var xlinKeys = [...]string{"a/k", "b/k", "c/k", "d/k"}

const xlinN = len(xlinKeys)

type xlinKind uint8

const (
	// xlinRead reads keys at one revision: a Get of one key, a Get of the
	// span of every key, or a read-only Txn of Gets.
	xlinRead xlinKind = iota + 1
	// xlinWrite is a Txn that puts one value on several keys: if cmp >= 0,
	// only if key cmp holds expect (absent with expectAbsent), else it
	// gets the keys in reads.
	xlinWrite
)

type xlinInput struct {
	kind         xlinKind
	what         string // how it was asked: get, range, read txn, cas txn, put txn
	keys         []int  // the keys read (xlinRead) or written (xlinWrite)
	cmp          int    // the key compared, or -1
	expect       string
	expectAbsent bool
	value        string
}

type xlinObserved struct {
	key    int
	exists bool
	value  string
	modRev int64
}

type xlinOutput struct {
	unknown   bool // the outcome of a write is unknown
	err       string
	rev       int64 // the response header's revision
	succeeded bool
	reads     []xlinObserved // the keys read (by a read, or the else branch of a failed compare)
}

type xlinReg struct {
	exists bool
	value  string
	modRev int64 // 0: written by a write of unknown outcome, not read since
}

// xlinState is the store: each key, and the revision the history reached.
// It is comparable, as porcupine's default Equal needs.
type xlinState struct {
	kv  [xlinN]xlinReg
	rev int64
}

func xlinHolds(s xlinState, in xlinInput) bool {
	if in.cmp < 0 {
		return true
	}
	r := s.kv[in.cmp]
	if in.expectAbsent {
		return !r.exists
	}
	return r.exists && r.value == in.expect
}

// xlinStep is the sequential specification: a store of a few keys whose
// operations are ordered by revision. A write's revision is above every
// operation's linearized before it, a read's at least as high, and a read
// returns exactly the state after the writes linearized before it (the
// keys' values and mod revisions, none above the read's revision). A write
// of unknown outcome may take effect anywhere after its call, or nowhere;
// its keys' mod revision is learned from the first read that sees one of
// them (each write puts one value, unique to it, on all its keys).
func xlinStep(s xlinState, in xlinInput, out xlinOutput) (bool, xlinState) {
	if out.unknown {
		if in.kind == xlinWrite && xlinHolds(s, in) {
			for _, k := range in.keys {
				s.kv[k] = xlinReg{exists: true, value: in.value}
			}
		}
		return true, s
	}
	if out.rev < s.rev {
		return false, s
	}
	if in.kind == xlinWrite {
		holds := xlinHolds(s, in)
		if out.succeeded != holds {
			return false, s
		}
		if holds {
			if out.rev <= s.rev {
				return false, s
			}
			for _, k := range in.keys {
				s.kv[k] = xlinReg{exists: true, value: in.value, modRev: out.rev}
			}
			s.rev = out.rev
			return true, s
		}
	}
	for _, o := range out.reads {
		r := s.kv[o.key]
		if o.exists != r.exists || o.modRev > out.rev {
			return false, s
		}
		if !r.exists {
			continue
		}
		if o.value != r.value {
			return false, s
		}
		if r.modRev == 0 {
			// The write of unknown outcome put this value, unique to
			// it, on all its keys: they all got this revision.
			for k := range s.kv {
				if s.kv[k].exists && s.kv[k].modRev == 0 && s.kv[k].value == r.value {
					s.kv[k].modRev = o.modRev
				}
			}
		} else if o.modRev != r.modRev {
			return false, s
		}
	}
	s.rev = out.rev
	return true, s
}

func (s xlinState) String() string {
	var b strings.Builder
	for i, r := range s.kv {
		if i > 0 {
			b.WriteString(" ")
		}
		switch {
		case !r.exists:
			fmt.Fprintf(&b, "%s=absent", xlinKeys[i])
		case r.modRev == 0:
			fmt.Fprintf(&b, "%s=%q@?", xlinKeys[i], r.value)
		default:
			fmt.Fprintf(&b, "%s=%q@%d", xlinKeys[i], r.value, r.modRev)
		}
	}
	fmt.Fprintf(&b, " rev %d", s.rev)
	return b.String()
}

func xlinDescribeInput(in xlinInput) string {
	var ns []string
	for _, k := range in.keys {
		ns = append(ns, xlinKeys[k])
	}
	names := strings.Join(ns, ",")
	switch {
	case in.kind == xlinRead:
		return fmt.Sprintf("%s(%s)", in.what, names)
	case in.cmp < 0:
		return fmt.Sprintf("%s(%s=%q)", in.what, names, in.value)
	case in.expectAbsent:
		return fmt.Sprintf("%s(if %s absent: %s=%q)", in.what, xlinKeys[in.cmp], names, in.value)
	default:
		return fmt.Sprintf("%s(if %s=%q: %s=%q)", in.what, xlinKeys[in.cmp], in.expect, names, in.value)
	}
}

func xlinDescribe(in xlinInput, out xlinOutput) string {
	var b strings.Builder
	b.WriteString(xlinDescribeInput(in) + " -> ")
	if out.unknown {
		b.WriteString("unknown (" + out.err + ")")
		return b.String()
	}
	if in.kind == xlinWrite {
		if out.succeeded {
			b.WriteString("succeeded")
		} else {
			b.WriteString("failed")
		}
	}
	for _, o := range out.reads {
		if o.exists {
			fmt.Fprintf(&b, " %s=%q@%d", xlinKeys[o.key], o.value, o.modRev)
		} else {
			fmt.Fprintf(&b, " %s=absent", xlinKeys[o.key])
		}
	}
	fmt.Fprintf(&b, " rev %d", out.rev)
	return b.String()
}

// xlinModel has no partition: operations span keys.
var xlinModel = porcupine.Model{
	Init: func() any { return xlinState{} },
	Step: func(state, input, output any) (bool, any) {
		return xlinStep(state.(xlinState), input.(xlinInput), output.(xlinOutput))
	},
	DescribeOperation: func(input, output any) string {
		return xlinDescribe(input.(xlinInput), output.(xlinOutput))
	},
	DescribeState: func(state any) string { return state.(xlinState).String() },
}

// xlinHistory returns the revision at which each value was first put on
// the keys, from a watch of the history up to revision last.
func xlinHistory(t *testing.T, ctx context.Context, c *testcluster.Cluster, last int64) map[string]int64 {
	t.Helper()
	wcli := c.Client(c.Nodes()[0]) // one endpoint: progress speaks for the member serving the watch
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	wch := wcli.Watch(wctx, xlinKeys[0], clientv3.WithRange(xlinKeys[xlinN-1]+"\x00"), clientv3.WithRev(1))
	written := map[string]int64{}
	for quiet := 0; ; {
		select {
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				t.Fatalf("watch of the history ended: %v", wr.Err())
			}
			if wr.IsProgressNotify() && wr.Header.Revision >= last {
				return written
			}
			for _, ev := range wr.Events {
				if _, seen := written[string(ev.Kv.Value)]; !seen && ev.Type == clientv3.EventTypePut {
					written[string(ev.Kv.Value)] = ev.Kv.ModRevision
				}
			}
		case <-time.After(500 * time.Millisecond):
			if quiet++; quiet > 40 {
				t.Fatalf("watch of the history: no progress notification at revision %d or above after 20s", last)
			}
			if err := wcli.RequestProgress(wctx); err != nil {
				t.Fatalf("request watch progress: %v", err)
			}
		}
	}
}

// xlinSettleUnknown gives each write of unknown outcome what the history
// says of it: applied at the revision its value first appears, or, if its
// value never does, nothing (it is dropped: it wrote nothing, and its
// reads were never returned). Its return time stays unknown.
func xlinSettleUnknown(ops []porcupine.Operation, written map[string]int64) []porcupine.Operation {
	var out []porcupine.Operation
	for _, o := range ops {
		in, res := o.Input.(xlinInput), o.Output.(xlinOutput)
		if res.unknown && in.kind == xlinWrite {
			rev, ok := written[in.value]
			if !ok {
				continue
			}
			o.Output = xlinOutput{rev: rev, succeeded: true}
		}
		out = append(out, o)
	}
	return out
}

// xlinRecorder records a history for porcupine. An operation of unknown
// outcome returns at the end of the history.
type xlinRecorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

func (r *xlinRecorder) now() int64 { return int64(time.Since(r.start)) }

func (r *xlinRecorder) add(client int, call int64, in xlinInput, out xlinOutput) {
	ret := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
}

func (r *xlinRecorder) history() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	var end int64
	for _, o := range r.ops {
		end = max(end, o.Return)
	}
	ops := slices.Clone(r.ops)
	for i := range ops {
		if ops[i].Output.(xlinOutput).unknown {
			ops[i].Return = end + 1
		}
	}
	return ops
}

// xlinExplain describes where porcupine's longest linearization stops.
func xlinExplain(ops []porcupine.Operation, info porcupine.LinearizationInfo) string {
	var longest []porcupine.Operation
	for _, part := range info.PartialLinearizationsOperations() {
		for _, lin := range part {
			if len(lin) > len(longest) {
				longest = lin
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "only %d of %d operations linearize; the longest linearization ends with:\n", len(longest), len(ops))
	state := xlinModel.Init()
	for i, o := range longest {
		_, state = xlinModel.Step(state, o.Input, o.Output)
		if i >= len(longest)-6 {
			fmt.Fprintf(&b, "    client %d: %s  => %s\n", o.ClientId, xlinModel.DescribeOperation(o.Input, o.Output), xlinModel.DescribeState(state))
		}
	}
	type id struct {
		client int
		call   int64
	}
	in := map[id]bool{}
	for _, o := range longest {
		in[id{o.ClientId, o.Call}] = true
	}
	var rest []porcupine.Operation
	for _, o := range ops {
		if !in[id{o.ClientId, o.Call}] {
			rest = append(rest, o)
		}
	}
	slices.SortFunc(rest, func(a, b porcupine.Operation) int { return int(a.Return - b.Return) })
	b.WriteString("  and none of these can come next:\n")
	for i, o := range rest {
		if i == 4 {
			fmt.Fprintf(&b, "    ... and %d more\n", len(rest)-4)
			break
		}
		fmt.Fprintf(&b, "    client %d [%s, %s]: %s\n", o.ClientId, time.Duration(o.Call), time.Duration(o.Return), xlinModel.DescribeOperation(o.Input, o.Output))
	}
	return b.String()
}

const (
	xlinClients      = 5
	xlinOpsPerClient = 40
)

// TestCrossRangeTxnsLinearizable: clients read and write four keys, each
// in a data range of its own, with transactions over two or three ranges
// (a compare on one key, puts of one value on two keys in other ranges;
// blind puts on two keys), Gets of one key, Gets of the span of every key
// and read-only Txns over two ranges, while the leadership moves twice and
// the leader crashes and restarts. The history must be linearizable in
// revision order (porcupine, with a model of the whole store: a
// transaction's keys all change at its revision, and a read returns the
// store's state at its revision). A write of unknown outcome (a timeout, a
// leader change) is kept with no return; whether it took effect, and at
// which revision, is read from the store's history (a watch from revision
// 1: each write puts a value of its own), which porcupine then checks
// against everything else the clients saw.
// At the end no member holds a lock.
func TestCrossRangeTxnsLinearizable(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Configure: splitAt("b", "c", "d")})
	c.WaitLeader()
	ctx := testcluster.Context(t, 180*time.Second)
	rec := &xlinRecorder{start: time.Now()}
	var (
		wctx, stop = context.WithCancel(ctx)
		failed     atomic.Bool
		wg         sync.WaitGroup
		clientsEnd = make(chan struct{})
		done       atomic.Int64 // operations returned
	)
	fail := func(format string, args ...any) {
		failed.Store(true)
		t.Errorf(format, args...)
		stop()
	}
	defer func() {
		stop()
		wg.Wait()
	}()
	for id := range xlinClients {
		cli := c.Client()
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(id), 17))
			last := map[int]string{} // the value this client last saw per key ("": absent)
			seq := 0
			// read records a read; it reports false when the client must stop.
			read := func(call int64, in xlinInput, out xlinOutput, err error) bool {
				switch {
				case err == nil:
					rec.add(id, call, in, out)
					for _, o := range out.reads {
						last[o.key] = o.value
					}
				case wctx.Err() != nil:
					return false
				case !crossTransient(err):
					fail("client %d: %s: %s", id, xlinDescribeInput(in), describeErr(err))
					return false
				default:
					time.Sleep(10 * time.Millisecond)
				}
				return true // a failed read changed nothing: dropped
			}
			observe := func(k int, kvs []*mvccpb.KeyValue) xlinObserved {
				if len(kvs) == 0 {
					return xlinObserved{key: k}
				}
				return xlinObserved{key: k, exists: true, value: string(kvs[0].Value), modRev: kvs[0].ModRevision}
			}
			for i := 0; i < xlinOpsPerClient; i++ {
				if wctx.Err() != nil {
					if ctx.Err() != nil && !failed.Load() {
						fail("client %d: out of time after %d operations", id, i)
					}
					return
				}
				k1 := rng.IntN(xlinN)
				k2 := (k1 + 1 + rng.IntN(xlinN-1)) % xlinN
				k3 := k1
				for k3 == k1 || k3 == k2 {
					k3 = rng.IntN(xlinN)
				}
				r := rng.IntN(100)
				octx, cancel := context.WithTimeout(wctx, 3*time.Second)
				call := rec.now()
				ok := true
				switch {
				case r < 25:
					in := xlinInput{kind: xlinRead, what: "get", keys: []int{k1}}
					resp, err := cli.Get(octx, xlinKeys[k1])
					var out xlinOutput
					if err == nil {
						out = xlinOutput{rev: resp.Header.Revision, reads: []xlinObserved{observe(k1, resp.Kvs)}}
					}
					ok = read(call, in, out, err)
				case r < 35:
					in := xlinInput{kind: xlinRead, what: "range", keys: []int{0, 1, 2, 3}}
					resp, err := cli.Get(octx, "a/", clientv3.WithRange("e"))
					var out xlinOutput
					if err == nil {
						out.rev = resp.Header.Revision
						for k, name := range xlinKeys {
							o := xlinObserved{key: k}
							for _, kv := range resp.Kvs {
								if string(kv.Key) == name {
									o = observe(k, []*mvccpb.KeyValue{kv})
								}
							}
							out.reads = append(out.reads, o)
						}
						if len(resp.Kvs) > xlinN {
							err = fmt.Errorf("range of every key: %d keys: %s", len(resp.Kvs), keysOf(resp.Kvs))
							fail("client %d: %v", id, err)
							ok = false
							break
						}
					}
					ok = read(call, in, out, err)
				case r < 45:
					in := xlinInput{kind: xlinRead, what: "read txn", keys: []int{k1, k2}}
					resp, err := cli.Txn(octx).Then(clientv3.OpGet(xlinKeys[k1]), clientv3.OpGet(xlinKeys[k2])).Commit()
					var out xlinOutput
					if err == nil {
						if !resp.Succeeded || len(resp.Responses) != 2 {
							fail("client %d: read txn: %v", id, resp)
							ok = false
							break
						}
						out.rev = resp.Header.Revision
						for j, k := range in.keys {
							out.reads = append(out.reads, observe(k, resp.Responses[j].GetResponseRange().GetKvs()))
						}
					}
					ok = read(call, in, out, err)
				default:
					seq++
					in := xlinInput{kind: xlinWrite, what: "put txn", keys: []int{k1, k2}, cmp: -1, value: fmt.Sprintf("c%d-%d", id, seq)}
					txn := cli.Txn(octx)
					var elseKeys []int
					if r < 90 {
						// A compare on one of the keys written, or on a
						// third key (write skew, were it not checked).
						in.what, in.cmp = "cas txn", k1
						if rng.IntN(2) == 0 {
							in.cmp = k3
						}
						in.expect, in.expectAbsent = last[in.cmp], last[in.cmp] == ""
						cmp := clientv3.Compare(clientv3.Value(xlinKeys[in.cmp]), "=", in.expect)
						if in.expectAbsent {
							cmp = clientv3.Compare(clientv3.CreateRevision(xlinKeys[in.cmp]), "=", 0)
						}
						elseKeys = []int{k1, k2}
						if in.cmp != k1 {
							elseKeys = append(elseKeys, in.cmp)
						}
						txn = txn.If(cmp)
					}
					// clientv3 wants If, Then, Else in this order.
					txn = txn.Then(clientv3.OpPut(xlinKeys[k1], in.value), clientv3.OpPut(xlinKeys[k2], in.value))
					if len(elseKeys) > 0 {
						var gets []clientv3.Op
						for _, k := range elseKeys {
							gets = append(gets, clientv3.OpGet(xlinKeys[k]))
						}
						txn = txn.Else(gets...)
					}
					resp, err := txn.Commit()
					switch {
					case err != nil:
						if wctx.Err() == nil && !crossTransient(err) {
							fail("client %d: %s: %s", id, xlinDescribeInput(in), describeErr(err))
							ok = false
							break
						}
						rec.add(id, call, in, xlinOutput{unknown: true, err: err.Error()})
						ok = wctx.Err() == nil
						time.Sleep(10 * time.Millisecond)
					case resp.Succeeded:
						rec.add(id, call, in, xlinOutput{rev: resp.Header.Revision, succeeded: true})
						last[k1], last[k2] = in.value, in.value
					default:
						out := xlinOutput{rev: resp.Header.Revision}
						if len(resp.Responses) != len(elseKeys) {
							fail("client %d: failed %s without its gets: %v", id, in.what, resp.Responses)
							ok = false
							break
						}
						for j, k := range elseKeys {
							o := observe(k, resp.Responses[j].GetResponseRange().GetKvs())
							out.reads = append(out.reads, o)
							last[k] = o.value
						}
						rec.add(id, call, in, out)
					}
				}
				cancel()
				if !ok {
					return
				}
				done.Add(1)
			}
		}()
	}
	go func() {
		wg.Wait()
		close(clientsEnd)
	}()
	crossNemesis(t, ctx, c, atProgress(&done, int64(xlinClients*xlinOpsPerClient), clientsEnd, wctx, &failed),
		"a/k", "b/k", "c/k", "d/k", "a/j")
	<-clientsEnd
	if t.Failed() {
		return
	}

	ops := rec.history()
	var okWrites, unknownWrites, readOps int
	for _, o := range ops {
		in, out := o.Input.(xlinInput), o.Output.(xlinOutput)
		switch {
		case in.kind == xlinRead:
			readOps++
		case out.unknown:
			unknownWrites++
		case out.succeeded:
			okWrites++
		}
	}
	t.Logf("%d operations: %d reads, %d writes succeeded, %d of unknown outcome", len(ops), readOps, okWrites, unknownWrites)
	if okWrites < 20 {
		t.Fatalf("%d transactions succeeded, want at least 20 for the check to mean something", okWrites)
	}
	// Each write puts a value of its own: the store's history says which
	// writes of unknown outcome took effect, and at which revision, so
	// that porcupine need not try every place for each (with a dozen or
	// more of them it could not decide in a minute).
	end, err := c.Client().Get(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	ops = xlinSettleUnknown(ops, xlinHistory(t, ctx, c, end.Header.Revision))
	res, info := porcupine.CheckOperationsVerbose(xlinModel, ops, 60*time.Second)
	if res != porcupine.Ok {
		dir, err := os.MkdirTemp("", "synod-crosstxn-")
		where := ""
		if err == nil {
			path := filepath.Join(dir, "linearizability.html")
			if err := porcupine.VisualizePath(xlinModel, info, path); err == nil {
				where = "; visualization in " + path
			}
		}
		if res == porcupine.Unknown {
			t.Fatalf("porcupine could not decide in 60s%s", where)
		}
		t.Fatalf("the history is not linearizable%s\n%s", where, xlinExplain(ops, info))
	}
	c.WaitLeader()
	waitNoPendingLocks(t, c, 30*time.Second, func() {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, _ = c.Client().Get(rctx, "", clientv3.WithFromKey())
	})
}

// TestCrossRangeTxnModel checks the porcupine model of
// TestCrossRangeTxnsLinearizable on small histories, so that it neither
// rejects what a correct store does nor accepts what it must not.
func TestCrossRangeTxnModel(t *testing.T) {
	w := func(client int, call, ret int64, keys []int, value string, rev int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Call: call, Return: ret,
			Input: xlinInput{kind: xlinWrite, what: "put txn", keys: keys, cmp: -1, value: value}, Output: xlinOutput{rev: rev, succeeded: true}}
	}
	cas := func(client int, call, ret int64, keys []int, cmp int, expect, value string, rev int64, ok bool, reads ...xlinObserved) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Call: call, Return: ret,
			Input:  xlinInput{kind: xlinWrite, what: "cas txn", keys: keys, cmp: cmp, expect: expect, expectAbsent: expect == "", value: value},
			Output: xlinOutput{rev: rev, succeeded: ok, reads: reads}}
	}
	unknown := func(op porcupine.Operation) porcupine.Operation {
		op.Output = xlinOutput{unknown: true, err: "timeout"}
		op.Return = 1000
		return op
	}
	r := func(client int, call, ret int64, rev int64, reads ...xlinObserved) porcupine.Operation {
		var ks []int
		for _, o := range reads {
			ks = append(ks, o.key)
		}
		return porcupine.Operation{ClientId: client, Call: call, Return: ret,
			Input: xlinInput{kind: xlinRead, what: "get", keys: ks}, Output: xlinOutput{rev: rev, reads: reads}}
	}
	has := func(k int, v string, mod int64) xlinObserved {
		return xlinObserved{key: k, exists: true, value: v, modRev: mod}
	}
	absent := func(k int) xlinObserved { return xlinObserved{key: k} }
	for _, tc := range []struct {
		name string
		ok   bool
		ops  []porcupine.Operation
	}{
		{"sequential", true, []porcupine.Operation{
			w(0, 0, 1, []int{0, 1}, "x", 10), r(1, 2, 3, 10, has(0, "x", 10), has(1, "x", 10), absent(2)),
		}},
		{"concurrent read sees old or new", true, []porcupine.Operation{
			w(0, 0, 5, []int{0, 1}, "x", 10), r(1, 1, 2, 9, absent(0), absent(1)), r(2, 1, 3, 11, has(0, "x", 10), has(1, "x", 10)),
		}},
		{"torn read", false, []porcupine.Operation{
			w(0, 0, 5, []int{0, 1}, "x", 10), r(1, 1, 2, 11, has(0, "x", 10), absent(1)),
		}},
		{"stale read after the write returned", false, []porcupine.Operation{
			w(0, 0, 1, []int{0, 1}, "x", 10), r(1, 2, 3, 9, absent(0)),
		}},
		{"read revision below the write's, value new", false, []porcupine.Operation{
			w(0, 0, 5, []int{0, 1}, "x", 10), r(1, 1, 2, 9, has(0, "x", 10)),
		}},
		{"two writes at one revision", false, []porcupine.Operation{
			w(0, 0, 1, []int{0, 1}, "x", 10), w(1, 2, 3, []int{2, 3}, "y", 10),
		}},
		{"unknown write seen later", true, []porcupine.Operation{
			unknown(w(0, 0, 1, []int{0, 3}, "x", 0)), r(1, 2, 3, 12, has(3, "x", 12)), r(1, 4, 5, 13, has(0, "x", 12)),
		}},
		{"unknown write never applied", true, []porcupine.Operation{
			unknown(w(0, 0, 1, []int{0, 3}, "x", 0)), r(1, 2, 3, 12, absent(0), absent(3)),
		}},
		{"unknown write seen at two revisions", false, []porcupine.Operation{
			unknown(w(0, 0, 1, []int{0, 3}, "x", 0)), r(1, 2, 3, 12, has(3, "x", 12), has(0, "x", 11)),
		}},
		{"cas succeeds then fails", true, []porcupine.Operation{
			cas(0, 0, 1, []int{0, 1}, 2, "", "x", 10, true),
			cas(1, 2, 3, []int{0, 1}, 0, "", "y", 11, false, has(0, "x", 10), has(1, "x", 10)),
		}},
		{"lost update: both cas on one key succeed", false, []porcupine.Operation{
			cas(0, 0, 5, []int{0, 1}, 0, "", "x", 10, true),
			cas(1, 0, 5, []int{0, 2}, 0, "", "y", 11, true),
		}},
		{"lost update: both cas on the compared key succeed", false, []porcupine.Operation{
			w(2, 0, 1, []int{2, 3}, "z", 5),
			cas(0, 2, 5, []int{2, 0}, 2, "z", "x", 10, true),
			cas(1, 2, 5, []int{2, 1}, 2, "z", "y", 11, true),
		}},
		{"write skew: each cas compares a key the other writes, both succeed", false, []porcupine.Operation{
			w(2, 0, 1, []int{2, 3}, "z", 5),
			cas(0, 2, 5, []int{0, 1}, 2, "z", "x", 10, true),
			cas(1, 2, 5, []int{2, 3}, 0, "", "y", 11, true),
		}},
		{"one of two crossing cas succeeds", true, []porcupine.Operation{
			w(2, 0, 1, []int{2, 3}, "z", 5),
			cas(0, 2, 5, []int{0, 1}, 2, "z", "x", 10, true),
			cas(1, 2, 5, []int{2, 3}, 0, "", "y", 11, false, has(2, "z", 5), has(3, "z", 5), has(0, "x", 10)),
		}},
	} {
		got := porcupine.CheckOperations(xlinModel, tc.ops)
		if got != tc.ok {
			t.Errorf("%s: linearizable %v, want %v", tc.name, got, tc.ok)
		}
	}
}

// ---------------------------------------------------------------------------
// Semantics, without faults.

// TestCrossRangeTxnSemantics checks etcd's Txn semantics on keys of three
// data ranges ([, g) [g, p) [p, ...)): compares on each range, the success
// and the failure branch (each writing several ranges), a compare failing
// in the last range only, a nested txn that reads what an earlier nested
// txn wrote, a Get after a Put in the same txn, prev_kv on puts and
// deletes, a DeleteRange over two ranges in a txn and one over three on
// its own. Every write of a txn carries its header's revision, the state
// just below it holds none of them, and a watch of the whole keyspace sees
// each txn's events in one response, at one revision, and nothing for a
// txn that wrote nothing.
func TestCrossRangeTxnSemantics(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Configure: splitAt("g", "p")})
	c.WaitLeader()
	ctx := testcluster.Context(t, 30*time.Second)
	cli := c.Client()

	setup := map[string]int64{}
	var setupRev int64
	for _, k := range []string{"a1", "h1", "q1"} {
		setup[k] = put(t, cli, k, "v0").Header.Revision
		setupRev = max(setupRev, setup[k])
	}
	wctx, cancelWatch := context.WithCancel(ctx)
	defer cancelWatch()
	wch := cli.Watch(wctx, "", clientv3.WithFromKey(), clientv3.WithRev(setupRev+1), clientv3.WithPrevKV())

	commit := func(what string, txn clientv3.Txn) *clientv3.TxnResponse {
		t.Helper()
		resp, err := txn.Commit()
		if err != nil {
			t.Fatalf("%s: %s", what, describeErr(err))
		}
		return resp
	}
	kvString := func(kvs []*mvccpb.KeyValue) string {
		var s []string
		for _, kv := range kvs {
			s = append(s, fmt.Sprintf("%s=%s@%d", kv.Key, kv.Value, kv.ModRevision))
		}
		return strings.Join(s, " ")
	}
	// state reads every key, at rev if given.
	state := func(rev int64) string {
		t.Helper()
		opts := []clientv3.OpOption{clientv3.WithFromKey()}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		return kvString(get(t, cli, "", opts...).Kvs)
	}
	want := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Fatalf("%s:\n got %s\nwant %s", what, got, want)
		}
	}

	// 1. Compares on each range hold: puts on each, with prev_kv, a Get of
	// a key put earlier in the txn, and a Get over every range.
	r1 := commit("txn over three ranges", cli.Txn(ctx).If(
		clientv3.Compare(clientv3.Value("a1"), "=", "v0"),
		clientv3.Compare(clientv3.ModRevision("h1"), "=", setup["h1"]),
		clientv3.Compare(clientv3.Version("q1"), "=", 1),
	).Then(
		clientv3.OpPut("a1", "v1", clientv3.WithPrevKV()),
		clientv3.OpPut("h1", "v1", clientv3.WithPrevKV()),
		clientv3.OpPut("q1", "v1", clientv3.WithPrevKV()),
		clientv3.OpGet("a1"),
		clientv3.OpGet("a", clientv3.WithRange("z")),
	).Else(clientv3.OpGet("a", clientv3.WithRange("z"))))
	rev1 := r1.Header.Revision
	if !r1.Succeeded || len(r1.Responses) != 5 {
		t.Fatalf("txn over three ranges: succeeded %v with %d responses, want the 5 of the success branch: %v", r1.Succeeded, len(r1.Responses), r1.Responses)
	}
	if rev1 <= setupRev {
		t.Fatalf("txn over three ranges at revision %d, not above the puts before it (%d)", rev1, setupRev)
	}
	for i, k := range []string{"a1", "h1", "q1"} {
		p := r1.Responses[i].GetResponsePut()
		if p == nil || p.PrevKv == nil || string(p.PrevKv.Key) != k || string(p.PrevKv.Value) != "v0" || p.PrevKv.ModRevision != setup[k] {
			t.Fatalf("put %s: prev_kv %v, want v0 at revision %d", k, p.GetPrevKv(), setup[k])
		}
	}
	own := r1.Responses[3].GetResponseRange()
	if own == nil || len(own.Kvs) != 1 || string(own.Kvs[0].Value) != "v1" || own.Kvs[0].ModRevision != rev1 ||
		own.Kvs[0].Version != 2 || own.Kvs[0].CreateRevision != setup["a1"] {
		t.Fatalf("get a1 after its put in the txn: %v, want v1 at revision %d, version 2, created at %d", own, rev1, setup["a1"])
	}
	want("get over every range after the puts in the txn", kvString(r1.Responses[4].GetResponseRange().GetKvs()),
		fmt.Sprintf("a1=v1@%d h1=v1@%d q1=v1@%d", rev1, rev1, rev1))
	want("every key after the txn", state(0), fmt.Sprintf("a1=v1@%d h1=v1@%d q1=v1@%d", rev1, rev1, rev1))
	want("every key just below the txn's revision", state(rev1-1),
		fmt.Sprintf("a1=v0@%d h1=v0@%d q1=v0@%d", setup["a1"], setup["h1"], setup["q1"]))

	// 2. A compare fails in the last range only: the success branch is not
	// applied, the failure branch writes two ranges and reads its own write.
	r2 := commit("txn failing in its last range", cli.Txn(ctx).If(
		clientv3.Compare(clientv3.Value("a1"), "=", "v1"),
		clientv3.Compare(clientv3.Value("h1"), "=", "v1"),
		clientv3.Compare(clientv3.Value("q1"), "=", "nope"),
	).Then(
		clientv3.OpPut("a1", "then"), clientv3.OpPut("q1", "then"),
	).Else(
		clientv3.OpPut("h1", "v2", clientv3.WithPrevKV()),
		clientv3.OpPut("q1", "v2"),
		clientv3.OpGet("a1"),
		clientv3.OpGet("q1"),
	))
	rev2 := r2.Header.Revision
	if r2.Succeeded || len(r2.Responses) != 4 || rev2 <= rev1 {
		t.Fatalf("txn failing in its last range: succeeded %v, %d responses at revision %d, want the 4 of the failure branch above %d", r2.Succeeded, len(r2.Responses), rev2, rev1)
	}
	if p := r2.Responses[0].GetResponsePut().GetPrevKv(); p == nil || string(p.Value) != "v1" || p.ModRevision != rev1 {
		t.Fatalf("put h1 in the failure branch: prev_kv %v, want v1 at %d", p, rev1)
	}
	want("gets of the failure branch", kvString(r2.Responses[2].GetResponseRange().GetKvs())+" "+kvString(r2.Responses[3].GetResponseRange().GetKvs()),
		fmt.Sprintf("a1=v1@%d q1=v2@%d", rev1, rev2))
	want("every key after the failure branch", state(0), fmt.Sprintf("a1=v1@%d h1=v2@%d q1=v2@%d", rev1, rev2, rev2))

	// 3. A failed compare whose failure branch only reads: no write.
	r3 := commit("txn with a read-only failure branch", cli.Txn(ctx).If(
		clientv3.Compare(clientv3.Value("a1"), "=", "nope"),
		clientv3.Compare(clientv3.Value("q1"), "=", "v2"),
	).Then(clientv3.OpPut("a1", "then"), clientv3.OpPut("q1", "then")).Else(clientv3.OpGet("a", clientv3.WithRange("z"))))
	if r3.Succeeded || len(r3.Responses) != 1 || r3.Header.Revision < rev2 {
		t.Fatalf("txn with a read-only failure branch: succeeded %v at revision %d, want failed at %d or above", r3.Succeeded, r3.Header.Revision, rev2)
	}
	want("read-only failure branch", kvString(r3.Responses[0].GetResponseRange().GetKvs()), fmt.Sprintf("a1=v1@%d h1=v2@%d q1=v2@%d", rev1, rev2, rev2))

	// 4. Nested txns: the first writes two ranges, the second (failing)
	// writes a third and reads what the first wrote.
	r4 := commit("nested txns", cli.Txn(ctx).If(clientv3.Compare(clientv3.Version("a1"), ">", 0)).Then(
		clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Value("h1"), "=", "v2"), clientv3.Compare(clientv3.Value("q1"), "=", "v2")},
			[]clientv3.Op{clientv3.OpPut("h2", "n"), clientv3.OpPut("q2", "n")},
			[]clientv3.Op{clientv3.OpPut("h3", "bad")},
		),
		clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Value("q1"), "=", "nope")},
			[]clientv3.Op{clientv3.OpPut("a9", "bad")},
			[]clientv3.Op{clientv3.OpPut("a2", "n"), clientv3.OpGet("q2")},
		),
	))
	rev4 := r4.Header.Revision
	if !r4.Succeeded || len(r4.Responses) != 2 || rev4 <= rev2 {
		t.Fatalf("nested txns: succeeded %v, %d responses at revision %d, want 2 above %d", r4.Succeeded, len(r4.Responses), rev4, rev2)
	}
	n1, n2 := r4.Responses[0].GetResponseTxn(), r4.Responses[1].GetResponseTxn()
	if n1 == nil || !n1.Succeeded || len(n1.Responses) != 2 || n2 == nil || n2.Succeeded || len(n2.Responses) != 2 {
		t.Fatalf("nested txns: got %v and %v, want the first succeeded with 2 responses, the second failed with 2", n1, n2)
	}
	want("get in a nested txn of a key put by an earlier one", kvString(n2.Responses[1].GetResponseRange().GetKvs()), fmt.Sprintf("q2=n@%d", rev4))
	want("every key after the nested txns", state(0),
		fmt.Sprintf("a1=v1@%d a2=n@%d h1=v2@%d h2=n@%d q1=v2@%d q2=n@%d", rev1, rev4, rev2, rev4, rev2, rev4))

	// 5. A DeleteRange over two ranges in a txn, with a put in a third.
	r5 := commit("txn deleting over two ranges", cli.Txn(ctx).Then(
		clientv3.OpDelete("h", clientv3.WithRange("q2"), clientv3.WithPrevKV()),
		clientv3.OpPut("a3", "x"),
	))
	rev5 := r5.Header.Revision
	if len(r5.Responses) != 2 {
		t.Fatalf("txn deleting over two ranges: %d responses, want 2", len(r5.Responses))
	}
	d := r5.Responses[0].GetResponseDeleteRange()
	if !r5.Succeeded || d == nil || d.Deleted != 3 || rev5 <= rev4 {
		t.Fatalf("txn deleting [h, q2): %v at revision %d, want 3 deleted above %d", r5, rev5, rev4)
	}
	want("prev_kvs of the delete over two ranges", kvString(d.PrevKvs), fmt.Sprintf("h1=v2@%d h2=n@%d q1=v2@%d", rev2, rev4, rev2))
	want("every key after the delete over two ranges", state(0), fmt.Sprintf("a1=v1@%d a2=n@%d a3=x@%d q2=n@%d", rev1, rev4, rev5, rev4))

	// 6. A DeleteRange over three ranges on its own.
	del, err := cli.Delete(ctx, "a", clientv3.WithRange("q3"), clientv3.WithPrevKV())
	if err != nil {
		t.Fatalf("delete [a, q3): %s", describeErr(err))
	}
	rev6 := del.Header.Revision
	if del.Deleted != 4 || rev6 <= rev5 {
		t.Fatalf("delete [a, q3): %d deleted at revision %d, want 4 above %d", del.Deleted, rev6, rev5)
	}
	want("prev_kvs of the delete over three ranges", kvString(del.PrevKvs), fmt.Sprintf("a1=v1@%d a2=n@%d a3=x@%d q2=n@%d", rev1, rev4, rev5, rev4))
	want("every key after the delete over three ranges", state(0), "")
	want("every key just below it", state(rev6-1), fmt.Sprintf("a1=v1@%d a2=n@%d a3=x@%d q2=n@%d", rev1, rev4, rev5, rev4))

	// The watch: each write's events at its revision, in one response.
	wantEvents := map[int64]string{
		rev1: "PUT a1=v1 (v0); PUT h1=v1 (v0); PUT q1=v1 (v0)",
		rev2: "PUT h1=v2 (v1); PUT q1=v2 (v1)",
		rev4: "PUT a2=n; PUT h2=n; PUT q2=n",
		rev5: "DELETE h1 (v2); DELETE h2 (n); DELETE q1 (v2); PUT a3=x",
		rev6: "DELETE a1 (v1); DELETE a2 (n); DELETE a3 (x); DELETE q2 (n)",
	}
	got := map[int64]string{}
	for len(got) < len(wantEvents) {
		select {
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				t.Fatalf("watch of every key ended: %v", wr.Err())
			}
			byRev := map[int64][]string{}
			for _, ev := range wr.Events {
				var s string
				if ev.Type == clientv3.EventTypeDelete {
					s = fmt.Sprintf("DELETE %s", ev.Kv.Key)
				} else {
					s = fmt.Sprintf("PUT %s=%s", ev.Kv.Key, ev.Kv.Value)
				}
				if ev.PrevKv != nil {
					s += fmt.Sprintf(" (%s)", ev.PrevKv.Value)
				}
				byRev[ev.Kv.ModRevision] = append(byRev[ev.Kv.ModRevision], s)
			}
			for rev, evs := range byRev {
				if _, dup := got[rev]; dup {
					t.Fatalf("watch: the events of revision %d came in more than one response", rev)
				}
				if _, ok := wantEvents[rev]; !ok {
					t.Fatalf("watch: events %v at revision %d, which no write of the test has", evs, rev)
				}
				got[rev] = sortEvents(evs)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("watch of every key: after 10s, events of %d of the %d writes: %v", len(got), len(wantEvents), got)
		}
	}
	for rev, w := range wantEvents {
		want(fmt.Sprintf("watch events at revision %d", rev), got[rev], sortEvents(strings.Split(w, "; ")))
	}
	waitNoPendingLocks(t, c, 10*time.Second, nil)
	// Every transaction ended without a fault: their records are deleted.
	waitNoTxnRecords(t, c)
}

// sortEvents orders descriptions of one revision's events ("PUT k=v (prev)",
// "DELETE k (prev)") by key: etcd sends a txn's events in the order of its
// operations, and the test compares them as sets.
func sortEvents(evs []string) string {
	evs = slices.Clone(evs)
	slices.SortFunc(evs, func(a, b string) int {
		return strings.Compare(strings.Fields(a)[1], strings.Fields(b)[1])
	})
	return strings.Join(evs, "; ")
}
