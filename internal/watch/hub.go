package watch

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/mvcc"
)

// ViewFunc returns a consistent view of the range and the KV counters of
// exactly that view; release must be called when done.
type ViewFunc func() (r pebble.Reader, m kv.Meta, release func(), err error)

// Sink is told when a watcher has something to send; it then calls Take.
// Notify must not block.
type Sink interface {
	Notify(w *Watcher)
}

// Config configures a Hub.
type Config struct {
	View ViewFunc
	// MaxPendingEvents and MaxPendingBytes bound the events queued for one
	// watcher (defaults 1024 and 4 MiB) before it is left behind to catch
	// up from history.
	MaxPendingEvents int
	MaxPendingBytes  int
	// MaxStreamBytes bounds the bytes queued for the watchers of one stream
	// (the watchers of one Sink): their pending events and the responses
	// its sender has taken and not yet released (default 16 MiB). A watcher
	// whose events do not fit is left behind, what it had queued dropped,
	// and the stream's watchers are caught up only as fast as it sends.
	MaxStreamBytes int
	// MaxQueuedBytes bounds the same over the hub (default 64 MiB): past
	// it, the streams with the most pending are made to drop it and catch
	// up later.
	MaxQueuedBytes int
	// RingBytes bounds the recent events kept in memory to bring watchers
	// back in sync (default 4 MiB). Every node keeps it full under writes,
	// and at GOGC=400 the heap grows to five times what is live: 16 MiB
	// cost a node about 70 MB of memory under a stream of 4 KiB puts.
	RingBytes int
	// HistoryWindow is the number of revisions one catch-up step reads
	// (default 10,000).
	HistoryWindow int64
	// ProgressInterval is how often watchers that asked for progress
	// notifications get one (default 10 minutes, as etcd).
	ProgressInterval time.Duration
	Logger           *slog.Logger
}

// Options describe one watcher, as in etcd's WatchCreateRequest.
type Options struct {
	ID             int64
	Key            []byte
	RangeEnd       []byte
	StartRevision  int64
	PrevKV         bool
	NoPut          bool
	NoDelete       bool
	ProgressNotify bool
	// Fragment lets the stream split a response too large for one message.
	Fragment bool
	// Created, if set, is called by Watch with the hub's revision, under
	// the hub's lock, before the watcher can be notified of anything: a
	// stream queues its created response there, so that the response
	// precedes every event and a watcher of "now" (StartRevision 0)
	// starts right after the revision the response names. It must not
	// call the hub.
	Created func(rev int64)
}

// Watcher is one watch. Its fields behind the hub's lock are only touched
// by the hub.
type Watcher struct {
	hub   *Hub
	sink  Sink
	st    *stream // the watchers of sink
	opts  Options
	start []byte
	end   []byte // nil: unbounded

	// Guarded by hub.mu.
	next         int64 // first revision not yet queued
	synced       bool
	removed      bool
	pending      []*mvccpb.Event
	pendingBytes int // counted in st and the hub's queued bytes
	compacted    int64
	progress     bool
}

// ID returns the watcher's ID.
func (w *Watcher) ID() int64 { return w.opts.ID }

// Options returns the watcher's options.
func (w *Watcher) Options() Options { return w.opts }

func (w *Watcher) contains(key []byte) bool {
	return bytes.Compare(key, w.start) >= 0 && (w.end == nil || bytes.Compare(key, w.end) < 0)
}

func (w *Watcher) wants(t mvccpb.Event_EventType) bool {
	return !(t == mvccpb.Event_PUT && w.opts.NoPut) && !(t == mvccpb.Event_DELETE && w.opts.NoDelete)
}

func (w *Watcher) event(t mvccpb.Event_EventType, kvv, prev *mvccpb.KeyValue) *mvccpb.Event {
	e := &mvccpb.Event{Type: t, Kv: kvv}
	if w.opts.PrevKV {
		e.PrevKv = prev
	}
	return e
}

// eventLocked builds w's event for e, a published event (in the ring). For
// a watcher that asks for previous versions it first reads e's previous
// value if apply left it unread (kv.Event.PrevValueUnread), once for every
// watcher: the ring keeps what was read, and counts its bytes.
func (h *Hub) eventLocked(w *Watcher, e *kv.Event, pr *prevReader) *mvccpb.Event {
	if w.opts.PrevKV && e.PrevValueUnread {
		before := proto.Size(e.PrevKV)
		if err := pr.read(e); err != nil {
			// As etcd does when it cannot read it, send the event without it.
			h.cfg.Logger.Warn("watch: cannot read a previous version", "key", string(e.PrevKV.Key), "revision", e.PrevKV.ModRevision, "err", err)
			e.PrevKV, e.PrevValueUnread = nil, false
		}
		h.addRingBytesLocked(e.KV.ModRevision, proto.Size(e.PrevKV)-before)
	}
	return w.event(e.Type, e.KV, e.PrevKV)
}

// prevReader reads the previous values of one pass over published events
// from one view of the store, taken when first needed.
type prevReader struct {
	h       *Hub
	r       pebble.Reader
	release func()
	err     error
}

func (p *prevReader) read(e *kv.Event) error {
	if p.r == nil && p.err == nil {
		p.r, _, p.release, p.err = p.h.cfg.View()
	}
	if p.err != nil {
		return p.err
	}
	return e.ReadPrev(p.r)
}

func (p *prevReader) close() {
	if p.release != nil {
		p.release()
	}
}

// Response is what a watcher has to send.
type Response struct {
	Events []*mvccpb.Event
	// Revision is the header revision: every event of the watcher up to it
	// has been delivered.
	Revision int64
	// CompactRevision, if set, means the watcher asked for compacted
	// history and is cancelled.
	CompactRevision int64
	// Bytes is the size of Events as the hub counts it (TakeChunk counts
	// them against the stream until they are released).
	Bytes int
}

// stream is the accounting of the watchers of one Sink, whose responses one
// sender delivers in turn. Guarded by hub.mu.
type stream struct {
	ws       map[*Watcher]struct{}
	pending  int // bytes pending for its watchers
	inflight int // bytes taken by TakeChunk and not yet released
	// waitDrain is set when one of its watchers was left behind for want of
	// room: none of them is caught up until the sender shows it is moving
	// (it releases a sent response, or asks and finds nothing), so that a
	// stream whose client stopped reading makes the hub read no history.
	waitDrain bool
}

func (s *stream) queued() int { return s.pending + s.inflight }

type ringEntry struct {
	rev    int64
	events []kv.Event
	bytes  int
}

// Hub fans out the events of one range. See the package comment.
type Hub struct {
	cfg    Config
	logger *slog.Logger
	wake   chan struct{}

	mu struct {
		sync.Mutex
		rev        int64 // every event up to rev has been published
		compactRev int64
		ring       []ringEntry
		ringBytes  int
		ringFrom   int64 // the ring holds every event with revision >= ringFrom
		all        map[*Watcher]struct{}
		unsynced   map[*Watcher]struct{}
		singles    map[string]map[*Watcher]struct{}
		ranges     map[string]*rangeGroup
		streams    map[Sink]*stream
		queued     int // bytes pending or in flight, over all streams
		peakQueued int
		leftBehind int64
		overBudget int64
	}
}

// Stats describes the hub's watchers.
type Stats struct {
	Watchers int
	Unsynced int
	// LeftBehind counts the times a synced watcher had no room for its
	// events and had to catch up from history.
	LeftBehind int64
	// OverBudget counts the times a watcher was left behind, or dropped
	// what it had queued, because its stream's or the hub's byte budget
	// was spent.
	OverBudget int64
	// QueuedBytes is what is queued for all watchers: pending events and
	// responses taken by senders and not yet released; PeakQueuedBytes is
	// its highest value yet.
	QueuedBytes     int
	PeakQueuedBytes int
}

// Stats returns the hub's current statistics.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Stats{
		Watchers: len(h.mu.all), Unsynced: len(h.mu.unsynced),
		LeftBehind: h.mu.leftBehind, OverBudget: h.mu.overBudget,
		QueuedBytes: h.mu.queued, PeakQueuedBytes: h.mu.peakQueued,
	}
}

type rangeGroup struct {
	start, end []byte
	ws         map[*Watcher]struct{}
}

// NewHub returns a hub whose published revision is m.Revision.
func NewHub(cfg Config, m kv.Meta) *Hub {
	if cfg.MaxPendingEvents <= 0 {
		cfg.MaxPendingEvents = 1024
	}
	if cfg.MaxPendingBytes <= 0 {
		cfg.MaxPendingBytes = 4 << 20
	}
	if cfg.MaxStreamBytes <= 0 {
		cfg.MaxStreamBytes = 16 << 20
	}
	if cfg.MaxQueuedBytes <= 0 {
		cfg.MaxQueuedBytes = 64 << 20
	}
	if cfg.RingBytes <= 0 {
		cfg.RingBytes = 4 << 20
	}
	if cfg.HistoryWindow <= 0 {
		cfg.HistoryWindow = 10000
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Hub{cfg: cfg, logger: cfg.Logger, wake: make(chan struct{}, 1)}
	h.mu.rev, h.mu.compactRev, h.mu.ringFrom = m.Revision, m.CompactRevision, m.Revision+1
	h.mu.all = map[*Watcher]struct{}{}
	h.mu.unsynced = map[*Watcher]struct{}{}
	h.mu.singles = map[string]map[*Watcher]struct{}{}
	h.mu.ranges = map[string]*rangeGroup{}
	h.mu.streams = map[Sink]*stream{}
	return h
}

// Revision returns the published revision.
func (h *Hub) Revision() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mu.rev
}

func (h *Hub) signal() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// Watch registers a watcher. With no start revision it sees events after the
// published revision; otherwise it starts at StartRevision, from history if
// that is in the past.
func (h *Hub) Watch(opts Options, sink Sink) *Watcher {
	w := &Watcher{hub: h, sink: sink, opts: opts, start: bytes.Clone(opts.Key)}
	switch {
	case len(opts.RangeEnd) == 0:
		w.end = append(bytes.Clone(opts.Key), 0)
	case len(opts.RangeEnd) == 1 && opts.RangeEnd[0] == 0:
		w.end = nil
	default:
		w.end = bytes.Clone(opts.RangeEnd)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mu.all[w] = struct{}{}
	w.st = h.mu.streams[sink]
	if w.st == nil {
		w.st = &stream{ws: map[*Watcher]struct{}{}}
		h.mu.streams[sink] = w.st
	}
	w.st.ws[w] = struct{}{}
	if opts.Created != nil {
		opts.Created(h.mu.rev)
		w.opts.Created = nil
	}
	w.next = opts.StartRevision
	if w.next <= 0 {
		w.next = h.mu.rev + 1
	}
	if w.next > h.mu.rev {
		h.syncLocked(w)
		return w
	}
	h.mu.unsynced[w] = struct{}{}
	h.signal()
	return w
}

// Cancel removes a watcher; nothing more is queued for it.
func (h *Hub) Cancel(w *Watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(w)
}

func (h *Hub) removeLocked(w *Watcher) {
	if w.removed {
		return
	}
	w.removed = true
	h.unsyncLocked(w)
	delete(h.mu.unsynced, w)
	delete(h.mu.all, w)
	h.dropPendingLocked(w)
	delete(w.st.ws, w)
	h.forgetStreamLocked(w)
}

// forgetStreamLocked drops the accounting of w's stream once it has neither
// watchers nor responses in flight.
func (h *Hub) forgetStreamLocked(w *Watcher) {
	if len(w.st.ws) == 0 && w.st.inflight == 0 && h.mu.streams[w.sink] == w.st {
		delete(h.mu.streams, w.sink)
	}
}

func (h *Hub) syncLocked(w *Watcher) {
	if w.synced {
		return
	}
	delete(h.mu.unsynced, w)
	w.synced = true
	if w.end != nil && len(w.end) == len(w.start)+1 && w.end[len(w.end)-1] == 0 && bytes.HasPrefix(w.end, w.start) {
		set := h.mu.singles[string(w.start)]
		if set == nil {
			set = map[*Watcher]struct{}{}
			h.mu.singles[string(w.start)] = set
		}
		set[w] = struct{}{}
		return
	}
	rk := rangeKey(w.start, w.end)
	g := h.mu.ranges[rk]
	if g == nil {
		g = &rangeGroup{start: w.start, end: w.end, ws: map[*Watcher]struct{}{}}
		h.mu.ranges[rk] = g
	}
	g.ws[w] = struct{}{}
}

// unsyncLocked takes a watcher out of the synced index.
func (h *Hub) unsyncLocked(w *Watcher) {
	if !w.synced {
		return
	}
	w.synced = false
	if set, ok := h.mu.singles[string(w.start)]; ok {
		delete(set, w)
		if len(set) == 0 {
			delete(h.mu.singles, string(w.start))
		}
	}
	rk := rangeKey(w.start, w.end)
	if g, ok := h.mu.ranges[rk]; ok {
		delete(g.ws, w)
		if len(g.ws) == 0 {
			delete(h.mu.ranges, rk)
		}
	}
}

func rangeKey(start, end []byte) string {
	return fmt.Sprintf("%d:%s%s", len(start), start, end)
}

func eventBytes(e *mvccpb.Event) int { return proto.Size(e) }

func eventsBytes(evs []*mvccpb.Event) int {
	n := 0
	for _, e := range evs {
		n += eventBytes(e)
	}
	return n
}

// fitsLocked reports whether n more events of size bytes fit in w's buffer,
// its stream's budget and, when node is set, the hub's. A limit whose queue
// is empty lets anything in, so that a revision larger than a budget is
// still delivered, whole, and a stream with nothing queued always moves.
func (h *Hub) fitsLocked(w *Watcher, n, size int, node bool) bool {
	if len(w.pending) > 0 && (len(w.pending)+n > h.cfg.MaxPendingEvents || w.pendingBytes+size > h.cfg.MaxPendingBytes) {
		return false
	}
	q := w.st.queued()
	if q > 0 && q+size > h.cfg.MaxStreamBytes {
		return false
	}
	return !node || q == 0 || h.mu.queued+size <= h.cfg.MaxQueuedBytes
}

// canCatchUpLocked reports whether an unsynced watcher may be given more
// from history: its stream is draining and there is room for something.
func (h *Hub) canCatchUpLocked(w *Watcher) bool {
	return !w.removed && !w.synced && w.compacted == 0 && !w.st.waitDrain && h.fitsLocked(w, 1, 1, true)
}

// budgetLocked is how much an unsynced watcher may be given in one step:
// events and bytes, of which it is always given at least one revision.
func (h *Hub) budgetLocked(w *Watcher) (events, size int) {
	events = h.cfg.MaxPendingEvents - len(w.pending)
	size = min(h.cfg.MaxPendingBytes-w.pendingBytes, h.cfg.MaxStreamBytes-w.st.queued(), h.cfg.MaxQueuedBytes-h.mu.queued)
	return max(events, 1), max(size, 1)
}

// addPendingLocked queues evs, of size bytes, for w.
func (h *Hub) addPendingLocked(w *Watcher, evs []*mvccpb.Event, size int) {
	w.pending = append(w.pending, evs...)
	w.pendingBytes += size
	w.st.pending += size
	h.mu.queued += size
	h.mu.peakQueued = max(h.mu.peakQueued, h.mu.queued)
}

// dropPendingLocked empties w's buffer.
func (h *Hub) dropPendingLocked(w *Watcher) {
	w.st.pending -= w.pendingBytes
	h.mu.queued -= w.pendingBytes
	w.pending, w.pendingBytes = nil, 0
}

// leaveBehindLocked moves a synced watcher that has no room for the events
// of revision rev to catching up from history. What it had queued is
// dropped: it will be read again, from the ring or from history, when its
// stream has drained (the stream waits for its sender before anything more
// is read for its watchers). Its sender is notified, so that an idle one
// finds it has nothing and the stream goes on.
func (h *Hub) leaveBehindLocked(w *Watcher, rev int64, overBudget bool) {
	if len(w.pending) > 0 {
		rev = w.pending[0].Kv.ModRevision
	}
	h.dropPendingLocked(w)
	h.unsyncLocked(w)
	h.mu.unsynced[w] = struct{}{}
	w.next = rev
	w.st.waitDrain = true
	h.mu.leftBehind++
	if overBudget {
		h.mu.overBudget++
	}
	w.sink.Notify(w)
	h.signal()
}

// trimLocked makes room for need more bytes in the hub's budget: while they
// do not fit, the stream with the most pending drops it, all its watchers
// falling back to catch-up. A stream that does not read holds the most, so
// it goes first; responses already in flight cannot be taken back.
func (h *Hub) trimLocked(need int) {
	for h.mu.queued+need > h.cfg.MaxQueuedBytes {
		var big *stream
		for _, st := range h.mu.streams {
			if st.pending > 0 && (big == nil || st.pending > big.pending) {
				big = st
			}
		}
		if big == nil {
			return
		}
		for w := range big.ws {
			if len(w.pending) == 0 {
				continue
			}
			if w.synced {
				h.leaveBehindLocked(w, w.next, true)
				continue
			}
			// Caught up this far from history: it goes on from there later.
			w.next = w.pending[0].Kv.ModRevision
			h.dropPendingLocked(w)
			big.waitDrain = true
			h.mu.overBudget++
			w.sink.Notify(w)
		}
	}
}

// queueLocked queues the events of revision rev for a synced watcher, or
// leaves the watcher behind if they do not fit.
func (h *Hub) queueLocked(w *Watcher, rev int64, evs []*mvccpb.Event) {
	if !w.synced {
		return // left behind by trimLocked while this revision was fanned out
	}
	size := eventsBytes(evs)
	if !h.fitsLocked(w, len(evs), size, false) {
		own := len(w.pending) > 0 && (len(w.pending)+len(evs) > h.cfg.MaxPendingEvents || w.pendingBytes+size > h.cfg.MaxPendingBytes)
		h.leaveBehindLocked(w, rev, !own)
		return
	}
	if h.mu.queued+size > h.cfg.MaxQueuedBytes {
		h.trimLocked(size)
		if !w.synced {
			return // its own stream had the most
		}
		if h.mu.queued+size > h.cfg.MaxQueuedBytes && w.st.queued() > 0 {
			h.leaveBehindLocked(w, rev, true)
			return
		}
	}
	h.addPendingLocked(w, evs, size)
	w.next = rev + 1
	w.sink.Notify(w)
}

// Publish hands the hub the events of an applied batch, in revision order,
// and the KV counters after it. It never blocks on watchers.
func (h *Hub) Publish(events []kv.Event, m kv.Meta) {
	h.mu.Lock()
	defer h.mu.Unlock()
	pr := &prevReader{h: h}
	defer pr.close()
	targets := map[*Watcher][]*mvccpb.Event{}
	for i := 0; i < len(events); {
		rev := events[i].KV.ModRevision
		j := i + 1
		for j < len(events) && events[j].KV.ModRevision == rev {
			j++
		}
		group := events[i:j]
		i = j
		h.appendRingLocked(rev, group)
		for k := range group {
			e := &group[k]
			h.matchLocked(e.KV.Key, func(w *Watcher) {
				if w.next > rev || !w.wants(e.Type) {
					return
				}
				targets[w] = append(targets[w], h.eventLocked(w, e, pr))
			})
		}
		for w, evs := range targets {
			h.queueLocked(w, rev, evs)
			delete(targets, w)
		}
	}
	if m.Revision > h.mu.rev {
		h.mu.rev = m.Revision
	}
	h.mu.compactRev = m.CompactRevision
}

func (h *Hub) matchLocked(key []byte, fn func(w *Watcher)) {
	for w := range h.mu.singles[string(key)] {
		fn(w)
	}
	for _, g := range h.mu.ranges {
		if bytes.Compare(key, g.start) >= 0 && (g.end == nil || bytes.Compare(key, g.end) < 0) {
			for w := range g.ws {
				fn(w)
			}
		}
	}
}

// addRingBytesLocked counts n more bytes in the ring entry of revision rev,
// if the ring still holds it: a previous value read after publishing.
func (h *Hub) addRingBytesLocked(rev int64, n int) {
	i, ok := slices.BinarySearchFunc(h.mu.ring, rev, func(e ringEntry, rev int64) int { return cmp.Compare(e.rev, rev) })
	if ok {
		h.mu.ring[i].bytes += n
		h.mu.ringBytes += n
	}
}

func (h *Hub) appendRingLocked(rev int64, group []kv.Event) {
	size := 0
	for _, e := range group {
		size += proto.Size(e.KV) + proto.Size(e.PrevKV)
	}
	if len(h.mu.ring) == 0 {
		h.mu.ringFrom = rev
	}
	h.mu.ring = append(h.mu.ring, ringEntry{rev: rev, events: group, bytes: size})
	h.mu.ringBytes += size
	drop := 0
	for h.mu.ringBytes > h.cfg.RingBytes && drop < len(h.mu.ring)-1 {
		h.mu.ringBytes -= h.mu.ring[drop].bytes
		drop++
	}
	if drop > 0 {
		// Drop from the front by reslicing, clearing the dropped entries so
		// their events can be collected; append copies the live entries
		// when it outgrows the array. Copying the whole ring on every drop,
		// as this once did, made each write cost O(ring) once the ring was
		// full, and 1,000 writers a few hundred ms per batch.
		clear(h.mu.ring[:drop])
		h.mu.ring = h.mu.ring[drop:]
		h.mu.ringFrom = h.mu.ring[0].rev
	}
}

// Reset is called when the range's state was replaced by a snapshot: the
// events between the old and the new revision were never published, so every
// watcher catches up from history.
func (h *Hub) Reset(m kv.Meta) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.mu.all {
		if w.synced {
			h.unsyncLocked(w)
			w.next = max(w.next, h.mu.rev+1)
			h.mu.unsynced[w] = struct{}{}
		}
	}
	h.mu.ring, h.mu.ringBytes = nil, 0
	h.mu.rev = max(h.mu.rev, m.Revision)
	h.mu.ringFrom = h.mu.rev + 1
	h.mu.compactRev = m.CompactRevision
	h.signal()
}

// Take returns everything the watcher has to send, if anything: for a
// consumer in this process, which is done with it on return.
func (h *Hub) Take(w *Watcher) (Response, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	resp, ok := h.takeLocked(w, 0)
	h.mu.queued -= resp.Bytes
	h.drainedLocked(w.st)
	return resp, ok
}

// TakeChunk returns what the watcher has to send, if anything, in whole
// revisions of about maxBytes at most (at least one revision); the rest
// stays pending, and the sink is notified again. The events taken stay
// counted against the stream until Release is called with their Bytes, so
// that a sender blocked on a client that does not read holds the budget it
// uses.
func (h *Hub) TakeChunk(w *Watcher, maxBytes int) (Response, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	resp, ok := h.takeLocked(w, maxBytes)
	if !ok {
		// The sender asks and finds nothing: it is not stuck.
		h.drainedLocked(w.st)
		return resp, false
	}
	w.st.inflight += resp.Bytes
	return resp, true
}

// Release tells the hub that n bytes taken by TakeChunk for a watcher of
// the same stream as w are sent (or will never be): the stream is draining.
func (h *Hub) Release(w *Watcher, n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w.st.inflight -= n
	h.mu.queued -= n
	h.drainedLocked(w.st)
	h.forgetStreamLocked(w)
}

// drainedLocked notes that st's sender is moving: its unsynced watchers may
// be caught up again.
func (h *Hub) drainedLocked(st *stream) {
	if st.waitDrain {
		st.waitDrain = false
		h.signal()
	}
}

// takeLocked takes w's response: all its pending events, or with maxBytes
// > 0 whole revisions of about that many bytes. The bytes taken leave the
// stream's pending count; the caller decides where they go.
func (h *Hub) takeLocked(w *Watcher, maxBytes int) (Response, bool) {
	if w.compacted > 0 {
		rev := w.compacted
		w.compacted = 0
		return Response{CompactRevision: rev, Revision: h.mu.rev}, true
	}
	if len(w.pending) > 0 {
		n, size := len(w.pending), w.pendingBytes
		if maxBytes > 0 && size > maxBytes {
			n, size = revisionChunk(w.pending, maxBytes)
		}
		evs := w.pending[:n:n]
		w.st.pending -= size
		w.pendingBytes -= size
		if n == len(w.pending) {
			w.pending = nil
		} else {
			// A copy: the array left to evs would keep what was sent.
			w.pending = slices.Clone(w.pending[n:])
			w.sink.Notify(w) // the rest is for the sender's next turn
		}
		w.progress = false
		rev := evs[len(evs)-1].Kv.ModRevision
		if w.synced && len(w.pending) == 0 {
			rev = max(rev, h.mu.rev)
		}
		if !w.synced {
			h.signal() // room again: keep catching up
		}
		return Response{Events: evs, Revision: rev, Bytes: size}, true
	}
	if w.progress && w.synced {
		w.progress = false
		return Response{Revision: h.mu.rev}, true
	}
	return Response{}, false
}

// revisionChunk returns how many of evs make whole revisions of at most
// limit bytes (at least one revision), and their size.
func revisionChunk(evs []*mvccpb.Event, limit int) (n, size int) {
	for n < len(evs) {
		rev := evs[n].Kv.ModRevision
		end, revSize := n, 0
		for end < len(evs) && evs[end].Kv.ModRevision == rev {
			revSize += eventBytes(evs[end])
			end++
		}
		if n > 0 && size+revSize > limit {
			break
		}
		size += revSize
		n = end
	}
	return n, size
}

// Synced reports whether all the given watchers are synced with nothing
// pending, and the published revision: a progress notification at that
// revision is then truthful for all of them.
func (h *Hub) Synced(ws []*Watcher) (int64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, w := range ws {
		if !w.removed && (!w.synced || len(w.pending) > 0 || w.compacted > 0) {
			return 0, false
		}
	}
	return h.mu.rev, true
}

// Run catches unsynced watchers up and sends progress notifications until
// ctx is done.
func (h *Hub) Run(ctx context.Context) {
	retry := time.NewTicker(100 * time.Millisecond)
	defer retry.Stop()
	progress := time.NewTicker(h.cfg.ProgressInterval)
	defer progress.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		case <-retry.C:
		case <-progress.C:
			h.markProgress()
			continue
		}
		if h.catchUpRound() {
			h.signal() // more to do right away
		}
	}
}

func (h *Hub) markProgress() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.mu.all {
		if w.synced && w.opts.ProgressNotify && len(w.pending) == 0 {
			w.progress = true
			w.sink.Notify(w)
		}
	}
}

// catchUpRound advances every unsynced watcher that may be given more by
// one step and reports whether any of them moved and could go on at once.
func (h *Hub) catchUpRound() bool {
	h.mu.Lock()
	var ws []*Watcher
	for w := range h.mu.unsynced {
		if h.canCatchUpLocked(w) {
			ws = append(ws, w)
		}
	}
	h.mu.Unlock()
	if len(ws) == 0 {
		return false
	}
	v := &catchUpView{h: h}
	defer v.close()
	more := false
	for _, w := range ws {
		again, err := h.catchUp(w, v)
		if err != nil {
			h.logger.Error("watch catch-up", "watch", w.opts.ID, "err", err)
			continue
		}
		more = more || again
	}
	return more
}

// catchUpView is the view of one catch-up round, opened when a watcher
// first needs history the ring does not hold.
type catchUpView struct {
	h       *Hub
	r       pebble.Reader
	m       kv.Meta
	release func()
}

func (v *catchUpView) get() (pebble.Reader, kv.Meta, error) {
	if v.r == nil {
		r, m, release, err := v.h.cfg.View()
		if err != nil {
			return nil, kv.Meta{}, fmt.Errorf("open view: %w", err)
		}
		v.r, v.m, v.release = r, m, release
	}
	return v.r, v.m, nil
}

func (v *catchUpView) close() {
	if v.release != nil {
		v.release()
	}
}

// catchUp moves one watcher forward, from the ring if it holds the
// watcher's next revision, else from history read in the round's view, and
// syncs it when it has caught up. It reports whether the watcher moved and
// may go on at once.
func (h *Hub) catchUp(w *Watcher, v *catchUpView) (bool, error) {
	h.mu.Lock()
	if !h.canCatchUpLocked(w) {
		h.mu.Unlock()
		return false, nil
	}
	from := w.next
	if from < h.mu.compactRev {
		h.compactedLocked(w, h.mu.compactRev)
		h.mu.Unlock()
		return false, nil
	}
	if from >= h.mu.ringFrom || from > h.mu.rev {
		defer h.mu.Unlock()
		h.fromRingLocked(w, true)
		h.afterCatchUpLocked(w)
		return w.next > from && h.canCatchUpLocked(w), nil
	}
	events, size := h.budgetLocked(w)
	h.mu.Unlock()
	r, m, err := v.get()
	if err != nil {
		return false, err
	}
	if from < m.CompactRevision {
		h.mu.Lock()
		if !w.removed && !w.synced && w.next == from {
			h.compactedLocked(w, m.CompactRevision)
		}
		h.mu.Unlock()
		return false, nil
	}
	var evs []*mvccpb.Event
	upto, evsSize := max(from-1, m.Revision), 0
	if from <= m.Revision {
		to := min(m.Revision, from+h.cfg.HistoryWindow-1)
		if evs, evsSize, upto, err = h.history(r, w, from, to, events, size); err != nil {
			return false, err
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if w.removed || w.synced || w.next != from {
		return false, nil
	}
	if len(evs) > 0 {
		h.addPendingLocked(w, evs, evsSize)
	}
	w.next = upto + 1
	if w.next > h.mu.rev {
		h.syncLocked(w)
	} else if w.next >= h.mu.ringFrom {
		h.fromRingLocked(w, false)
	}
	h.afterCatchUpLocked(w)
	return h.canCatchUpLocked(w), nil
}

// compactedLocked ends an unsynced watcher whose next revision is compacted
// away: its sender tells the client the compaction revision.
func (h *Hub) compactedLocked(w *Watcher, rev int64) {
	w.compacted = rev
	h.dropPendingLocked(w)
	delete(h.mu.unsynced, w)
	w.sink.Notify(w)
}

// afterCatchUpLocked notifies the watcher's sender if it has something to
// send, and enforces the hub's budget.
func (h *Hub) afterCatchUpLocked(w *Watcher) {
	if len(w.pending) > 0 || w.synced {
		w.sink.Notify(w)
	}
	h.trimLocked(0)
}

// fromRingLocked queues the ring's events from w.next on, as room allows,
// and syncs the watcher if it got all of them. With first set, the first
// revision with events is queued whatever its size.
func (h *Hub) fromRingLocked(w *Watcher, first bool) {
	start, _ := slices.BinarySearchFunc(h.mu.ring, w.next, func(e ringEntry, rev int64) int { return cmp.Compare(e.rev, rev) })
	pr := &prevReader{h: h}
	defer pr.close()
	for _, entry := range h.mu.ring[start:] {
		var evs []*mvccpb.Event
		for k := range entry.events {
			if e := &entry.events[k]; w.contains(e.KV.Key) && w.wants(e.Type) {
				evs = append(evs, h.eventLocked(w, e, pr))
			}
		}
		if len(evs) > 0 {
			size := eventsBytes(evs)
			if !first && !h.fitsLocked(w, len(evs), size, true) {
				return // stays unsynced; the next round goes on from here
			}
			first = false
			h.addPendingLocked(w, evs, size)
		}
		w.next = entry.rev + 1
	}
	w.next = max(w.next, h.mu.rev+1)
	h.syncLocked(w)
}

// history reads the watcher's events with revisions in [from, to], in
// revision order, stopping at a revision boundary before more than events
// events or size bytes (but taking at least one revision). It returns the
// events, their size, and the last revision covered. It holds no more than
// about twice the budget at any time, and copies no value above the
// revisions it keeps.
func (h *Hub) history(r pebble.Reader, w *Watcher, from, to int64, events, size int) ([]*mvccpb.Event, int, int64, error) {
	type change struct {
		rev  int64
		sub  int32
		ev   *mvccpb.Event
		size int
	}
	var chs []change
	total := 0
	// trim sorts what was collected and keeps the lowest whole revisions
	// within the budget, lowering to below the first one dropped.
	trim := func() {
		sort.Slice(chs, func(i, j int) bool {
			if chs[i].rev != chs[j].rev {
				return chs[i].rev < chs[j].rev
			}
			return chs[i].sub < chs[j].sub
		})
		n, kept := 0, 0
		for n < len(chs) {
			rev := chs[n].rev
			end, revSize := n, 0
			for end < len(chs) && chs[end].rev == rev {
				revSize += chs[end].size
				end++
			}
			if n > 0 && (end > events || kept+revSize > size) {
				to = rev - 1
				break
			}
			kept += revSize
			n = end
		}
		clear(chs[n:])
		chs, total = chs[:n], kept
	}
	err := mvcc.ChangesBetween(r, w.start, w.end, from, func() int64 { return to }, func(c mvcc.Change) error {
		if !w.wants(c.Type) {
			return nil
		}
		ev := w.event(c.Type, c.KV, c.PrevKV)
		n := eventBytes(ev)
		chs = append(chs, change{c.KV.ModRevision, c.Sub, ev, n})
		total += n
		if total > 2*size || len(chs) > 2*events {
			trim()
		}
		return nil
	})
	if err != nil {
		return nil, 0, 0, fmt.Errorf("read history of watch %d from %d: %w", w.opts.ID, from, err)
	}
	trim()
	evs := make([]*mvccpb.Event, len(chs))
	for i, c := range chs {
		evs[i] = c.ev
	}
	return evs, total, to, nil
}
