package server

import (
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/replica"
)

// mergeHub records what the merger hands the hub.
type mergeHub struct {
	got    []int64 // the events' revisions, in order
	revs   []int64 // the hub's revision at each publish
	resets int
}

func (h *mergeHub) Publish(evs []kv.Event, m kv.Meta) {
	for _, e := range evs {
		h.got = append(h.got, e.KV.ModRevision)
	}
	h.revs = append(h.revs, m.Revision)
}

func (h *mergeHub) Reset(kv.Meta) { h.resets++ }

func putAt(rev int64) kv.Event {
	return kv.Event{Type: mvccpb.PUT, KV: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: rev}}
}

// TestMergerOrdersATransactionCommittedBelowARangesRevision: one batch of a
// range applies a put stamped 20 and then a transaction's writes at 15
// (its commit revision, below the range's); the hub must get them in
// revision order, each once the resolved revision passes it (a review
// found the hub handed 20 while at 16).
func TestMergerOrdersATransactionCommittedBelowARangesRevision(t *testing.T) {
	m, _ := newWatchMerger(map[keys.RangeID]kv.Meta{2: {Revision: 10}, 3: {Revision: 10}}, nil)
	h := &mergeHub{}
	o := replica.ApplyOutput{}
	o.KV = kv.Meta{Revision: 10}
	o.TxnLocksChanged, o.TxnLockFloor = true, 10 // range 2 takes a txn's locks
	m.applied(h, 2, &o)
	o = replica.ApplyOutput{}
	o.KV = kv.Meta{Revision: 20}
	o.Events = []kv.Event{putAt(20), putAt(15)}
	o.TxnLocksChanged, o.TxnLockFloor = true, 0
	m.applied(h, 2, &o)
	m.close(h, 3, 16)
	o = replica.ApplyOutput{}
	o.KV = kv.Meta{Revision: 18}
	o.Events = []kv.Event{putAt(18)}
	m.applied(h, 3, &o)
	m.close(h, 3, 25)
	if want := []int64{15, 18, 20}; !slices.Equal(h.got, want) {
		t.Fatalf("events handed to the hub: got %v, want %v (hub revisions %v)", h.got, want, h.revs)
	}
}

// TestMergerCatchesUpAboveARangesRevision: after a restart, range 2 holds a
// transaction's writes at 120 while both ranges' revisions are 100 (a
// commit does not move a range's revision): those events will not come
// again, so once the resolved revision passes 120 the hub must catch its
// watchers up from history.
func TestMergerCatchesUpAboveARangesRevision(t *testing.T) {
	m, meta := newWatchMerger(map[keys.RangeID]kv.Meta{2: {Revision: 100}, 3: {Revision: 100}},
		map[keys.RangeID]*rangeTxns{2: {maxCommit: 120}})
	h := &mergeHub{}
	m.close(h, 2, 200)
	m.close(h, 3, 200)
	if h.resets != 1 {
		t.Fatalf("hub started at %d: got %d catch-ups from history, want 1 (publishes at %v)", meta.Revision, h.resets, h.revs)
	}
}

// TestMergerResolvedFollowsTheLowestRange checks the merger's tracked
// lowest closed revision against a look over every range, after each of
// many random changes: closes, lock floors set and cleared, ranges added
// by splits, and the hold for ranges to learn set and ended.
func TestMergerResolvedFollowsTheLowestRange(t *testing.T) {
	t.Parallel()
	rnd := rand.New(rand.NewPCG(7, 11))
	applied := map[keys.RangeID]kv.Meta{}
	for id := keys.RangeID(2); id < 12; id++ {
		applied[id] = kv.Meta{Revision: int64(rnd.IntN(5))}
	}
	m, _ := newWatchMerger(applied, nil)
	brute := func() int64 {
		var r int64 = -1
		for id, c := range m.mu.closed {
			if f := m.mu.floor[id]; f > 0 && f < c {
				c = f
			}
			if r < 0 || c < r {
				r = c
			}
		}
		return max(r, 0)
	}
	next := keys.RangeID(12)
	for i := range 20000 {
		m.mu.Lock()
		ids := slices.Collect(maps.Keys(m.mu.closed))
		slices.Sort(ids)
		id := ids[rnd.IntN(len(ids))]
		switch op := rnd.IntN(10); {
		case op < 6:
			m.mu.closed[id] += int64(rnd.IntN(3))
			m.touchLocked(id)
		case op < 8 && id != learning:
			m.mu.floor[id] = 0
			if rnd.IntN(2) == 0 {
				m.mu.floor[id] = m.mu.closed[id] - int64(rnd.IntN(3))
			}
			m.touchLocked(id)
		case op == 8 && id != learning:
			m.addRangeLocked(id, next, m.mu.closed[id]+int64(rnd.IntN(2)))
			next++
		default:
			if _, ok := m.mu.closed[learning]; ok {
				delete(m.mu.closed, learning)
			} else {
				m.mu.closed[learning] = m.mu.closed[id]
			}
			m.touchLocked(learning)
		}
		got, want := m.resolvedLocked(), brute()
		m.mu.Unlock()
		if got != want {
			t.Fatalf("step %d: resolved revision got %d, want %d", i, got, want)
		}
	}
}

// TestMergerLooksOverEveryRangeOncePerRound: a thousand ranges closing in
// turn, round after round, make the merger look over all of them about once
// a round (when the last range at the lowest revision moves), not at each
// close (a million looks).
func TestMergerLooksOverEveryRangeOncePerRound(t *testing.T) {
	t.Parallel()
	applied := map[keys.RangeID]kv.Meta{}
	for id := keys.RangeID(2); id < 1002; id++ {
		applied[id] = kv.Meta{Revision: 1}
	}
	m, _ := newWatchMerger(applied, nil)
	hub := &mergeHub{}
	for round := range 10 {
		for id := keys.RangeID(2); id < 1002; id++ {
			m.close(hub, id, int64(round+2))
		}
	}
	if got := m.resolvedRev.Load(); got != 11 {
		t.Fatalf("resolved revision: got %d, want 11", got)
	}
	if m.mu.scans > 12 {
		t.Fatalf("looks over every range: got %d, want at most 12 (one a round)", m.mu.scans)
	}
}
