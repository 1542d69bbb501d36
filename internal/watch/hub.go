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
	// RingBytes bounds the recent events kept in memory to bring watchers
	// back in sync (default 16 MiB).
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
}

// Watcher is one watch. Its fields behind the hub's lock are only touched
// by the hub.
type Watcher struct {
	hub   *Hub
	sink  Sink
	opts  Options
	start []byte
	end   []byte // nil: unbounded

	// Guarded by hub.mu.
	next         int64 // first revision not yet queued
	synced       bool
	removed      bool
	pending      []*mvccpb.Event
	pendingBytes int
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
}

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
		leftBehind int64
	}
}

// Stats describes the hub's watchers.
type Stats struct {
	Watchers int
	Unsynced int
	// LeftBehind counts the times a synced watcher's buffer was full and it
	// had to catch up from history.
	LeftBehind int64
}

// Stats returns the hub's current statistics.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Stats{Watchers: len(h.mu.all), Unsynced: len(h.mu.unsynced), LeftBehind: h.mu.leftBehind}
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
	if cfg.RingBytes <= 0 {
		cfg.RingBytes = 16 << 20
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
	w.pending, w.pendingBytes = nil, 0
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

// roomLocked is how many more events the watcher may have queued.
func (h *Hub) roomLocked(w *Watcher) int {
	if w.pendingBytes >= h.cfg.MaxPendingBytes {
		return 0
	}
	return h.cfg.MaxPendingEvents - len(w.pending)
}

// queueLocked queues the events of revision rev for a synced watcher, or
// leaves the watcher behind if they do not fit.
func (h *Hub) queueLocked(w *Watcher, rev int64, evs []*mvccpb.Event) {
	if len(w.pending) > 0 && h.roomLocked(w) < len(evs) {
		h.mu.leftBehind++
		h.unsyncLocked(w)
		h.mu.unsynced[w] = struct{}{}
		w.next = rev
		h.signal()
		return
	}
	for _, e := range evs {
		w.pending = append(w.pending, e)
		w.pendingBytes += eventBytes(e)
	}
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

// Take returns what the watcher has to send, if anything.
func (h *Hub) Take(w *Watcher) (Response, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w.compacted > 0 {
		rev := w.compacted
		w.compacted = 0
		return Response{CompactRevision: rev, Revision: h.mu.rev}, true
	}
	if len(w.pending) > 0 {
		evs := w.pending
		w.pending, w.pendingBytes = nil, 0
		w.progress = false
		rev := evs[len(evs)-1].Kv.ModRevision
		if w.synced {
			rev = max(rev, h.mu.rev)
		} else {
			h.signal() // room again: keep catching up
		}
		return Response{Events: evs, Revision: rev}, true
	}
	if w.progress && w.synced {
		w.progress = false
		return Response{Revision: h.mu.rev}, true
	}
	return Response{}, false
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

// catchUpRound advances every unsynced watcher that has room by one step and
// reports whether any of them is still behind and could go on at once.
func (h *Hub) catchUpRound() bool {
	h.mu.Lock()
	var ws []*Watcher
	for w := range h.mu.unsynced {
		if h.roomLocked(w) > 0 {
			ws = append(ws, w)
		}
	}
	h.mu.Unlock()
	if len(ws) == 0 {
		return false
	}
	r, m, release, err := h.cfg.View()
	if err != nil {
		h.logger.Error("watch catch-up: open view", "err", err)
		return false
	}
	defer release()
	more := false
	for _, w := range ws {
		behind, err := h.catchUp(w, r, m)
		if err != nil {
			h.logger.Error("watch catch-up", "watch", w.opts.ID, "err", err)
			continue
		}
		more = more || behind
	}
	return more
}

// catchUp moves one watcher forward from history read in view r (whose
// counters are m), and syncs it when it has caught up. It reports whether
// the watcher is still behind with room to go on.
func (h *Hub) catchUp(w *Watcher, r pebble.Reader, m kv.Meta) (bool, error) {
	h.mu.Lock()
	if w.removed || w.synced {
		h.mu.Unlock()
		return false, nil
	}
	from, room := w.next, h.roomLocked(w)
	h.mu.Unlock()
	if room <= 0 {
		return false, nil
	}
	if from < m.CompactRevision {
		h.mu.Lock()
		if !w.removed && w.next == from {
			w.compacted = m.CompactRevision
			delete(h.mu.unsynced, w)
			w.sink.Notify(w)
		}
		h.mu.Unlock()
		return false, nil
	}
	var evs []*mvccpb.Event
	upto := max(from-1, m.Revision)
	if from <= m.Revision {
		to := min(m.Revision, from+h.cfg.HistoryWindow-1)
		var err error
		evs, upto, err = h.history(r, w, from, to, room)
		if err != nil {
			return false, err
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if w.removed || w.synced || w.next != from {
		return false, nil
	}
	for _, e := range evs {
		w.pending = append(w.pending, e)
		w.pendingBytes += eventBytes(e)
	}
	w.next = upto + 1
	if w.next > h.mu.rev {
		h.syncLocked(w)
	} else if w.next >= h.mu.ringFrom {
		h.fromRingLocked(w)
	}
	if len(w.pending) > 0 || w.synced {
		w.sink.Notify(w)
	}
	return !w.synced && h.roomLocked(w) > 0, nil
}

// fromRingLocked queues the ring's events from w.next on, as room allows,
// and syncs the watcher if it got all of them.
func (h *Hub) fromRingLocked(w *Watcher) {
	first, _ := slices.BinarySearchFunc(h.mu.ring, w.next, func(e ringEntry, rev int64) int { return cmp.Compare(e.rev, rev) })
	pr := &prevReader{h: h}
	defer pr.close()
	for _, entry := range h.mu.ring[first:] {
		var evs []*mvccpb.Event
		for k := range entry.events {
			if e := &entry.events[k]; w.contains(e.KV.Key) && w.wants(e.Type) {
				evs = append(evs, h.eventLocked(w, e, pr))
			}
		}
		if len(evs) > 0 && len(w.pending) > 0 && h.roomLocked(w) < len(evs) {
			return // stays unsynced; the next round goes on from here
		}
		for _, e := range evs {
			w.pending = append(w.pending, e)
			w.pendingBytes += eventBytes(e)
		}
		w.next = entry.rev + 1
	}
	w.next = max(w.next, h.mu.rev+1)
	h.syncLocked(w)
}

// history reads the watcher's events with revisions in [from, to], in
// revision order, stopping at a revision boundary once room events are
// collected. It returns the events and the last revision covered.
func (h *Hub) history(r pebble.Reader, w *Watcher, from, to int64, room int) ([]*mvccpb.Event, int64, error) {
	type change struct {
		rev int64
		sub int32
		ev  *mvccpb.Event
	}
	var chs []change
	err := mvcc.ChangesSince(r, w.start, w.end, from, func(c mvcc.Change) error {
		rev := c.KV.ModRevision
		if rev > to || !w.wants(c.Type) {
			return nil
		}
		chs = append(chs, change{rev, c.Sub, w.event(c.Type, c.KV, c.PrevKV)})
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("read history of watch %d from %d: %w", w.opts.ID, from, err)
	}
	sort.Slice(chs, func(i, j int) bool {
		if chs[i].rev != chs[j].rev {
			return chs[i].rev < chs[j].rev
		}
		return chs[i].sub < chs[j].sub
	})
	var evs []*mvccpb.Event
	for i := 0; i < len(chs); {
		rev := chs[i].rev
		j := i + 1
		for j < len(chs) && chs[j].rev == rev {
			j++
		}
		if len(evs) > 0 && len(evs)+(j-i) > room {
			return evs, rev - 1, nil
		}
		for _, c := range chs[i:j] {
			evs = append(evs, c.ev)
		}
		i = j
	}
	return evs, to, nil
}
