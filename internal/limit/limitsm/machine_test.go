package limitsm

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/limit/limitpb"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangesm"
)

// rig is a data range's state machine with the limits extension, applying
// one command per batch as a replica would.
type rig struct {
	t     *testing.T
	db    *pebble.DB
	m     *datarange.Machine
	st    rangesm.AppliedState
	index uint64
}

func newRig(t *testing.T) *rig {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	m, err := datarange.New(datarange.Config{RangeID: keys.FirstDataRangeID, NodeID: 1, DB: db, Extensions: []datarange.Extension{New()}})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, db: db, m: m, st: rangesm.AppliedState{KV: kv.Meta{Revision: 1}}, index: 10}
	if err := m.Load(db, &r.st); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) apply(kind raftcmd.Kind, msg proto.Message) datarange.Result {
	r.t.Helper()
	payload, err := proto.Marshal(msg)
	if err != nil {
		r.t.Fatal(err)
	}
	var out rangesm.Effects
	b := r.db.NewIndexedBatch()
	defer b.Close()
	ba := r.m.Begin(b, &r.st, &out)
	defer ba.Close()
	r.index++
	res, err := ba.Apply(raftcmd.Command{RangeID: 1, Proposer: 1, RequestID: r.index, Kind: kind, Payload: payload}, r.index, 2)
	if err != nil {
		r.t.Fatalf("apply %s: %v", kind, err)
	}
	if err := ba.Finish(); err != nil {
		r.t.Fatal(err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		r.t.Fatal(err)
	}
	if err := ba.Committed(); err != nil {
		r.t.Fatal(err)
	}
	return res
}

func (r *rig) ok(kind raftcmd.Kind, msg proto.Message) any {
	r.t.Helper()
	res := r.apply(kind, msg)
	if res.Err != nil {
		r.t.Fatalf("%s: %v", kind, res.Err)
	}
	return res.Resp
}

func (r *rig) state(name string, key string) *limitpb.StoredState {
	r.t.Helper()
	v, closer, err := r.db.Get(keys.ServiceStateKey(StateUserKey(name, []byte(key))))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		r.t.Fatal(err)
	}
	defer closer.Close()
	s := &limitpb.StoredState{}
	if err := proto.Unmarshal(v, s); err != nil {
		r.t.Fatal(err)
	}
	return s
}

func checkpoint(name string, rev int64, key string, tat int64) *limitpb.Checkpoint {
	return &limitpb.Checkpoint{At: 5, Entries: []*limitpb.Checkpoint_Entry{{Limit: name, Key: []byte(key), Revision: rev, State: &limitpb.KeyState{Tat: tat}}}}
}

func TestSetCheckpointAndReset(t *testing.T) {
	r := newRig(t)
	gcra := &synodpb.Limit{Name: "api", Algorithm: synodpb.Limit_GCRA, Limit: 10, PeriodMs: 1000}
	set := r.ok(KindSet, &limitpb.SetLimit{Limit: gcra}).(*SetResult)
	if !set.Created || set.StateRevision != set.Revision {
		t.Fatalf("first set: got %+v, want created with its own state revision", set)
	}
	kv, err := mvcc.Get(r.db, DefKey("api"), r.st.KV.Revision)
	if err != nil || kv == nil {
		t.Fatalf("definition key after set: %v, %v", kv, err)
	}

	r.ok(KindCheckpoint, checkpoint("api", set.StateRevision, "tenant-1", 42))
	if s := r.state("api", "tenant-1"); s == nil || s.State.Tat != 42 || s.At != 5 {
		t.Fatalf("state after a checkpoint: got %v, want tat 42 at 5", s)
	}
	// An entry of another state generation is dropped, and said so.
	res := r.ok(KindCheckpoint, checkpoint("api", set.StateRevision-1, "tenant-2", 7)).(*CheckpointResult)
	if len(res.Skipped) != 1 || r.state("api", "tenant-2") != nil {
		t.Fatalf("stale checkpoint: skipped %v, state %v; want it skipped", res.Skipped, r.state("api", "tenant-2"))
	}
	// A new rate keeps the state; a new algorithm resets it.
	gcra.Limit = 20
	set2 := r.ok(KindSet, &limitpb.SetLimit{Limit: gcra}).(*SetResult)
	if set2.Created || set2.StateRevision != set.StateRevision || r.state("api", "tenant-1") == nil {
		t.Fatalf("rate change: got %+v, state %v; want the state kept", set2, r.state("api", "tenant-1"))
	}
	win := &synodpb.Limit{Name: "api", Algorithm: synodpb.Limit_FIXED_WINDOW, Limit: 10, PeriodMs: 1000}
	set3 := r.ok(KindSet, &limitpb.SetLimit{Limit: win}).(*SetResult)
	if set3.StateRevision != set3.Revision || r.state("api", "tenant-1") != nil {
		t.Fatalf("algorithm change: got %+v, state %v; want the state reset", set3, r.state("api", "tenant-1"))
	}
	// A checkpoint of the old generation, proposed before the change, is dropped.
	if res := r.ok(KindCheckpoint, checkpoint("api", set.StateRevision, "tenant-1", 9)).(*CheckpointResult); len(res.Skipped) != 1 {
		t.Fatalf("checkpoint of a reset limit: skipped %v, want it skipped", res.Skipped)
	}
	// Removal of a full key's state.
	r.ok(KindCheckpoint, checkpoint("api", set3.StateRevision, "k", 9))
	r.ok(KindCheckpoint, &limitpb.Checkpoint{Entries: []*limitpb.Checkpoint_Entry{{Limit: "api", Key: []byte("k"), Revision: set3.StateRevision}}})
	if s := r.state("api", "k"); s != nil {
		t.Fatalf("state after removal: got %v, want none", s)
	}

	r.ok(KindCheckpoint, checkpoint("api", set3.StateRevision, "k", 9))
	if d := r.ok(KindDelete, &limitpb.DeleteLimit{Name: "api"}).(*DeleteResult); !d.Deleted {
		t.Fatal("delete: not deleted")
	}
	if kv, _ := mvcc.Get(r.db, DefKey("api"), r.st.KV.Revision); kv != nil || r.state("api", "k") != nil {
		t.Fatalf("after delete: definition %v, state %v; want neither", kv, r.state("api", "k"))
	}
	if d := r.ok(KindDelete, &limitpb.DeleteLimit{Name: "api"}).(*DeleteResult); d.Deleted {
		t.Fatal("second delete: deleted again")
	}
}

func TestPermitsAreBoundToLeases(t *testing.T) {
	r := newRig(t)
	r.ok(KindSet, &limitpb.SetLimit{Limit: &synodpb.Limit{Name: "jobs", Algorithm: synodpb.Limit_CONCURRENCY, Max: 2}})
	for _, id := range []int64{1, 2} {
		r.ok(raftcmd.KindLeaseGrant, &etcdpb.LeaseGrantRequest{ID: id, TTL: 60})
	}
	acquire := func(lease int64, permit string) *limitpb.AcquireResult {
		t.Helper()
		return r.ok(KindAcquire, &limitpb.Acquire{Limit: "jobs", Key: []byte("k"), Lease: lease, Permit: permit}).(*limitpb.AcquireResult)
	}
	if a := acquire(1, "a"); !a.Acquired || a.Held != 1 {
		t.Fatalf("first permit: got %v", a)
	}
	if a := acquire(1, "a"); !a.Acquired || a.Held != 1 {
		t.Fatalf("the same permit again (a retry): got %v, want it acquired, still 1 held", a)
	}
	if a := acquire(2, "b"); !a.Acquired || a.Held != 2 {
		t.Fatalf("second permit: got %v", a)
	}
	if a := acquire(2, "c"); a.Acquired || a.Held != 2 || a.Max != 2 {
		t.Fatalf("third permit of 2: got %v, want refused with 2 held", a)
	}
	// Another key has its own permits.
	if a := r.ok(KindAcquire, &limitpb.Acquire{Limit: "jobs", Key: []byte("other"), Lease: 2, Permit: "c"}).(*limitpb.AcquireResult); !a.Acquired {
		t.Fatalf("a permit of another key: got %v", a)
	}
	// A permit name held on another lease is refused.
	if res := r.apply(KindAcquire, &limitpb.Acquire{Limit: "jobs", Key: []byte("k"), Lease: 2, Permit: "a"}); status.Code(res.Err) != codes.AlreadyExists {
		t.Fatalf("permit held on another lease: got %v, want AlreadyExists", res.Err)
	}
	// The end of lease 1 (expiry revokes it) frees its permit.
	r.ok(raftcmd.KindLeaseRevoke, &etcdpb.LeaseRevokeRequest{ID: 1})
	if a := acquire(2, "c"); !a.Acquired || a.Held != 2 {
		t.Fatalf("after the holder's lease ended: got %v, want the permit acquired", a)
	}
	if rel := r.ok(KindRelease, &limitpb.Release{Limit: "jobs", Key: []byte("k"), Permit: "b"}).(*ReleaseResult); !rel.Released {
		t.Fatal("release: not released")
	}
	if rel := r.ok(KindRelease, &limitpb.Release{Limit: "jobs", Key: []byte("k"), Permit: "b"}).(*ReleaseResult); rel.Released {
		t.Fatal("second release: released again")
	}
	// Errors: no such lease, no such limit, not a concurrency limit.
	if res := r.apply(KindAcquire, &limitpb.Acquire{Limit: "jobs", Key: []byte("k"), Lease: 99, Permit: "z"}); res.Err == nil {
		t.Fatal("acquire on a lease that does not exist: got no error")
	}
	if res := r.apply(KindAcquire, &limitpb.Acquire{Limit: "nope", Key: []byte("k"), Lease: 2, Permit: "z"}); status.Code(res.Err) != codes.NotFound {
		t.Fatalf("acquire of a missing limit: got %v, want NotFound", res.Err)
	}
	r.ok(KindSet, &limitpb.SetLimit{Limit: &synodpb.Limit{Name: "rate", Limit: 1, PeriodMs: 1000}})
	if res := r.apply(KindAcquire, &limitpb.Acquire{Limit: "rate", Key: []byte("k"), Lease: 2, Permit: "z"}); status.Code(res.Err) != codes.FailedPrecondition {
		t.Fatalf("acquire of a rate limit: got %v, want FailedPrecondition", res.Err)
	}
	// Deleting the limit deletes its permits.
	r.ok(KindDelete, &limitpb.DeleteLimit{Name: "jobs"})
	p := PermitPrefix("jobs", []byte("k"))
	if res, _ := mvcc.Range(r.db, p, keys.PrefixEnd(p), r.st.KV.Revision, mvcc.RangeOptions{CountOnly: true}); res.Count != 0 {
		t.Fatalf("permits after the limit's deletion: got %d, want 0", res.Count)
	}
}
