package server

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/replica"
)

// Watches over several data ranges. Each range applies its own writes, so
// events reach the node out of revision order across ranges. The merger
// holds each range's events until the node knows a revision below which
// no range can still commit anything (the resolved revision: the lowest of
// the ranges' closed revisions), then hands the hub every event up to it,
// in revision order, with that revision as the hub's. A range is closed up
// to its applied revision (stamps increase along its log, and a stamp not
// above the range's revision is refused at apply); closeLoop closes the
// ranges further with read fences: a fence at R promises that nothing at
// or below R commits in the range after the index it names, so once this
// node applied that index the range is closed at R. With one data range
// the hub gets each applied batch at once, as before.

// closeInterval is how often closeLoop closes the ranges further: about
// the delay a watcher's events, and the writes a serializable read sees,
// may take over what the ranges' own writes would give.
func (s *Server) closeInterval() time.Duration { return 5 * s.cfg.TickInterval }

// watchMerger merges the data ranges' events for the hub.
type watchMerger struct {
	// resolvedRev is mu.resolved, for the hub's views, which it reads
	// while the merger hands it events (under mu).
	resolvedRev atomic.Int64
	mu          struct {
		sync.Mutex
		// pending are each range's events not handed to the hub yet, in
		// revision order; closed its closed revision.
		pending map[keys.RangeID][]kv.Event
		closed  map[keys.RangeID]int64
		compact map[keys.RangeID]int64
		// floor is, per range, the floor of the locks transactions across
		// ranges hold there (0: none): they commit above it, possibly
		// below the range's closed revision, which it caps.
		floor map[keys.RangeID]int64
		// resolved is the revision the hub has been handed up to.
		resolved int64
		// eff is, per range, its closed revision capped by its locks'
		// floor; min is the lowest of them while minOK, and atMin how
		// many ranges are at it: the resolved revision is looked for over
		// every range only once all of those moved above it (with a
		// thousand ranges each closing in turn, a look over all of them
		// at each close took a third of an idle node's CPU).
		eff   map[keys.RangeID]int64
		min   int64
		atMin int
		minOK bool
		// scans counts the looks over every range (tests).
		scans int
		// resetAt, when set, is the revision of a range's installed
		// snapshot: its events up to there were never seen, so once the
		// resolved revision reaches it the hub catches every watcher up
		// from history instead of taking the pending events.
		resetAt int64
	}
}

// rangeTxns is what a data range holds of transactions across ranges when
// the node starts (datarange.LoadTxnState).
type rangeTxns struct{ floor, maxCommit int64 }

// newWatchMerger starts the merger at the ranges' applied states.
func newWatchMerger(applied map[keys.RangeID]kv.Meta, txns map[keys.RangeID]*rangeTxns) (*watchMerger, kv.Meta) {
	m := &watchMerger{}
	m.mu.pending = map[keys.RangeID][]kv.Event{}
	m.mu.closed = map[keys.RangeID]int64{}
	m.mu.compact = map[keys.RangeID]int64{}
	m.mu.floor = map[keys.RangeID]int64{}
	m.mu.eff = map[keys.RangeID]int64{}
	for id, t := range txns {
		m.mu.floor[id] = t.floor
	}
	for id, meta := range applied {
		m.mu.closed[id], m.mu.compact[id] = meta.Revision, meta.CompactRevision
		m.touchLocked(id)
	}
	m.mu.resolved = m.resolvedLocked()
	m.resolvedRev.Store(m.mu.resolved)
	// The ranges applied different revisions before the node started: the
	// events between the lowest and the others' were applied and will not
	// come again, so once they are resolved the hub catches every watcher
	// up from history.
	for id, c := range m.mu.closed {
		if t := txns[id]; t != nil {
			// Transactions across ranges committed above its revision.
			c = max(c, t.maxCommit)
		}
		if c > m.mu.resolved {
			m.mu.resetAt = max(m.mu.resetAt, c)
		}
	}
	return m, kv.Meta{Revision: m.mu.resolved, CompactRevision: m.compactLocked()}
}

// resolvedLocked returns the lowest of the ranges' closed revisions, each
// capped by its locks' floor (0 without ranges).
func (m *watchMerger) resolvedLocked() int64 {
	if !m.mu.minOK {
		if len(m.mu.eff) == 0 {
			return 0
		}
		m.mu.scans++
		first := true
		for _, c := range m.mu.eff {
			switch {
			case first || c < m.mu.min:
				m.mu.min, m.mu.atMin, first = c, 1, false
			case c == m.mu.min:
				m.mu.atMin++
			}
		}
		m.mu.minOK = true
	}
	return max(m.mu.min, 0)
}

// touchLocked brings range id's entry in eff, and the lowest of them, in
// step with its closed revision and floor after either changed (a range
// no longer in closed leaves).
func (m *watchMerger) touchLocked(id keys.RangeID) {
	old, had := m.mu.eff[id]
	wasMin := m.mu.minOK && had && old == m.mu.min
	c, ok := m.mu.closed[id]
	if !ok {
		delete(m.mu.eff, id)
		if wasMin {
			m.leaveMinLocked()
		}
		return
	}
	if f := m.mu.floor[id]; f > 0 && f < c {
		c = f
	}
	m.mu.eff[id] = c
	switch {
	case !m.mu.minOK:
	case c < m.mu.min:
		m.mu.min, m.mu.atMin = c, 1
	case c == m.mu.min:
		if !wasMin {
			m.mu.atMin++
		}
	case wasMin:
		m.leaveMinLocked()
	}
}

// leaveMinLocked records that a range at the lowest revision left it.
func (m *watchMerger) leaveMinLocked() {
	if m.mu.atMin--; m.mu.atMin <= 0 {
		m.mu.minOK = false
	}
}

func (m *watchMerger) compactLocked() int64 {
	var c int64
	for _, v := range m.mu.compact {
		c = max(c, v)
	}
	return c
}

// applied records what range id applied, and hands the hub what is
// resolved.
func (m *watchMerger) applied(hub hubPublisher, id keys.RangeID, out *replica.ApplyOutput) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, sp := range out.Splits {
		// Before the batch's events and revision: the new range is
		// closed where the split range was before the batch.
		m.addRangeLocked(id, sp.Right.RangeID, sp.Revision)
	}
	if out.SnapshotInstalled {
		// Its events up to the installed state were never seen here.
		m.mu.pending[id] = nil
		m.mu.resetAt = max(m.mu.resetAt, out.KV.Revision, out.TxnMaxCommit)
	} else {
		evs := append(m.mu.pending[id], out.Events...)
		byRev := func(a, b kv.Event) int { return cmp.Compare(a.KV.ModRevision, b.KV.ModRevision) }
		if tail := evs[max(0, len(evs)-len(out.Events)-1):]; !slices.IsSortedFunc(tail, byRev) {
			// A transaction across ranges committed below the range's
			// revision (above its locks' floor, which held the resolved
			// revision below it), in this batch or after it.
			slices.SortStableFunc(evs, byRev)
		}
		m.mu.pending[id] = evs
	}
	if out.TxnLocksChanged || out.SnapshotInstalled {
		m.mu.floor[id] = out.TxnLockFloor
	}
	m.mu.closed[id] = max(m.mu.closed[id], out.KV.Revision)
	m.touchLocked(id)
	m.mu.compact[id] = max(m.mu.compact[id], out.KV.CompactRevision)
	m.publishLocked(hub)
}

// addRangeLocked adds range right, made by a split of range left at
// revision splitRev. It holds nothing above splitRev, and it commits
// nothing at or below what left was closed at when this node applied the
// split: its leader takes its revisions from the oracle after the split
// applied, above any fence left's leader answered before. So it starts
// closed at the higher of the two.
func (m *watchMerger) addRangeLocked(left, right keys.RangeID, splitRev int64) {
	if _, ok := m.mu.closed[right]; ok {
		return
	}
	m.mu.closed[right] = max(m.mu.closed[left], splitRev)
	m.mu.compact[right] = m.mu.compact[left]
	m.mu.floor[right] = 0
	m.touchLocked(right)
}

// addLearned adds range id, which this node learned of from the meta
// copies and has no state of yet: until its first snapshot it holds the
// resolved revision where it is, and the snapshot's install catches the
// watchers up from history (applied, SnapshotInstalled).
func (m *watchMerger) addLearned(id keys.RangeID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.mu.closed[id]; !ok {
		m.mu.closed[id] = m.mu.resolved
		m.mu.floor[id] = 0
		m.touchLocked(id)
	}
}

// learning stands, in the merger's ranges, for the ranges this node has
// yet to learn of (holdForLearned): no range has ID 0.
const learning keys.RangeID = 0

// holdForLearned holds the resolved revision where it is until
// learnedAll: ranges this node has not learned of yet may commit above
// it.
func (m *watchMerger) holdForLearned() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.mu.closed[learning]; !ok {
		m.mu.closed[learning] = m.mu.resolved
		m.touchLocked(learning)
	}
}

// learnedAll ends holdForLearned: every range is in the merger.
func (m *watchMerger) learnedAll(hub hubPublisher) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.mu.closed[learning]; !ok {
		return
	}
	delete(m.mu.closed, learning)
	m.touchLocked(learning)
	m.publishLocked(hub)
}

// close records that range id is closed at rev on this node.
func (m *watchMerger) close(hub hubPublisher, id keys.RangeID, rev int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.closed[id] = max(m.mu.closed[id], rev)
	m.touchLocked(id)
	m.publishLocked(hub)
}

// hubPublisher is what the merger needs of the watch hub.
type hubPublisher interface {
	Publish(events []kv.Event, m kv.Meta)
	Reset(m kv.Meta)
}

func (m *watchMerger) publishLocked(hub hubPublisher) {
	r := m.resolvedLocked()
	if r <= m.mu.resolved {
		return
	}
	meta := kv.Meta{Revision: r, CompactRevision: m.compactLocked()}
	if m.mu.resetAt > 0 {
		if r < m.mu.resetAt {
			return // wait until the installed state is resolved
		}
		for id, evs := range m.mu.pending {
			m.mu.pending[id] = evs[upTo(evs, r):]
		}
		m.mu.resolved, m.mu.resetAt = r, 0
		m.resolvedRev.Store(r)
		hub.Reset(meta)
		return
	}
	var out []kv.Event
	for id, evs := range m.mu.pending {
		n := upTo(evs, r)
		out = append(out, evs[:n]...)
		m.mu.pending[id] = evs[n:]
	}
	// A revision belongs to one command of one range: a stable sort keeps
	// each command's events in their order.
	slices.SortStableFunc(out, func(a, b kv.Event) int { return cmp.Compare(a.KV.ModRevision, b.KV.ModRevision) })
	m.mu.resolved = r
	m.resolvedRev.Store(r)
	hub.Publish(out, meta)
}

// upTo returns how many of evs (in revision order) are at or below rev.
func upTo(evs []kv.Event, rev int64) int {
	n, _ := slices.BinarySearchFunc(evs, rev+1, func(e kv.Event, r int64) int { return int(e.KV.ModRevision - r) })
	return n
}

// resolvedRevision returns the revision the hub has been handed up to.
func (m *watchMerger) resolvedRevision() int64 { return m.resolvedRev.Load() }

// closeLoop closes the data ranges with read fences every closeInterval,
// so that the resolved revision moves on when a range is idle: watchers
// get their events, and serializable reads (readResolved) see writes,
// within about that interval.
func (s *Server) closeLoop(ctx context.Context) {
	everyInterval(ctx, s.closeInterval(), func() {
		if s.merger.Load() == nil {
			return // one data range: its applied revision is the hub's
		}
		if err := s.closeRanges(ctx); err != nil && ctx.Err() == nil {
			s.logger.Debug("ranges not closed", "err", err)
		}
	})
}

// everyInterval calls fn every d until ctx ends.
func everyInterval(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}

// closeRanges closes every data range at a revision from the oracle.
func (s *Server) closeRanges(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*s.ElectionTimeout())
	defer cancel()
	// Only the ranges fenced: one a split made meanwhile was not.
	ids := s.dataRanges()
	rev, err := s.fenceRanges(ctx, ids)
	if err != nil {
		return err
	}
	m := s.merger.Load()
	for _, id := range ids {
		m.close(s.hub, id, rev)
	}
	return nil
}

// hubView is the hub's view: the first data range's while it is the only
// one, the merged one (mergedWatchView) once there are several.
func (s *Server) hubView() (pebble.Reader, kv.Meta, func(), error) {
	if s.merger.Load() != nil {
		return s.mergedWatchView()
	}
	return s.watchView()
}

// mergedWatchView is the hub's view with several data ranges: a snapshot
// of the node's store, taken after the resolved revision was read (every
// event up to it is applied here), with that revision.
func (s *Server) mergedWatchView() (pebble.Reader, kv.Meta, func(), error) {
	rev := s.merger.Load().resolvedRevision()
	snap := s.db.NewSnapshot()
	compact, err := compactRevisionIn(snap, s.dataRanges())
	if err != nil {
		snap.Close()
		return nil, kv.Meta{}, nil, err
	}
	return snap, kv.Meta{Revision: rev, CompactRevision: compact}, func() { snap.Close() }, nil
}
