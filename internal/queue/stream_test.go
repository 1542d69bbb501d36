package queue

import (
	"context"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/queue/machine"
	"github.com/synod-io/synod/internal/queue/queuewire"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangesm"
)

// viewBackend serves views of a Pebble store; the stream tests need
// nothing else of a node.
type viewBackend struct {
	Backend
	db *pebble.DB
}

func (b viewBackend) View() (pebble.Reader, func(), error) {
	snap := b.db.NewSnapshot()
	return snap, func() { snap.Close() }, nil
}

func (b viewBackend) Header() *queuepb.ResponseHeader { return &queuepb.ResponseHeader{} }

// sentJobs records what a claim stream sends.
type sentJobs struct {
	grpc.BidiStreamingServer[queuepb.ClaimRequest, queuepb.ClaimResponse]
	jobs []*queuepb.Job
}

func (s *sentJobs) Send(r *queuepb.ClaimResponse) error {
	s.jobs = append(s.jobs, r.Jobs...)
	return nil
}

func queueCommand(t *testing.T, kind raftcmd.Kind, m proto.Message) raftcmd.Command {
	t.Helper()
	p, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return raftcmd.Command{RangeID: 2, Proposer: 1, RequestID: 1, Kind: kind, Payload: p}
}

// A stream that resyncs while a batch that claims a job for its worker is
// applied but not committed sees the claim in the machine and not the job
// in its view. It must not send the job without its payload (it once did:
// a worker ran a job with an empty payload); it sends it whole once the
// batch is committed and its effects are routed.
func TestResyncDuringApplyWaitsForTheCommit(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := New(Config{Backend: viewBackend{db: db}})
	sm, err := datarange.New(datarange.Config{RangeID: keys.FirstDataRangeID, NodeID: 1, DB: db, Extensions: []datarange.Extension{s.NewExtension()}})
	if err != nil {
		t.Fatal(err)
	}
	st := rangesm.AppliedState{KV: kv.Meta{Revision: 1}}
	if err := sm.Load(db, &st); err != nil {
		t.Fatal(err)
	}
	index := uint64(10)
	// begin applies cmds in one batch and returns a func that commits it.
	begin := func(cmds ...raftcmd.Command) (commit func() []any) {
		t.Helper()
		var out rangesm.Effects
		b := db.NewIndexedBatch()
		ba := sm.Begin(b, &st, &out)
		for _, c := range cmds {
			index++
			if _, err := ba.Apply(c, index, 2); err != nil {
				t.Fatalf("apply %s: %v", c.Kind, err)
			}
		}
		if err := ba.Finish(); err != nil {
			t.Fatal(err)
		}
		return func() []any {
			t.Helper()
			defer b.Close()
			defer ba.Close()
			if err := b.Commit(pebble.NoSync); err != nil {
				t.Fatal(err)
			}
			if err := ba.Committed(); err != nil {
				t.Fatal(err)
			}
			return out.Extensions
		}
	}
	begin(queueCommand(t, raftcmd.KindLeaseGrant, &etcdpb.LeaseGrantRequest{ID: 7, TTL: 10}))()
	attach := &queuewire.Op{Queue: "q", Op: &queuewire.Op_Attach{Attach: &queuewire.Attach{Worker: "w", Lease: 7, Capacity: 1, Stream: "s"}}}
	begin(queueCommand(t, machine.KindBatch, &queuewire.Batch{NowMs: 1000, Ops: []*queuewire.Op{attach}}))()

	stream := &claimStream{s: s, queue: "q", worker: "w", lease: 7, signal: make(chan struct{}, 1), ctx: context.Background(), delivered: map[uint64]int64{}}
	s.mu.Lock()
	s.mu.streams[workerKey{"q", "w"}] = stream
	s.mu.Unlock()

	push := &queuewire.Op{Queue: "q", Op: &queuewire.Op_Push{Push: &queuepb.PushRequest{Queue: "q", Jobs: []*queuepb.JobSpec{{Payload: []byte("work")}}}}}
	commit := begin(queueCommand(t, machine.KindBatch, &queuewire.Batch{NowMs: 1001, Ops: []*queuewire.Op{push}}))
	if got := s.m().Claimed("q", "w", 7); len(got) != 1 {
		t.Fatalf("claims in the machine while the push applies: got %d, want 1", len(got))
	}
	sent := &sentJobs{}
	stream.resync()
	if _, err := stream.send(sent, false); err != nil {
		t.Fatal(err)
	}
	if len(sent.jobs) != 0 {
		t.Fatalf("sent before the commit: got %v, want nothing", sent.jobs)
	}
	s.OnApply(commit(), false)
	if _, err := stream.send(sent, false); err != nil {
		t.Fatal(err)
	}
	if len(sent.jobs) != 1 || string(sent.jobs[0].Payload) != "work" {
		t.Fatalf("sent after the commit: got %v, want the job with payload %q", sent.jobs, "work")
	}
}
