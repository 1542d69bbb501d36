package watch

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keyindex"
	"github.com/synod-io/synod/internal/kv"
)

// store is a single-node KV state machine whose applied batches are
// published to the hub only when the test says so.
type store struct {
	t       *testing.T
	db      *pebble.DB
	meta    kv.Meta
	idx     *keyindex.Index // as on a node: overwrites leave previous values unread
	pending []kv.Event      // applied but not yet published
	views   int             // calls of view
}

func newStore(t *testing.T) *store {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &store{t: t, db: db, meta: kv.Meta{Revision: 1}, idx: keyindex.New(1)}
}

func (s *store) apply(fn func(a *kv.Applier) error) {
	s.t.Helper()
	b := s.db.NewIndexedBatch()
	defer b.Close()
	a := kv.Applier{Batch: b, Meta: &s.meta, Live: s.idx}
	if err := fn(&a); err != nil {
		s.t.Fatal(err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		s.t.Fatal(err)
	}
	s.pending = append(s.pending, a.Events...)
}

func (s *store) put(k, v string) {
	s.apply(func(a *kv.Applier) error {
		_, err := a.Put(&etcdpb.PutRequest{Key: []byte(k), Value: []byte(v)})
		return err
	})
}

func (s *store) del(k string) {
	s.apply(func(a *kv.Applier) error {
		_, err := a.DeleteRange(&etcdpb.DeleteRangeRequest{Key: []byte(k)})
		return err
	})
}

func (s *store) publish(h *Hub) {
	h.Publish(s.pending, s.meta)
	s.pending = nil
}

// view reads the committed state; like the node's, its counters come from
// the same moment as its data.
func (s *store) view() (pebble.Reader, kv.Meta, func(), error) {
	s.views++
	return s.db, s.meta, func() {}, nil
}

// sink records notifications.
type sink struct {
	mu       sync.Mutex
	notified map[*Watcher]int
}

func (k *sink) Notify(w *Watcher) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.notified == nil {
		k.notified = map[*Watcher]int{}
	}
	k.notified[w]++
}

// drain takes everything a watcher has, as its stream would.
func drain(h *Hub, w *Watcher) (evs []*mvccpb.Event, compacted int64) {
	for {
		r, ok := h.Take(w)
		if !ok {
			return evs, compacted
		}
		evs = append(evs, r.Events...)
		if r.CompactRevision > 0 {
			compacted = r.CompactRevision
		}
	}
}

// catchUp runs the hub's catch-up rounds until nothing moves.
func catchUp(h *Hub) {
	for i := 0; i < 1000 && h.catchUpRound(); i++ {
	}
}

func revs(evs []*mvccpb.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.Kv.ModRevision
	}
	return out
}

func checkContiguous(t *testing.T, evs []*mvccpb.Event, from, to int64) {
	t.Helper()
	if int64(len(evs)) != to-from+1 {
		t.Fatalf("events: got revisions %v, want %d..%d", revs(evs), from, to)
	}
	for i, e := range evs {
		if e.Kv.ModRevision != from+int64(i) {
			t.Fatalf("event %d: got revision %d, want %d (all: %v)", i, e.Kv.ModRevision, from+int64(i), revs(evs))
		}
	}
}

func TestLiveEventsFiltersAndPrevKV(t *testing.T) {
	s := newStore(t)
	h := NewHub(Config{View: s.view}, s.meta)
	k := &sink{}
	all := h.Watch(Options{Key: []byte("a"), RangeEnd: []byte("b")}, k)
	one := h.Watch(Options{Key: []byte("a1")}, k)
	noput := h.Watch(Options{Key: []byte("a"), RangeEnd: []byte("b"), NoPut: true, PrevKV: true}, k)
	s.put("a1", "x")
	s.put("a2", "y")
	s.put("b", "outside")
	s.del("a1")
	s.publish(h)
	if got := revs(mustDrain(t, h, all)); fmt.Sprint(got) != "[2 3 5]" {
		t.Fatalf("range watcher: got %v, want [2 3 5]", got)
	}
	if got := revs(mustDrain(t, h, one)); fmt.Sprint(got) != "[2 5]" {
		t.Fatalf("single-key watcher: got %v, want [2 5]", got)
	}
	evs := mustDrain(t, h, noput)
	if len(evs) != 1 || evs[0].Type != mvccpb.DELETE || string(evs[0].PrevKv.GetValue()) != "x" {
		t.Fatalf("delete-only watcher with prev_kv: got %+v", evs)
	}
	if k.notified[all] == 0 {
		t.Fatalf("watcher with events was not notified")
	}
}

// TestPrevValuesReadOnlyForWatchersThatAsk: apply leaves the previous value
// of an overwrite unread; the hub reads it for a watcher with prev_kv, live
// or catching up from the ring, and not at all when no watcher asks.
func TestPrevValuesReadOnlyForWatchersThatAsk(t *testing.T) {
	s := newStore(t)
	h := NewHub(Config{View: s.view}, s.meta)
	k := &sink{}
	plain := h.Watch(Options{Key: []byte("k")}, k)
	s.put("k", "v1")
	s.put("k", "v2")
	if !s.pending[1].PrevValueUnread {
		t.Fatal("overwrite read the previous value in apply")
	}
	s.publish(h)
	if evs := mustDrain(t, h, plain); len(evs) != 2 || evs[1].PrevKv != nil {
		t.Fatalf("watcher without prev_kv: got %v, want 2 events without previous versions", evs)
	}
	if s.views != 0 {
		t.Fatalf("views taken with no watcher asking for previous values: got %d, want 0", s.views)
	}
	withPrev := h.Watch(Options{Key: []byte("k"), PrevKV: true}, k)
	s.put("k", "v3")
	s.put("k", "v4")
	s.put("k", "v5")
	s.publish(h)
	evs := mustDrain(t, h, withPrev)
	if got := prevValues(evs); got != "v2 v3 v4" || evs[0].PrevKv.GetModRevision() != 3 {
		t.Fatalf("live watcher with prev_kv: got previous values %q (first at %d), want \"v2 v3 v4\" (first at 3)", got, evs[0].PrevKv.GetModRevision())
	}
	if s.views != 1 {
		t.Fatalf("views taken to read 3 previous values of one publish: got %d, want 1", s.views)
	}
	// The ring counts the values it now holds.
	h.mu.Lock()
	total := 0
	for _, entry := range h.mu.ring {
		want := 0
		for _, e := range entry.events {
			want += proto.Size(e.KV) + proto.Size(e.PrevKV)
		}
		if entry.bytes != want {
			t.Errorf("ring entry at %d: got %d bytes, want %d", entry.rev, entry.bytes, want)
		}
		total += entry.bytes
	}
	if h.mu.ringBytes != total {
		t.Errorf("ring bytes: got %d, want the entries' %d", h.mu.ringBytes, total)
	}
	h.mu.Unlock()
	// From the ring: the event at 3, whose previous value nobody read yet,
	// then those read for the live watcher.
	fromRing := h.Watch(Options{Key: []byte("k"), PrevKV: true, StartRevision: 3}, k)
	catchUp(h)
	if got := prevValues(mustDrain(t, h, fromRing)); got != "v1 v2 v3 v4" {
		t.Fatalf("watcher from the ring with prev_kv: got previous values %q, want \"v1 v2 v3 v4\"", got)
	}
}

func prevValues(evs []*mvccpb.Event) string {
	var vs []string
	for _, e := range evs {
		vs = append(vs, string(e.PrevKv.GetValue()))
	}
	return strings.Join(vs, " ")
}

func mustDrain(t *testing.T, h *Hub, w *Watcher) []*mvccpb.Event {
	t.Helper()
	evs, compacted := drain(h, w)
	if compacted != 0 {
		t.Fatalf("unexpected compaction at %d", compacted)
	}
	return evs
}

// TestFullBufferFallsBackToHistory overflows a watcher's buffer, then lets
// it drain and catch up, and checks nothing is lost or repeated.
func TestFullBufferFallsBackToHistory(t *testing.T) {
	s := newStore(t)
	h := NewHub(Config{View: s.view, MaxPendingEvents: 5, RingBytes: 1}, s.meta)
	w := h.Watch(Options{Key: []byte("k")}, &sink{})
	var got []*mvccpb.Event
	for i := 0; i < 100; i++ {
		s.put("k", fmt.Sprint(i))
		s.publish(h)
		if i%17 == 0 { // the stream drains now and then
			got = append(got, mustDrain(t, h, w)...)
			catchUp(h)
		}
	}
	for i := 0; i < 50; i++ {
		got = append(got, mustDrain(t, h, w)...)
		catchUp(h)
	}
	checkContiguous(t, got, 2, 101)
	if st := h.Stats(); st.LeftBehind == 0 || st.Unsynced != 0 {
		t.Fatalf("stats after overflow and catch-up: got %+v, want LeftBehind > 0 and nobody unsynced", st)
	}
	h.mu.Lock()
	synced := w.synced
	h.mu.Unlock()
	if !synced {
		t.Fatalf("watcher not synced after catching up")
	}
	s.put("k", "live")
	s.publish(h)
	if evs := mustDrain(t, h, w); len(evs) != 1 || evs[0].Kv.ModRevision != 102 {
		t.Fatalf("live event after catch-up: got %v", revs(evs))
	}
}

// TestCatchUpFromNewerView starts a watcher in the past while the store has
// applied batches the hub has not yet been given (the apply committed, its
// publish is late): the catch-up reads them from history, and their late
// publish must not deliver them twice.
func TestCatchUpFromNewerView(t *testing.T) {
	s := newStore(t)
	h := NewHub(Config{View: s.view}, s.meta)
	for i := 0; i < 5; i++ {
		s.put("k", fmt.Sprint(i))
	}
	s.publish(h) // revisions 2..6 published
	w := h.Watch(Options{Key: []byte("k"), StartRevision: 3}, &sink{})
	s.put("k", "late1") // 7, committed but not published
	s.put("k", "late2") // 8
	catchUp(h)          // reads 3..8 from a view at 8
	s.publish(h)        // the late publish of 7 and 8
	s.put("k", "live")  // 9
	s.publish(h)
	checkContiguous(t, mustDrain(t, h, w), 3, 9)
}

// TestRingClosesTheGap makes the history view lag the published revision
// and checks the ring supplies the missing events.
func TestRingClosesTheGap(t *testing.T) {
	s := newStore(t)
	var frozen *pebble.Snapshot
	var frozenMeta kv.Meta
	view := func() (pebble.Reader, kv.Meta, func(), error) {
		if frozen != nil {
			return frozen, frozenMeta, func() {}, nil
		}
		return s.view()
	}
	h := NewHub(Config{View: view}, s.meta)
	for i := 0; i < 3; i++ {
		s.put("k", fmt.Sprint(i))
	}
	s.publish(h) // 2..4
	frozen, frozenMeta = s.db.NewSnapshot(), s.meta
	defer frozen.Close()
	w := h.Watch(Options{Key: []byte("k"), StartRevision: 2}, &sink{})
	s.put("k", "a") // 5
	s.put("k", "b") // 6
	s.publish(h)
	catchUp(h) // history up to 4 from the frozen view, 5..6 from the ring
	h.mu.Lock()
	synced := w.synced
	h.mu.Unlock()
	if !synced {
		t.Fatalf("watcher not synced through the ring")
	}
	checkContiguous(t, mustDrain(t, h, w), 2, 6)
}

func TestCompactedStartIsReported(t *testing.T) {
	s := newStore(t)
	h := NewHub(Config{View: s.view}, s.meta)
	for i := 0; i < 5; i++ {
		s.put("k", fmt.Sprint(i))
	}
	s.apply(func(a *kv.Applier) error {
		_, err := a.Compact(&etcdpb.CompactionRequest{Revision: 5})
		return err
	})
	s.publish(h)
	w := h.Watch(Options{Key: []byte("k"), StartRevision: 3}, &sink{})
	catchUp(h)
	if _, compacted := drain(h, w); compacted != 5 {
		t.Fatalf("compacted start: got compaction revision %d, want 5", compacted)
	}
	ok := h.Watch(Options{Key: []byte("k"), StartRevision: 5}, &sink{})
	catchUp(h)
	checkContiguous(t, mustDrain(t, h, ok), 5, 6)
}

// TestResetAfterSnapshot: the state jumps (a snapshot was installed) and the
// events in between were never published; watchers catch up from history.
func TestResetAfterSnapshot(t *testing.T) {
	s := newStore(t)
	h := NewHub(Config{View: s.view}, s.meta)
	w := h.Watch(Options{Key: []byte("k")}, &sink{})
	s.put("k", "1")
	s.publish(h) // 2
	for i := 0; i < 4; i++ {
		s.put("k", fmt.Sprint(i))
	}
	s.pending = nil // as if these came in a snapshot
	h.Reset(s.meta)
	s.put("k", "after") // 7
	s.publish(h)
	catchUp(h)
	checkContiguous(t, mustDrain(t, h, w), 2, 7)
}

func TestSyncedAndProgress(t *testing.T) {
	s := newStore(t)
	h := NewHub(Config{View: s.view}, s.meta)
	s.put("k", "1")
	s.publish(h)
	w := h.Watch(Options{Key: []byte("other"), ProgressNotify: true}, &sink{})
	behind := h.Watch(Options{Key: []byte("k"), StartRevision: 1}, &sink{})
	if _, ok := h.Synced([]*Watcher{w, behind}); ok {
		t.Fatalf("synced reported while a watcher is behind")
	}
	catchUp(h)
	mustDrain(t, h, behind)
	rev, ok := h.Synced([]*Watcher{w, behind})
	if !ok || rev != 2 {
		t.Fatalf("synced: got %d, %v, want 2, true", rev, ok)
	}
	h.markProgress()
	r, ok := h.Take(w)
	if !ok || len(r.Events) != 0 || r.Revision != 2 {
		t.Fatalf("progress notification: got %+v, %v", r, ok)
	}
}

func TestCancelStopsDelivery(t *testing.T) {
	s := newStore(t)
	h := NewHub(Config{View: s.view}, s.meta)
	w := h.Watch(Options{Key: []byte("k")}, &sink{})
	h.Cancel(w)
	s.put("k", "1")
	s.publish(h)
	if evs, _ := drain(h, w); len(evs) != 0 {
		t.Fatalf("canceled watcher got %d events", len(evs))
	}
	h.mu.Lock()
	n := len(h.mu.all) + len(h.mu.singles) + len(h.mu.ranges)
	h.mu.Unlock()
	if n != 0 {
		t.Fatalf("canceled watcher still indexed")
	}
}

// TestRingStaysBounded publishes many revisions through a small ring and
// checks its invariants after each: contiguous revisions starting at
// ringFrom, the byte count right, and within RingBytes.
func TestRingStaysBounded(t *testing.T) {
	s := newStore(t)
	const limit = 4 << 10
	h := NewHub(Config{View: s.view, RingBytes: limit}, s.meta)
	for i := range 2000 {
		s.put(fmt.Sprintf("k%d", i%7), fmt.Sprint(i))
		s.publish(h)
		h.mu.Lock()
		ring, from, total := h.mu.ring, h.mu.ringFrom, h.mu.ringBytes
		h.mu.Unlock()
		if len(ring) == 0 || ring[0].rev != from {
			t.Fatalf("after %d puts: ring starts at %v, want ringFrom %d", i+1, ring[:min(1, len(ring))], from)
		}
		sum := 0
		for j, e := range ring {
			if e.rev != from+int64(j) {
				t.Fatalf("after %d puts: ring entry %d has revision %d, want %d", i+1, j, e.rev, from+int64(j))
			}
			sum += e.bytes
		}
		if sum != total || (total > limit && len(ring) > 1) {
			t.Fatalf("after %d puts: ring holds %d bytes (counted %d) in %d entries, want the count right and at most %d", i+1, sum, total, len(ring), limit)
		}
		if last := ring[len(ring)-1].rev; last != s.meta.Revision {
			t.Fatalf("after %d puts: ring ends at %d, want %d", i+1, last, s.meta.Revision)
		}
	}
}

// BenchmarkPublishFullRing measures publishing one put into a full ring, the
// steady state of a busy node.
func BenchmarkPublishFullRing(b *testing.B) {
	h := NewHub(Config{RingBytes: 16 << 20}, kv.Meta{Revision: 1})
	value := make([]byte, 256)
	rev := int64(1)
	publish := func() {
		rev++
		kvs := &mvccpb.KeyValue{Key: []byte("key"), Value: value, ModRevision: rev, CreateRevision: 2, Version: rev}
		h.Publish([]kv.Event{{Type: mvccpb.PUT, KV: kvs}}, kv.Meta{Revision: rev})
	}
	for h.mu.ringBytes < 16<<20-1024 {
		publish()
	}
	b.ReportAllocs()
	for b.Loop() {
		publish()
	}
}

// testStream is a stream's watchers and what its sender has delivered.
type testStream struct {
	sink *sink
	ws   []*Watcher
	got  map[*Watcher][]*mvccpb.Event
}

// send delivers everything the stream's watchers have, a chunk at a time,
// as the etcd API's sender does.
func (ts *testStream) send(h *Hub) {
	for _, w := range ts.ws {
		for {
			r, ok := h.TakeChunk(w, 16<<10)
			if !ok {
				break
			}
			if r.CompactRevision > 0 {
				panic("unexpected compaction")
			}
			ts.got[w] = append(ts.got[w], r.Events...)
			h.Release(w, r.Bytes)
		}
	}
}

// checkAccounting checks the hub's byte counts against its watchers' buffers
// and the budgets: a stream may exceed its budget by one revision of one
// watcher (slack), the hub not at all (nothing is in flight between checks).
func checkAccounting(t *testing.T, h *Hub, when string, slack int) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	total := 0
	for _, st := range h.mu.streams {
		pending := 0
		for w := range st.ws {
			if got := eventsBytes(w.pending); got != w.pendingBytes {
				t.Fatalf("%s: watcher %d counts %d pending bytes, holds %d", when, w.opts.ID, w.pendingBytes, got)
			}
			pending += w.pendingBytes
		}
		if st.pending != pending {
			t.Fatalf("%s: stream counts %d pending bytes, its watchers hold %d", when, st.pending, pending)
		}
		if st.queued() > h.cfg.MaxStreamBytes+slack {
			t.Fatalf("%s: stream queues %d bytes, want at most %d (+%d)", when, st.queued(), h.cfg.MaxStreamBytes, slack)
		}
		total += st.queued()
	}
	if total != h.mu.queued {
		t.Fatalf("%s: hub counts %d queued bytes, its streams %d", when, h.mu.queued, total)
	}
	if h.mu.queued > h.cfg.MaxQueuedBytes {
		t.Fatalf("%s: hub queues %d bytes, want at most %d", when, h.mu.queued, h.cfg.MaxQueuedBytes)
	}
}

// TestStuckStreamsStayWithinBudgets: many watchers on streams whose clients
// do not read, and many writes. The bytes queued per stream and per hub stay
// within their budgets, a stuck stream makes the hub read no history, a
// stream that reads is not held back by the stuck ones, and once the stuck
// streams drain every watcher gets every event once, in order, with the
// right previous values.
func TestStuckStreamsStayWithinBudgets(t *testing.T) {
	s := newStore(t)
	const (
		streamBudget = 8 << 10
		hubBudget    = 24 << 10
		valueSize    = 256
		slack        = 3 * valueSize // one revision: a value and its previous one
	)
	h := NewHub(Config{View: s.view, MaxStreamBytes: streamBudget, MaxQueuedBytes: hubBudget, RingBytes: 8 << 10}, s.meta)
	value := strings.Repeat("v", valueSize)
	var streams []*testStream
	for range 6 {
		ts := &testStream{sink: &sink{}, got: map[*Watcher][]*mvccpb.Event{}}
		for j := range 6 {
			opts := Options{ID: int64(j), Key: []byte("k/"), RangeEnd: []byte("k0"), PrevKV: j%4 == 0}
			ts.ws = append(ts.ws, h.Watch(opts, ts.sink))
		}
		streams = append(streams, ts)
	}
	healthy, stuck := streams[0], streams[1:]
	write := func(n int, key func(i int) string) {
		for i := range n {
			s.put(key(i), value)
			s.publish(h)
			healthy.send(h)
			catchUp(h)
			checkAccounting(t, h, fmt.Sprintf("after write %d", s.meta.Revision), slack)
			checkSeams(t, h, streams, fmt.Sprintf("after write %d", s.meta.Revision))
		}
	}
	// New keys: no previous value to read, so any view would be a history
	// read.
	write(100, func(i int) string { return fmt.Sprintf("k/new%d", i) })
	if s.views != 0 {
		t.Fatalf("views taken while the stuck streams did not read: got %d, want 0", s.views)
	}
	if st := h.Stats(); st.OverBudget == 0 {
		t.Fatalf("no watcher went over budget: the test did not exercise the budgets (%+v)", st)
	}
	// A watcher that starts in the past on a stuck stream gets nothing read
	// for it either.
	past := h.Watch(Options{ID: 100, Key: []byte("k/"), RangeEnd: []byte("k0"), StartRevision: 2}, stuck[0].sink)
	stuck[0].ws = append(stuck[0].ws, past)
	catchUp(h)
	h.mu.Lock()
	pastPending := len(past.pending)
	h.mu.Unlock()
	if s.views != 0 || pastPending != 0 {
		t.Fatalf("watcher in the past on a stuck stream: got %d views and %d events queued, want none", s.views, pastPending)
	}
	// Overwrites: watchers with prev_kv get previous values read.
	write(100, func(i int) string { return fmt.Sprintf("k/new%d", i%20) })
	for _, w := range healthy.ws {
		h.mu.Lock()
		synced := w.synced
		h.mu.Unlock()
		if !synced {
			t.Fatalf("a watcher of the stream that reads fell behind")
		}
	}
	// The stuck streams read again, while writes go on now and then.
	for round := 0; ; round++ {
		if round == 1000 {
			t.Fatalf("watchers still catching up after %d rounds: %+v", round, h.Stats())
		}
		for _, ts := range streams {
			ts.send(h)
		}
		catchUp(h)
		checkAccounting(t, h, fmt.Sprintf("catch-up round %d", round), slack)
		checkSeams(t, h, streams, fmt.Sprintf("catch-up round %d", round))
		if round%5 == 0 && round < 50 {
			write(1, func(int) string { return fmt.Sprintf("k/late%d", round) })
		}
		if st := h.Stats(); st.Unsynced == 0 && st.QueuedBytes == 0 && round >= 50 {
			break
		}
	}
	last := s.meta.Revision
	for _, ts := range streams {
		for _, w := range ts.ws {
			evs := ts.got[w]
			checkContiguous(t, evs, 2, last)
			prev := map[string]int64{}
			for _, e := range evs {
				if w.opts.PrevKV {
					if want := prev[string(e.Kv.Key)]; e.PrevKv.GetModRevision() != want || (want != 0 && string(e.PrevKv.Value) != value) {
						t.Fatalf("watcher %d, event at %d: got previous version at %d, want %d", w.opts.ID, e.Kv.ModRevision, e.PrevKv.GetModRevision(), want)
					}
				} else if e.PrevKv != nil {
					t.Fatalf("watcher %d without prev_kv got a previous version", w.opts.ID)
				}
				prev[string(e.Kv.Key)] = e.Kv.ModRevision
			}
		}
	}
	if st := h.Stats(); st.QueuedBytes != 0 || st.PeakQueuedBytes > hubBudget+slack {
		t.Fatalf("after draining: got %d bytes queued, peak %d, want 0 and at most %d (+%d)", st.QueuedBytes, st.PeakQueuedBytes, hubBudget, slack)
	}
}

func checkSeams(t *testing.T, h *Hub, streams []*testStream, when string) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, ts := range streams {
		for _, w := range ts.ws {
			want := int64(2)
			if g := ts.got[w]; len(g) > 0 {
				want = g[len(g)-1].Kv.ModRevision + 1
			}
			if len(w.pending) > 0 {
				if w.pending[0].Kv.ModRevision != want {
					t.Fatalf("%s: stream %d watcher %d: pending from %d, delivered up to %d (synced %v next %d)", when, i, w.opts.ID, w.pending[0].Kv.ModRevision, want-1, w.synced, w.next)
				}
			} else if w.next != want && w.compacted == 0 {
				t.Fatalf("%s: stream %d watcher %d: next %d, delivered up to %d (synced %v)", when, i, w.opts.ID, w.next, want-1, w.synced)
			}
		}
	}
}
