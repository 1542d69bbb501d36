package server

import (
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
