package replica

import (
	"context"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable/block"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/synod-io/synod/internal/keys"
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

// TestLeaseTTLsFollowTheTable checks that the leases apply looks up in
// memory are those of the stored table on every replica: through grants,
// revocations, checkpoints (of a lease that exists and of one that does
// not), puts naming a lease, a restart, and a follower that catches up by
// snapshot.
func TestLeaseTTLsFollowTheTable(t *testing.T) {
	nw := newNetwork(t, 3, Config{LogTruncateThreshold: 10, LogKeepEntries: 2})
	nw.elect(1)
	check := func(when string) {
		t.Helper()
		for _, id := range nw.ids {
			recs, err := lease.List(nw.dbs[id])
			if err != nil {
				t.Fatal(err)
			}
			if !nw.replicas[id].sm.(*testMachine).data.LeaseTTLs().Equal(recs) {
				t.Fatalf("%s: replica %d holds %d lease TTLs in memory, want the %d of its table %v", when, id, nw.replicas[id].sm.(*testMachine).data.LeaseTTLs().Len(), len(recs), recs)
			}
		}
	}
	must := func(p *Proposal, want error) {
		t.Helper()
		nw.stabilize()
		if res := result(t, p); !errors.Is(res.Err, want) {
			t.Fatalf("proposal %d: got %v, want %v", p.RequestID, res.Err, want)
		}
	}
	grant := func(id, ttl int64) {
		must(nw.propose(1, raftcmd.KindLeaseGrant, &etcdpb.LeaseGrantRequest{ID: id, TTL: ttl}), nil)
	}
	putWith := func(k string, id int64, want error) {
		must(nw.propose(1, raftcmd.KindPut, &etcdpb.PutRequest{Key: []byte(k), Value: []byte("v"), Lease: id}), want)
	}
	revoke := func(id int64, want error) {
		must(nw.propose(1, raftcmd.KindLeaseRevoke, &etcdpb.LeaseRevokeRequest{ID: id}), want)
	}
	for id := int64(1); id <= 6; id++ {
		grant(id, 10*id)
		putWith(key(int(id)), id, nil)
	}
	must(nw.propose(1, raftcmd.KindLeaseGrant, &etcdpb.LeaseGrantRequest{ID: 2, TTL: 99}), rpctypes.ErrGRPCLeaseExist)
	revoke(2, nil)
	revoke(2, rpctypes.ErrGRPCLeaseNotFound)
	putWith("late", 2, rpctypes.ErrGRPCLeaseNotFound)
	must(nw.propose(1, raftcmd.KindLeaseCheckpoint, &etcdpb.LeaseCheckpointRequest{Checkpoints: []*etcdpb.LeaseCheckpoint{
		{ID: 3, Remaining_TTL: 1500}, {ID: 2, Remaining_TTL: 700}, {ID: 77, Remaining_TTL: 1},
	}}), nil)
	check("after grants, revocations and checkpoints")
	if recs, _ := lease.List(nw.dbs[2]); len(recs) != 5 || recs[1].ID != 3 || recs[1].TTL != 30 || recs[1].RemainingMs != 1500 {
		t.Fatalf("table after the checkpoint: got %+v, want lease 3 with TTL 30 and 1500 ms left among 5", recs)
	}

	// A restart loads the TTLs from the table.
	nw.stop(2)
	nw.restart(2)
	nw.tick(3)
	check("after a restart")

	// A follower catches up by snapshot over grants and revocations.
	nw.isolate(3, true)
	for id := int64(10); id < 30; id++ {
		grant(id, 60)
	}
	revoke(1, nil)
	revoke(12, nil)
	nw.isolate(3, false)
	nw.tick(5)
	installed := false
	for _, out := range nw.applied[3] {
		installed = installed || out.SnapshotInstalled
	}
	if !installed {
		t.Fatalf("follower caught up without a snapshot")
	}
	check("after a snapshot")
	revoke(13, nil)
	putWith("after", 14, nil)
	check("after the snapshot, applying")
}
