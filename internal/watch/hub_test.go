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
