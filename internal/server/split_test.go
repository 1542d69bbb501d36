package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/replica"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// listSpans returns the data ranges' spans as a member lists them:
// "id[start,end)" in key order.
func listSpans(ctx context.Context, t *testing.T, cli *clientv3.Client) []string {
	t.Helper()
	rl, err := synodpb.NewRangesClient(cli.ActiveConnection()).ListRanges(ctx, &synodpb.ListRangesRequest{})
	if err != nil {
		t.Fatalf("list ranges: %v", err)
	}
	var out []string
	for _, r := range rl.Ranges {
		if !r.System {
			out = append(out, fmt.Sprintf("[%s,%s)", r.StartKey, r.EndKey))
		}
	}
	return out
}

// TestSplitRangesUnderLoad splits a running cluster's one data range into
// six while writers put keys across the keyspace and run txns over keys
// that end up in different ranges: no request fails, every acknowledged
// write is read back, a watch of the whole keyspace from revision 1 sees
// every write once and in revision order, each txn's two puts at one
// revision, and a member that crashes and restarts comes back with the
// same ranges.
func TestSplitRangesUnderLoad(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	ctx := testcluster.Context(t, 60*time.Second)
	cli := c.Client()

	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	wch := c.Client(c.Node(1)).Watch(wctx, "", clientv3.WithFromKey(), clientv3.WithRev(1))

	type write struct {
		key string
		rev int64
	}
	var (
		mu     sync.Mutex
		writes []write
		txnRev = map[int64]bool{}
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 4 {
		wg.Go(func() {
			wcli := c.Client(c.Node(w % 3))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				// Keys across the whole keyspace, so that every range
				// the splits make gets writes.
				k := fmt.Sprintf("%c/w%d/%04d", 'a'+byte((n*7+w)%26), w, n)
				resp, err := wcli.Put(ctx, k, k)
				if err != nil {
					errs <- fmt.Errorf("put %s: %w", k, err)
					return
				}
				mu.Lock()
				writes = append(writes, write{k, resp.Header.Revision})
				mu.Unlock()
			}
		})
	}
	wg.Go(func() {
		tcli := c.Client(c.Node(2))
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			a, z := fmt.Sprintf("c/txn/%04d", n), fmt.Sprintf("x/txn/%04d", n)
			resp, err := tcli.Txn(ctx).Then(clientv3.OpPut(a, "t"), clientv3.OpPut(z, "t")).Commit()
			if err != nil {
				errs <- fmt.Errorf("txn %d: %w", n, err)
				return
			}
			mu.Lock()
			writes = append(writes, write{a, resp.Header.Revision}, write{z, resp.Header.Revision})
			txnRev[resp.Header.Revision] = true
			mu.Unlock()
		}
	})
	written := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(writes)
	}
	waitFor(t, 20*time.Second, "writes before the first split", func() (bool, string) {
		return written() >= 200, fmt.Sprint(written())
	})

	rc := synodpb.NewRangesClient(cli.ActiveConnection())
	other := synodpb.NewRangesClient(c.Client(c.Node(2)).ActiveConnection())
	for i, key := range []string{"m", "f", "t", "b", "q", "m"} {
		rcl := rc
		if i%2 == 1 {
			rcl = other
		}
		resp, err := rcl.SplitRange(ctx, &synodpb.SplitRangeRequest{Keys: [][]byte{[]byte(key)}})
		if err != nil {
			t.Fatalf("split at %q: %v", key, err)
		}
		if sp := resp.Splits[0]; string(sp.Right.StartKey) != key || string(sp.Left.EndKey) != key {
			t.Fatalf("split at %q: got left %q..%q, right %q..%q", key, sp.Left.StartKey, sp.Left.EndKey, sp.Right.StartKey, sp.Right.EndKey)
		}
		before := written()
		waitFor(t, 20*time.Second, "writes after the split", func() (bool, string) {
			return written() >= before+100, fmt.Sprint(written() - before)
		})
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	wantSpans := "[,b) [b,f) [f,m) [m,q) [q,t) [t,)"
	for _, n := range c.Nodes() {
		waitFor(t, 10*time.Second, "every member's ranges", func() (bool, string) {
			got := strings.Join(listSpans(ctx, t, c.Client(n)), " ")
			return got == wantSpans, got
		})
	}

	// Every acknowledged write, read back at its revision.
	final := map[string]int64{}
	for _, w := range writes {
		final[w.key] = w.rev
	}
	all, err := cli.Get(ctx, "", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Kvs) != len(final) {
		t.Fatalf("read every key: got %d keys, want %d", len(all.Kvs), len(final))
	}
	for _, kv := range all.Kvs {
		if rev, ok := final[string(kv.Key)]; !ok || rev != kv.ModRevision {
			t.Fatalf("key %s at revision %d, want %d", kv.Key, kv.ModRevision, rev)
		}
	}
	revs := map[int64]int{}
	for _, w := range writes {
		revs[w.rev]++
	}
	for rev, n := range revs {
		if n != 1 && !(n == 2 && txnRev[rev]) {
			t.Fatalf("revision %d given to %d writes", rev, n)
		}
	}

	// The watch: every write once, in revision order, a txn's two puts in
	// one response.
	last := slices.Max(slices.Collect(func(yield func(int64) bool) {
		for r := range revs {
			if !yield(r) {
				return
			}
		}
	}))
	seen := map[string]int64{}
	var prev int64
	for resp := range wch {
		if err := resp.Err(); err != nil {
			t.Fatalf("watch: %v", err)
		}
		byRev := map[int64]int{}
		for _, ev := range resp.Events {
			r := ev.Kv.ModRevision
			if r < prev {
				t.Fatalf("watch: event at %d after one at %d", r, prev)
			}
			prev = r
			if _, dup := seen[string(ev.Kv.Key)]; dup {
				t.Fatalf("watch: %s seen twice", ev.Kv.Key)
			}
			seen[string(ev.Kv.Key)] = r
			byRev[r]++
		}
		for r := range txnRev {
			if n := byRev[r]; n == 1 {
				t.Fatalf("watch: txn at %d split over responses", r)
			}
		}
		if prev >= last && len(seen) >= len(final) {
			break
		}
	}
	for k, r := range final {
		if seen[k] != r {
			t.Fatalf("watch: %s at %d, want %d", k, seen[k], r)
		}
	}
	stopWatch()

	// A member that crashes comes back with the ranges the splits made.
	n := c.Node(1)
	n.Crash()
	n.Restart()
	c.WaitLeader()
	waitFor(t, 20*time.Second, "the restarted member's ranges and keys", func() (bool, string) {
		ncli := c.Client(n)
		got := strings.Join(listSpans(ctx, t, ncli), " ")
		resp, err := ncli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly())
		if err != nil {
			return false, err.Error()
		}
		return got == wantSpans && resp.Count == int64(len(final)), fmt.Sprintf("%s, %d keys", got, resp.Count)
	})
	if _, err := cli.Put(ctx, "z/after", "x"); err != nil {
		t.Fatal(err)
	}
}

// TestSplitReachesAMemberThatWasDown splits ranges while a member is down
// and its logs are truncated past it: it catches up by a snapshot of the
// split range from after the split, learns the ranges the splits made from
// the meta copies in the system range, takes a snapshot of each, and then
// serves every key and the same history as the others, and takes writes
// in every range.
func TestSplitReachesAMemberThatWasDown(t *testing.T) {
	busyParallel(t)
	var mu sync.Mutex
	installed := map[string][]keys.RangeID{} // by member name
	c := testcluster.New(t, testcluster.Options{LogTruncateThreshold: 20, LogKeepEntries: 5, Configure: func(_ int, cfg *server.Config) {
		name := cfg.Name
		cfg.TestingBeforeApply = func(id keys.RangeID, out replica.ApplyOutput) {
			if out.SnapshotInstalled {
				mu.Lock()
				installed[name] = append(installed[name], id)
				mu.Unlock()
			}
		}
	}})
	l := c.WaitLeader()
	ctx := testcluster.Context(t, 60*time.Second)
	cli := c.Client(l)
	put := func(prefix string, n int) {
		t.Helper()
		for i := range n {
			for _, p := range []string{"a", "h", "q", "x"} {
				if _, err := cli.Put(ctx, fmt.Sprintf("%s%s%03d", p, prefix, i), "v"); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	put("before", 20)
	f := c.Followers(l)[0]
	f.Crash()
	rc := synodpb.NewRangesClient(cli.ActiveConnection())
	if _, err := rc.SplitRange(ctx, &synodpb.SplitRangeRequest{Keys: [][]byte{[]byte("g"), []byte("p")}}); err != nil {
		t.Fatalf("split: %v", err)
	}
	put("during", 30)
	if _, err := rc.SplitRange(ctx, &synodpb.SplitRangeRequest{Keys: [][]byte{[]byte("w")}}); err != nil {
		t.Fatalf("split: %v", err)
	}
	put("after", 30)
	wantSpans := "[,g) [g,p) [p,w) [w,)"
	if got := strings.Join(listSpans(ctx, t, cli), " "); got != wantSpans {
		t.Fatalf("ranges: got %s, want %s", got, wantSpans)
	}
	waitFor(t, 10*time.Second, "logs truncated", func() (bool, string) {
		for _, n := range c.Nodes() {
			if n == f {
				continue
			}
			if pub := n.Server().RangePublished(2); pub == nil || pub.LogFirst < 60 {
				return false, fmt.Sprintf("%s's log of range 2 starts below 60", n.Name)
			}
		}
		return true, ""
	})
	f.Restart()
	// A watch on the restarted member from revision 1, while its ranges
	// install snapshots and it learns of the new ones: every version once,
	// in order.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	wch := c.Client(f).Watch(wctx, "", clientv3.WithFromKey(), clientv3.WithRev(1))
	history := func(n *testcluster.Node) string { return mvccHistory(t, n) }
	want := history(l)
	fcli := c.Client(f)
	waitFor(t, 30*time.Second, "the restarted member's ranges and history", func() (bool, string) {
		if f.Server() == nil {
			return false, "not started"
		}
		got := strings.Join(listSpans(ctx, t, fcli), " ")
		h := history(f)
		return got == wantSpans && h == want, fmt.Sprintf("ranges %s, %d bytes of history, want %d", got, len(h), len(want))
	})
	var seen []byte
	total := strings.Count(want, "@")
	for n := total; n > 0; {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case resp, ok = <-wch:
		case <-time.After(20 * time.Second):
			t.Fatalf("watch on the restarted member: got %d of the %d versions after 20s", total-n, total)
		}
		if !ok || resp.Err() != nil {
			t.Fatalf("watch on the restarted member ended: %v", resp.Err())
		}
		for _, ev := range resp.Events {
			seen = fmt.Appendf(seen, "%s@%d ", ev.Kv.Key, ev.Kv.ModRevision)
			n--
		}
	}
	if got := sortedByRevision(string(seen)); got != sortedByRevision(want) || !revisionsIncrease(string(seen)) {
		t.Fatalf("watch on the restarted member: got %d bytes of events (in order: %v), want the %d of the history", len(seen), revisionsIncrease(string(seen)), len(want))
	}
	stopWatch()
	for _, k := range []string{"b/new", "i/new", "r/new", "y/new"} {
		if _, err := fcli.Put(ctx, k, "v"); err != nil {
			t.Fatalf("put %s through the restarted member: %v", k, err)
		}
	}
	resp, err := fcli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 4*80+4 {
		t.Fatalf("count through the restarted member: got %d %v, want %d", resp.Count, err, 4*80+4)
	}
	// It caught up by snapshots: of the split range, from after the
	// splits, and of each range they made, learned from the meta copies.
	mu.Lock()
	got := slices.Compact(slices.Sorted(slices.Values(installed[f.Name])))
	mu.Unlock()
	if len(got) < 4 || got[0] != keys.FirstDataRangeID {
		t.Fatalf("%s installed snapshots of ranges %v, want the four data ranges", f.Name, got)
	}
}

// TestRangesSplitPastTheirSize: a range whose keys take more than
// RangeMaxBytes on disk splits by itself at its middle key, again and
// again as it grows, and every key stays readable.
func TestRangesSplitPastTheirSize(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.RangeMaxBytes = 128 << 10
	}})
	l := c.WaitLeader()
	ctx := testcluster.Context(t, 120*time.Second)
	cli := c.Client(l)
	// Values that do not compress: sizes are of sstables on disk.
	rnd := rand.New(rand.NewPCG(1, 2))
	value := make([]byte, 500)
	// A leased key in the middle, which the splits move like any other.
	lease, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "key/60000", "leased", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	n := 1
	for round := range 2 {
		for range 400 {
			for i := range value {
				value[i] = byte(rnd.Uint32())
			}
			if _, err := cli.Put(ctx, fmt.Sprintf("key/%05d", n*7919%100000+1), string(value)); err != nil {
				t.Fatal(err)
			}
			n++
		}
		// Sizes are Pebble's estimate of its sstables: flush the
		// memtables.
		for _, node := range c.Nodes() {
			if err := node.Server().DB().Flush(); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 20*time.Second, "ranges split past their size", func() (bool, string) {
			spans := listSpans(ctx, t, cli)
			return len(spans) >= round+2, strings.Join(spans, " ")
		})
	}
	resp, err := cli.Get(ctx, "key/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != int64(n) {
		t.Fatalf("count: got %d %v, want %d", resp.Count, err, n)
	}
	// The leased key went with its range's splits; its lease still
	// holds it.
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatalf("revoke the lease: %v", err)
	}
	if resp, err := cli.Get(ctx, "key/60000"); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("leased key after its lease's revocation: got %v %v, want it gone", resp, err)
	}
	t.Logf("ranges: %s", strings.Join(listSpans(ctx, t, cli), " "))
}

// sortedByRevision sorts "key@rev " items by revision, then key.
func sortedByRevision(h string) string {
	items := strings.Fields(h)
	rev := func(it string) int64 {
		var r int64
		fmt.Sscan(it[strings.LastIndexByte(it, '@')+1:], &r)
		return r
	}
	slices.SortStableFunc(items, func(a, b string) int {
		if c := rev(a) - rev(b); c != 0 {
			return int(c)
		}
		return strings.Compare(a, b)
	})
	return strings.Join(items, " ")
}

// revisionsIncrease reports whether "key@rev " items come in revision order.
func revisionsIncrease(h string) bool {
	var prev int64
	for _, it := range strings.Fields(h) {
		var r int64
		fmt.Sscan(it[strings.LastIndexByte(it, '@')+1:], &r)
		if r < prev {
			return false
		}
		prev = r
	}
	return true
}

// mvccHistory returns a member's store's history: "key@rev " for every
// version, in key order.
func mvccHistory(t *testing.T, n *testcluster.Node) string {
	t.Helper()
	var h []byte
	if err := mvcc.ChangesSince(n.Server().DB(), nil, nil, 0, func(ch mvcc.Change) error {
		h = fmt.Appendf(h, "%s@%d ", ch.KV.Key, ch.KV.ModRevision)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return string(h)
}
