package machine

import (
	"crypto/sha256"
	"fmt"
	"log"
	"math"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/queue/queuewire"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangesm"
)

// quietLogger drops Pebble's informational messages.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)         {}
func (quietLogger) Errorf(f string, args ...any) { log.Printf(f, args...) }
func (quietLogger) Fatalf(f string, args ...any) { log.Fatalf(f, args...) }

// rep is one replica of a data range with the queue extension, applying
// commands as the replica would.
type rep struct {
	t     testing.TB
	db    *pebble.DB
	ext   *Machine
	sm    *datarange.Machine
	st    rangesm.AppliedState
	index uint64
	// horizon and budget, if set, replace the machine's defaultHorizonMs
	// and defaultPromoteBudget.
	horizon int64
	budget  int
}

func newRep(t testing.TB) *rep {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r := &rep{t: t, db: db, st: rangesm.AppliedState{KV: kv.Meta{Revision: 1}}, index: 10}
	r.reload()
	return r
}

// reload starts the replica's state machine afresh from its store, as a
// restart does.
func (r *rep) reload() {
	r.ext = New()
	if r.horizon != 0 {
		r.ext.horizonMs = r.horizon
	}
	if r.budget != 0 {
		r.ext.promoteBudget = r.budget
	}
	sm, err := datarange.New(datarange.Config{RangeID: keys.FirstDataRangeID, NodeID: 1, DB: r.db, Extensions: []datarange.Extension{r.ext}})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := sm.Load(r.db, &r.st); err != nil {
		r.t.Fatal(err)
	}
	r.sm = sm
}

// apply applies cmds in one batch and returns their results and the
// queue effects.
func (r *rep) apply(cmds ...raftcmd.Command) ([]rangesm.Result, []*Effect) {
	r.t.Helper()
	var out rangesm.Effects
	b := r.db.NewIndexedBatch()
	defer b.Close()
	ba := r.sm.Begin(b, &r.st, &out)
	defer ba.Close()
	var res []rangesm.Result
	for _, c := range cmds {
		r.index++
		x, err := ba.Apply(c, r.index, 2)
		if err != nil {
			r.t.Fatalf("apply %s: %v", c.Kind, err)
		}
		res = append(res, x)
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
	var effs []*Effect
	for _, e := range out.Extensions {
		effs = append(effs, e.(*Effect))
	}
	return res, effs
}

func command(kind raftcmd.Kind, m proto.Message) raftcmd.Command {
	p, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return raftcmd.Command{RangeID: 1, Proposer: 1, RequestID: 1, Kind: kind, Payload: p}
}

func batch(now int64, ops ...*queuewire.Op) raftcmd.Command {
	return command(KindBatch, &queuewire.Batch{NowMs: now, Ops: ops})
}

func tickCmd(t *queuewire.Tick) raftcmd.Command { return command(KindTick, t) }

func grant(id int64) raftcmd.Command {
	return command(raftcmd.KindLeaseGrant, &etcdpb.LeaseGrantRequest{ID: id, TTL: 10})
}

func revoke(id int64) raftcmd.Command {
	return command(raftcmd.KindLeaseRevoke, &etcdpb.LeaseRevokeRequest{ID: id})
}

func pushOp(q string, specs ...*queuepb.JobSpec) *queuewire.Op {
	return &queuewire.Op{Queue: q, Op: &queuewire.Op_Push{Push: &queuepb.PushRequest{Queue: q, Jobs: specs}}}
}

func attachOp(q, w string, lease int64, capacity int32) *queuewire.Op {
	return &queuewire.Op{Queue: q, Op: &queuewire.Op_Attach{Attach: &queuewire.Attach{Worker: w, Lease: lease, Capacity: capacity, Stream: w + "-s"}}}
}

func detachOp(q, w string) *queuewire.Op {
	return &queuewire.Op{Queue: q, Op: &queuewire.Op_Detach{Detach: &queuewire.Detach{Worker: w, Stream: w + "-s"}}}
}

func completeOp(q string, id uint64, token int64, result string) *queuewire.Op {
	return &queuewire.Op{Queue: q, Op: &queuewire.Op_Finish{Finish: &queuepb.Finish{Id: id, Token: token, Result: []byte(result)}}}
}

func failOp(q string, id uint64, token int64, msg string, permanent bool) *queuewire.Op {
	return &queuewire.Op{Queue: q, Op: &queuewire.Op_Finish{Finish: &queuepb.Finish{Id: id, Token: token, Error: msg, Permanent: permanent}}}
}

func cancelOp(q string, id uint64) *queuewire.Op {
	return &queuewire.Op{Queue: q, Op: &queuewire.Op_Cancel{Cancel: &queuepb.CancelRequest{Queue: q, Id: id}}}
}

func configureOp(q string, c *queuepb.ConfigureRequest) *queuewire.Op {
	return &queuewire.Op{Queue: q, Op: &queuewire.Op_Configure{Configure: c}}
}

// results returns the operation results of a batch command's result.
func results(t testing.TB, r rangesm.Result) []OpResult {
	t.Helper()
	if r.Err != nil {
		t.Fatalf("command refused: %v", r.Err)
	}
	return r.Resp.(*BatchResult).Results
}

// pushIDs pushes specs in one batch at now and returns their IDs.
func (r *rep) pushIDs(now int64, q string, specs ...*queuepb.JobSpec) []uint64 {
	r.t.Helper()
	res, _ := r.apply(batch(now, pushOp(q, specs...)))
	out := results(r.t, res[0])[0]
	if out.Err != nil {
		r.t.Fatalf("push: %v", out.Err)
	}
	return out.Resp.(*queuepb.PushResponse).Ids
}

func claims(effs []*Effect) []Claim {
	var out []Claim
	for _, e := range effs {
		out = append(out, e.Claimed...)
	}
	return out
}

func revocations(effs []*Effect) []Revocation {
	var out []Revocation
	for _, e := range effs {
		out = append(out, e.Revoked...)
	}
	return out
}

func claimIDs(cs []Claim) []uint64 {
	var out []uint64
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

// jobState reads a job's stored state.
func (r *rep) jobState(q string, id uint64) *queuewire.StateRecord {
	r.t.Helper()
	kv, err := mvcc.Get(r.db, StateKey(q, id), math.MaxInt64)
	if err != nil {
		r.t.Fatal(err)
	}
	if kv == nil {
		return nil
	}
	var st queuewire.StateRecord
	if err := proto.Unmarshal(kv.Value, &st); err != nil {
		r.t.Fatal(err)
	}
	return &st
}

// dump is a digest of every MVCC version in the store.
func (r *rep) dump() string {
	it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: keys.MVCCSpan().Start, UpperBound: keys.MVCCSpan().End})
	if err != nil {
		r.t.Fatal(err)
	}
	defer it.Close()
	h := sha256.New()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		h.Write(it.Key())
		h.Write([]byte{0})
		h.Write(it.Value())
		n++
	}
	return fmt.Sprintf("%d versions, %x", n, h.Sum(nil))
}
