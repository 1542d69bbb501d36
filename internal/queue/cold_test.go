package queue

import (
	"context"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/queue/machine"
	"github.com/synod-io/synod/internal/queue/queuewire"
	"github.com/synod-io/synod/internal/rangesm"
)

// readBackend serves the reads of the Queue service from a Pebble store.
type readBackend struct {
	viewBackend
}

func (readBackend) Linearize(context.Context) error { return nil }

// Jobs scheduled a day ahead are kept out of the machine's memory (cold):
// Get, List and Stats, which read the store and the machine, show them as
// they show any pending job, before and after a restart.
func TestColdJobsReadLikeOthers(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	t0 := time.UnixMilli(1_800_000_000_000)
	s := New(Config{Backend: readBackend{viewBackend{db: db}}, Now: func() time.Time { return t0 }})
	st := rangesm.AppliedState{KV: kv.Meta{Revision: 1}}
	index := uint64(10)
	var sm *datarange.Machine
	start := func() {
		sm, err = datarange.New(datarange.Config{RangeID: keys.FirstDataRangeID, NodeID: 1, DB: db, Extensions: []datarange.Extension{s.NewExtension()}})
		if err != nil {
			t.Fatal(err)
		}
		if err := sm.Load(db, &st); err != nil {
			t.Fatal(err)
		}
	}
	start()
	push := func(specs ...*queuepb.JobSpec) []uint64 {
		t.Helper()
		op := &queuewire.Op{Queue: "q", Op: &queuewire.Op_Push{Push: &queuepb.PushRequest{Queue: "q", Jobs: specs}}}
		var out rangesm.Effects
		b := db.NewIndexedBatch()
		defer b.Close()
		ba := sm.Begin(b, &st, &out)
		defer ba.Close()
		index++
		res, err := ba.Apply(queueCommand(t, machine.KindBatch, &queuewire.Batch{NowMs: t0.UnixMilli(), Ops: []*queuewire.Op{op}}), index, 2)
		if err != nil {
			t.Fatal(err)
		}
		if err := ba.Finish(); err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		if err := ba.Committed(); err != nil {
			t.Fatal(err)
		}
		r := res.Resp.(*machine.BatchResult).Results[0]
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		return r.Resp.(*queuepb.PushResponse).Ids
	}
	runAt := t0.Add(24 * time.Hour).UnixMilli()
	cold := push(&queuepb.JobSpec{Payload: []byte("tomorrow"), RunAtMs: runAt})[0]
	dep := push(&queuepb.JobSpec{Payload: []byte("after"), DependsOn: []uint64{cold}})[0]

	sv := &server{s: s}
	ctx := context.Background()
	for round := range 2 {
		g, err := sv.Get(ctx, &queuepb.GetRequest{Queue: "q", Id: cold})
		if err != nil {
			t.Fatal(err)
		}
		if j := g.Job; j.State != queuepb.State_PENDING || j.RunAtMs != runAt || string(j.Payload) != "tomorrow" || j.Waiting {
			t.Fatalf("round %d: get: got %v, want PENDING at %d with its payload", round, j, runAt)
		}
		g, err = sv.Get(ctx, &queuepb.GetRequest{Queue: "q", Id: dep})
		if err != nil {
			t.Fatal(err)
		}
		if !g.Job.Waiting {
			t.Fatalf("round %d: get of its dependent: got %v, want waiting", round, g.Job)
		}
		l, err := sv.List(ctx, &queuepb.ListRequest{Queue: "q", State: queuepb.State_PENDING})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Jobs) != 2 || l.Jobs[0].Id != cold || l.Jobs[1].Id != dep {
			t.Fatalf("round %d: list: got %v, want jobs %d and %d", round, l.Jobs, cold, dep)
		}
		stats, err := sv.Stats(ctx, &queuepb.StatsRequest{Queue: "q"})
		if err != nil {
			t.Fatal(err)
		}
		if stats.Scheduled != 1 || stats.Waiting != 1 || stats.Available != 0 {
			t.Fatalf("round %d: stats: got %v, want 1 scheduled and 1 waiting", round, stats)
		}
		start() // a restart: the machine loads the store
	}
}
