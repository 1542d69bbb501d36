package server_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// collectEvents reads events from a watch channel until n have arrived or
// the deadline passes.
func collectEvents(t *testing.T, wch clientv3.WatchChan, n int, d time.Duration) []*clientv3.Event {
	t.Helper()
	var out []*clientv3.Event
	timer := time.NewTimer(d)
	defer timer.Stop()
	for len(out) < n {
		select {
		case wr, ok := <-wch:
			if !ok {
				t.Fatalf("watch channel closed after %d of %d events", len(out), n)
			}
			if err := wr.Err(); err != nil {
				t.Fatalf("watch error after %d of %d events: %v", len(out), n, err)
			}
			out = append(out, wr.Events...)
		case <-timer.C:
			t.Fatalf("got %d of %d events before the deadline", len(out), n)
		}
	}
	return out
}

// checkRevisionsStrictlyIncrease fails on a duplicate or out-of-order event.
func checkRevisionsStrictlyIncrease(t *testing.T, evs []*clientv3.Event) {
	t.Helper()
	for i := 1; i < len(evs); i++ {
		if evs[i].Kv.ModRevision <= evs[i-1].Kv.ModRevision {
			t.Fatalf("event %d at revision %d follows revision %d", i, evs[i].Kv.ModRevision, evs[i-1].Kv.ModRevision)
		}
	}
}

// TestWatchHistoryThenLiveWithoutSeam starts a prefix watch in the past while
// a writer keeps writing, and checks that every write arrives exactly once,
// in order: history from MVCC, then live events, with nothing lost or
// repeated at the switch.
func TestWatchHistoryThenLiveWithoutSeam(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	cli := c.Client()
	var revs []int64
	for i := 0; i < 50; i++ {
		revs = append(revs, put(t, cli, fmt.Sprintf("w/%d", i%7), fmt.Sprint(i)).Header.Revision)
	}
	// Unrelated keys must not show up.
	put(t, cli, "other", "x")

	start := revs[10] // before the writer below starts appending to revs
	var mu sync.Mutex
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 50; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			r, err := cli.Put(context.Background(), fmt.Sprintf("w/%d", i%7), fmt.Sprint(i))
			if err != nil {
				t.Errorf("put: %v", err)
				return
			}
			mu.Lock()
			revs = append(revs, r.Header.Revision)
			mu.Unlock()
			if i == 400 {
				return
			}
		}
	}()
	wch := c.Client(c.Nodes()[2]).Watch(testcluster.Context(t, 60*time.Second), "w/", clientv3.WithPrefix(), clientv3.WithRev(start))
	<-done
	close(stop)
	mu.Lock()
	want := append([]int64(nil), revs[10:]...)
	mu.Unlock()
	evs := collectEvents(t, wch, len(want), 30*time.Second)
	checkRevisionsStrictlyIncrease(t, evs)
	if len(evs) != len(want) {
		t.Fatalf("events: got %d, want %d", len(evs), len(want))
	}
	for i, e := range evs {
		if e.Kv.ModRevision != want[i] || !strings.HasPrefix(string(e.Kv.Key), "w/") || e.Type != mvccpb.PUT {
			t.Fatalf("event %d: got %s %q at %d, want a put at %d", i, e.Type, e.Kv.Key, e.Kv.ModRevision, want[i])
		}
	}
}

func TestWatchAcrossLeaderCrash(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader()
	follower := c.Followers(leader)[0]
	ctx := testcluster.Context(t, 60*time.Second)
	first := put(t, c.Client(leader), "lc/start", "x").Header.Revision
	wch := c.Client(follower).Watch(ctx, "lc/", clientv3.WithPrefix(), clientv3.WithRev(first))

	// Writes go to the other follower, so they keep flowing after the crash.
	var writer *testcluster.Node
	for _, n := range c.Followers(leader) {
		if n != follower {
			writer = n
		}
	}
	wcli := c.Client(writer)
	acked := map[int64]bool{first: true}
	for i := 0; i < 300; i++ {
		if i == 100 {
			leader.Crash()
		}
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		r, err := wcli.Put(wctx, fmt.Sprintf("lc/%d", i), "v")
		cancel()
		if err == nil {
			acked[r.Header.Revision] = true
		}
	}
	last := put(t, wcli, "lc/end", "x").Header.Revision
	acked[last] = true
	var evs []*clientv3.Event
	deadline := time.After(30 * time.Second)
	for len(evs) == 0 || evs[len(evs)-1].Kv.ModRevision < last {
		select {
		case wr := <-wch:
			if err := wr.Err(); err != nil {
				t.Fatalf("watch error: %v", err)
			}
			evs = append(evs, wr.Events...)
		case <-deadline:
			t.Fatalf("watch did not reach revision %d", last)
		}
	}
	checkRevisionsStrictlyIncrease(t, evs)
	seen := map[int64]bool{}
	for _, e := range evs {
		seen[e.Kv.ModRevision] = true
	}
	for rev := range acked {
		if !seen[rev] {
			t.Fatalf("watch through %s lost the acknowledged write at revision %d", follower.Name, rev)
		}
	}
}

func TestWatchCompactedRevision(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	// One node: a watch is served by the node it reaches, which must have
	// applied the compaction (etcd behaves the same).
	cli := c.Client(c.Nodes()[0])
	r1 := put(t, cli, "k", "1")
	put(t, cli, "k", "2")
	r3 := put(t, cli, "k", "3")
	ctx := testcluster.Context(t, 20*time.Second)
	if _, err := cli.Compact(ctx, r3.Header.Revision); err != nil {
		t.Fatal(err)
	}
	wr := <-cli.Watch(ctx, "k", clientv3.WithRev(r1.Header.Revision))
	if !errors.Is(wr.Err(), rpctypes.ErrCompacted) || wr.CompactRevision != r3.Header.Revision {
		t.Fatalf("watch below compaction: got err %v compact revision %d, want %v at %d",
			wr.Err(), wr.CompactRevision, rpctypes.ErrCompacted, r3.Header.Revision)
	}
	// From the compaction revision itself, history is still there.
	evs := collectEvents(t, cli.Watch(ctx, "k", clientv3.WithRev(r3.Header.Revision)), 1, 10*time.Second)
	if string(evs[0].Kv.Value) != "3" {
		t.Fatalf("watch from the compaction revision: got %q, want 3", evs[0].Kv.Value)
	}
}

func TestWatchProgress(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.WatchProgressNotifyInterval = 100 * time.Millisecond
	}})
	c.WaitLeader()
	// One endpoint: a progress notification speaks for the node serving the
	// watch, which is only bound to have applied writes it answered itself
	// (with several endpoints the client balances RPCs across nodes).
	cli := c.Client(c.Nodes()[1])
	ctx := testcluster.Context(t, 20*time.Second)
	r := put(t, cli, "p", "1")
	wch := cli.Watch(ctx, "nothing-here", clientv3.WithProgressNotify())
	// Periodic notifications.
	for wr := range wch {
		if wr.Err() != nil {
			t.Fatal(wr.Err())
		}
		if wr.IsProgressNotify() {
			if wr.Header.Revision < r.Header.Revision {
				t.Fatalf("progress at revision %d, below the latest write %d", wr.Header.Revision, r.Header.Revision)
			}
			break
		}
	}
	// On request.
	wch2 := cli.Watch(ctx, "elsewhere")
	r2 := put(t, cli, "p", "2")
	if err := cli.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	for wr := range wch2 {
		if wr.IsProgressNotify() {
			if wr.Header.Revision < r2.Header.Revision {
				t.Fatalf("requested progress at revision %d, below the latest write %d", wr.Header.Revision, r2.Header.Revision)
			}
			return
		}
	}
	t.Fatalf("watch closed without a progress notification")
}

func TestManyWatchersOneStream(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	cli := c.Client(c.Nodes()[0])
	ctx := testcluster.Context(t, 60*time.Second)
	const n = 1000
	chans := make([]clientv3.WatchChan, n)
	for i := range chans {
		// Same context and options: clientv3 multiplexes them on one stream.
		chans[i] = cli.Watch(ctx, fmt.Sprintf("many/%04d", i))
	}
	// A watcher on the prefix and one with filters and prev_kv.
	all := cli.Watch(ctx, "many/", clientv3.WithPrefix())
	dels := cli.Watch(ctx, "many/", clientv3.WithPrefix(), clientv3.WithFilterPut(), clientv3.WithPrevKV())
	// Apply leaves the previous value of an overwrite unread: the hub
	// reads it for this watcher.
	overwrites := cli.Watch(ctx, "many/0003", clientv3.WithPrevKV())
	for i := 0; i < n; i++ {
		put(t, cli, fmt.Sprintf("many/%04d", i), fmt.Sprint(i))
	}
	if _, err := cli.Delete(ctx, "many/0007"); err != nil {
		t.Fatal(err)
	}
	put(t, cli, "many/0003", "three")
	if evs := collectEvents(t, overwrites, 2, 20*time.Second); evs[0].PrevKv != nil || evs[1].PrevKv == nil || string(evs[1].PrevKv.Value) != "3" {
		t.Fatalf("watcher of an overwritten key with prev_kv: got %+v, want the second put with previous value 3", evs)
	}
	for i, ch := range chans {
		evs := collectEvents(t, ch, 1, 20*time.Second)
		if got := string(evs[0].Kv.Value); got != fmt.Sprint(i) {
			t.Fatalf("watcher %d: got value %q, want %q", i, got, fmt.Sprint(i))
		}
	}
	if evs := collectEvents(t, all, n+1, 20*time.Second); evs[n].Type != mvccpb.DELETE {
		t.Fatalf("prefix watcher: last event got %s, want DELETE", evs[n].Type)
	}
	evs := collectEvents(t, dels, 1, 20*time.Second)
	if evs[0].Type != mvccpb.DELETE || evs[0].PrevKv == nil || string(evs[0].PrevKv.Value) != "7" {
		t.Fatalf("filtered watcher: got %+v, want the delete of many/0007 with its previous value", evs[0])
	}
}

// TestSlowWatcherDoesNotBlockWriters opens a raw watch stream and does not
// read it while much more than gRPC's flow-control window is written. The
// writes must all succeed, and the watcher, read at last, must get every
// event in order: it was left behind and caught up from history.
func TestSlowWatcherDoesNotBlockWriters(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	node := c.Nodes()[1]
	conn, err := grpc.NewClient(node.ClientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := testcluster.Context(t, 120*time.Second)
	stream, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{
		CreateRequest: &pb.WatchCreateRequest{Key: []byte("slow/"), RangeEnd: []byte("slow0")},
	}}); err != nil {
		t.Fatal(err)
	}
	cli := c.Client(node)
	value := strings.Repeat("v", 64<<10)
	const writes = 200  // ~12.5 MiB of events: beyond the stream's flow-control window and the watcher's buffer
	var written []int64 // the puts' revisions, in order
	for i := 0; i < writes; i++ {
		r, err := cli.Put(ctx, fmt.Sprintf("slow/%d", i%50), value)
		if err != nil {
			t.Fatalf("put %d while a watcher does not read: %v", i, err)
		}
		written = append(written, r.Header.Revision)
	}
	var revs []int64
	for len(revs) < writes {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv after %d events: %v", len(revs), err)
		}
		for _, e := range resp.Events {
			revs = append(revs, e.Kv.ModRevision)
		}
	}
	if !sort.SliceIsSorted(revs, func(i, j int) bool { return revs[i] < revs[j] }) {
		t.Fatalf("events out of order")
	}
	// One event per put, each at the put's revision (revisions may have
	// gaps: compare them, do not count them).
	for i := range revs {
		if revs[i] != written[i] {
			t.Fatalf("event %d at revision %d, want %d (the put's): a put missed or seen twice", i, revs[i], written[i])
		}
	}
	if st := node.Server().Hub().Stats(); st.LeftBehind == 0 {
		t.Fatalf("the watcher was never left behind: the test did not exercise catch-up (%+v)", st)
	}
}

func TestWatchCancelAndDuplicateID(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	node := c.Nodes()[0]
	conn, err := grpc.NewClient(node.ClientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := testcluster.Context(t, 30*time.Second)
	stream, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	create := func(id int64) {
		if err := stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{
			CreateRequest: &pb.WatchCreateRequest{Key: []byte("x"), WatchId: id},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	create(7)
	if r, _ := stream.Recv(); !r.Created || r.WatchId != 7 {
		t.Fatalf("create with id 7: got %+v", r)
	}
	create(7)
	if r, _ := stream.Recv(); !r.Canceled || r.WatchId != -1 || r.CancelReason == "" {
		t.Fatalf("duplicate id: got %+v, want a refusal", r)
	}
	create(0)
	if r, _ := stream.Recv(); !r.Created || r.WatchId != 0 {
		t.Fatalf("auto id: got %+v, want id 0 (etcd assigns from 0)", r)
	}
	if err := stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{
		CancelRequest: &pb.WatchCancelRequest{WatchId: 7},
	}}); err != nil {
		t.Fatal(err)
	}
	if r, _ := stream.Recv(); !r.Canceled || r.WatchId != 7 {
		t.Fatalf("cancel: got %+v", r)
	}
	put(t, c.Client(node), "x", "1")
	r, err := stream.Recv()
	if err != nil || r.WatchId != 0 || len(r.Events) != 1 {
		t.Fatalf("after cancel, only watcher 0 gets the event: got %+v, %v", r, err)
	}
}

// TestStuckWatchersStayWithinBudget: watchers on raw streams whose clients
// stop reading while many writes run. The node's queued watch bytes stay
// within its budget meanwhile; when the clients read again, every watcher
// gets every event once, in order, with the right previous values, and the
// node's queue empties.
func TestStuckWatchersStayWithinBudget(t *testing.T) {
	busyParallel(t)
	const (
		streamBudget = 128 << 10
		nodeBudget   = 320 << 10
		slack        = 16 << 10 // one revision, with its previous value, per stream
	)
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.WatchMaxStreamBytes = streamBudget
		cfg.WatchMaxQueuedBytes = nodeBudget
		cfg.MaxRequestBytes = 32 << 10 // responses of at most 32 KiB
	}})
	c.WaitLeader()
	node := c.Nodes()[1]
	ctx := testcluster.Context(t, 120*time.Second)
	type rawStream struct {
		stream pb.Watch_WatchClient
		prev   map[int64]bool // watch ID: with prev_kv
	}
	var streams []*rawStream
	for range 4 {
		// Static flow-control windows: the server can send 64 KiB on the
		// stream, and no more until this client reads.
		conn, err := grpc.NewClient(node.ClientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		stream, err := pb.NewWatchClient(conn).Watch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rs := &rawStream{stream: stream, prev: map[int64]bool{}}
		for i := range 10 {
			if err := stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
				Key: []byte("stuck/"), RangeEnd: []byte("stuck0"), WatchId: int64(i + 1), PrevKv: i%3 == 0,
			}}}); err != nil {
				t.Fatal(err)
			}
			rs.prev[int64(i+1)] = i%3 == 0
		}
		for created := 0; created < 10; {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if resp.Created {
				created++
			}
		}
		streams = append(streams, rs)
	}
	// The clients read no more. Each watcher is sent ~1.2 MiB while the
	// node may queue 320 KiB for all 40.
	cli := c.Client(c.Nodes()[0])
	value := strings.Repeat("v", 4<<10)
	const writes = 300
	var written []int64 // the puts' revisions (they may have gaps)
	for i := range writes {
		r, err := cli.Put(ctx, fmt.Sprintf("stuck/%d", i%40), value)
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		written = append(written, r.Header.Revision)
	}
	last := written[len(written)-1]
	hub := node.Server().Hub()
	// Let the watched node apply the last write.
	deadline := time.Now().Add(10 * time.Second)
	for hub.Revision() < last {
		if time.Now().After(deadline) {
			t.Fatalf("watched node at revision %d, want %d", hub.Revision(), last)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := hub.Stats()
	t.Logf("while the clients did not read: %+v", st)
	if st.PeakQueuedBytes > nodeBudget+4*slack {
		t.Fatalf("watch bytes queued on the node while its clients did not read: got a peak of %d, want at most %d (+%d)", st.PeakQueuedBytes, nodeBudget, 4*slack)
	}
	if st.OverBudget == 0 {
		t.Fatalf("no watcher went over budget: the test did not exercise the budgets (%+v)", st)
	}
	// The clients read again.
	for _, rs := range streams {
		got := map[int64][]*mvccpb.Event{}
		for n := 0; n < 10*writes; {
			resp, err := rs.stream.Recv()
			if err != nil {
				t.Fatalf("recv after %d events: %v", n, err)
			}
			got[resp.WatchId] = append(got[resp.WatchId], resp.Events...)
			n += len(resp.Events)
		}
		for id, evs := range got {
			if len(evs) != writes {
				t.Fatalf("watcher %d: got %d events, want %d", id, len(evs), writes)
			}
			prev := map[string]int64{}
			for i, e := range evs {
				if want := written[i]; e.Kv.ModRevision != want {
					t.Fatalf("watcher %d, event %d: got revision %d, want %d", id, i, e.Kv.ModRevision, want)
				}
				want := prev[string(e.Kv.Key)]
				if !rs.prev[id] {
					want = 0
				}
				if got := e.PrevKv.GetModRevision(); got != want {
					t.Fatalf("watcher %d (prev_kv %v), event at %d: got previous version at %d, want %d", id, rs.prev[id], e.Kv.ModRevision, got, want)
				}
				prev[string(e.Kv.Key)] = e.Kv.ModRevision
			}
		}
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		st = hub.Stats()
		if st.QueuedBytes == 0 && st.Unsynced == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the clients read everything: got %d bytes queued and %d watchers unsynced, want none", st.QueuedBytes, st.Unsynced)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWatchRequestsWaitForAReader: a client that creates watchers without
// reading the answers. The node stops taking its requests once a bounded
// number of answers wait to be sent, rather than queueing answers without
// end; once the client reads, every request is answered.
func TestWatchRequestsWaitForAReader(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	node := c.Nodes()[1]
	conn, err := grpc.NewClient(node.ClientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := testcluster.Context(t, 60*time.Second)
	stream, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	// The node's own watchers (the rate limiters' definitions) are there
	// before the client's.
	hub := node.Server().Hub()
	base := hub.Stats().Watchers
	sent := make(chan error, 1)
	go func() {
		for i := range n {
			err := stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
				Key: fmt.Appendf(nil, "w%d", i),
			}}})
			if err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	// The node takes requests until its answers fill the stream's window
	// and the queue; then the count stays put.
	watchers, stable := 0, time.Now()
	for time.Since(stable) < time.Second {
		if w := hub.Stats().Watchers - base; w != watchers {
			watchers, stable = w, time.Now()
		}
		if watchers == n {
			t.Fatalf("got all %d watchers created while the client read no answer, want the node to wait for it", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d watchers created before the node waited for the client", watchers)
	for created := 0; created < n; {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv after %d answers: %v", created, err)
		}
		if !resp.Created {
			t.Fatalf("got %+v, want a created answer", resp)
		}
		created++
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if got := hub.Stats().Watchers - base; got != n {
		t.Fatalf("watchers after the client read: got %d, want %d", got, n)
	}
}
