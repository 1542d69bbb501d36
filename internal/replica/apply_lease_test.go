package replica

import (
	"context"
	"reflect"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable/block"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/lease"
	"github.com/synod-io/synod/internal/raftcmd"
)

// TestRevokeWritesNoRangeTombstones checks that revoking a lease deletes its
// record and its attached-key index with point deletes. A range deletion
// per revocation piled up in Pebble's memtable, which re-fragments all of
// its range tombstones at the first read after each new one: the lookups of
// an expiry storm got slower with every revocation (issue 21).
func TestRevokeWritesNoRangeTombstones(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	const leases = 10
	var ps []*Proposal
	for id := int64(1); id <= leases; id++ {
		ps = append(ps, nw.propose(1, raftcmd.KindLeaseGrant, &etcdpb.LeaseGrantRequest{ID: id, TTL: 60}))
		for _, k := range []string{"a", "b"} {
			ps = append(ps, nw.propose(1, raftcmd.KindPut, &etcdpb.PutRequest{Key: []byte(key(int(id)) + k), Value: []byte("v"), Lease: id}))
		}
		nw.stabilize()
	}
	for id := int64(1); id <= leases; id++ {
		ps = append(ps, nw.propose(1, raftcmd.KindLeaseRevoke, &etcdpb.LeaseRevokeRequest{ID: id}))
		nw.stabilize()
	}
	for _, p := range ps {
		if res := result(t, p); res.Err != nil {
			t.Fatalf("proposal %d: %v", p.RequestID, res.Err)
		}
	}
	for _, rid := range nw.ids {
		db := nw.dbs[rid]
		for id := int64(1); id <= leases; id++ {
			if _, ok := nw.get(rid, key(int(id))+"a"); ok {
				t.Fatalf("replica %d: key of revoked lease %d still live", rid, id)
			}
			if ks, err := lease.AttachedKeys(db, id); err != nil || len(ks) != 0 {
				t.Fatalf("replica %d: keys attached to revoked lease %d: got %q, %v, want none", rid, id, ks, err)
			}
		}
		if recs, err := lease.List(db); err != nil || len(recs) != 0 {
			t.Fatalf("replica %d: lease records after revoking all: got %v, %v, want none", rid, recs, err)
		}
		rangeDels := 0
		for _, span := range keys.ReplicatedSpans(testRange) {
			err := db.ScanInternal(context.Background(), block.CategoryUnknown, span.Start, span.End,
				func(*pebble.InternalKey, pebble.LazyValue, pebble.IteratorLevel) error { return nil },
				func(start, end []byte, _ pebble.SeqNum) error { rangeDels++; return nil },
				nil, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
		}
		if rangeDels != 0 {
			t.Fatalf("replica %d: %d range tombstones in the replicated state after %d revocations, want 0", rid, rangeDels, leases)
		}
	}
}

// TestNotDetached checks which attached keys a revocation's deletes left
// in the index: those with no live key, or whose live key names another
// lease (an index out of step with the keys, which the revocation mends).
func TestNotDetached(t *testing.T) {
	ev := func(k string, l int64) kv.Event {
		return kv.Event{KV: &mvccpb.KeyValue{Key: []byte(k)}, PrevKV: &mvccpb.KeyValue{Key: []byte(k), Lease: l}}
	}
	attached := [][]byte{[]byte("a"), []byte("b"), []byte("c"), []byte("d")}
	got := notDetached(attached, []kv.Event{ev("a", 7), ev("c", 8), ev("d", 7)}, 7)
	if want := [][]byte{[]byte("b"), []byte("c")}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := notDetached(attached[:1], []kv.Event{ev("a", 7)}, 7); len(got) != 0 {
		t.Fatalf("all detached: got %q, want none", got)
	}
}
