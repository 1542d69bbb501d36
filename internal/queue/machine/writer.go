package machine

import (
	"fmt"
	"math"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/mvcc"
)

// maxIDsPerRevision bounds the jobs pushed in one revision: a job's ID is
// its push's revision shifted left by idShift, plus its place.
const (
	idShift           = 16
	maxIDsPerRevision = 1<<idShift - 1
)

// writer gathers the MVCC writes of a command and makes them in one KV txn,
// so that they share one revision: the revision of a claim's writes is its
// fencing token, and the revision of a push names its jobs.
type writer struct {
	env   *datarange.Env
	ops   []*etcdpb.RequestOp
	byKey map[string]int // index of each key's op in ops
	seq   uint64         // IDs given out in this revision
}

func newWriter(env *datarange.Env) *writer {
	return &writer{env: env, byKey: map[string]int{}}
}

// rev is the revision of the writes not yet flushed.
func (w *writer) rev() int64 { return w.env.KV.WriteRevision() }

// room reports whether n more IDs fit in this revision.
func (w *writer) room(n int) bool { return w.seq+uint64(n) <= maxIDsPerRevision }

// nextID returns the ID of the next job pushed in this revision.
func (w *writer) nextID() uint64 {
	id := uint64(w.rev())<<idShift | w.seq
	w.seq++
	return id
}

func (w *writer) add(key []byte, op *etcdpb.RequestOp) {
	if i, ok := w.byKey[string(key)]; ok {
		w.ops[i] = op // one write per key and revision: the last wins
		return
	}
	w.byKey[string(key)] = len(w.ops)
	w.ops = append(w.ops, op)
}

func (w *writer) putRaw(key, value []byte, lease int64) {
	w.add(key, &etcdpb.RequestOp{Request: &etcdpb.RequestOp_RequestPut{RequestPut: &etcdpb.PutRequest{Key: key, Value: value, Lease: lease}}})
}

func (w *writer) put(key []byte, m proto.Message) error {
	v, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	w.putRaw(key, v, 0)
	return nil
}

func (w *writer) del(key []byte) {
	w.add(key, &etcdpb.RequestOp{Request: &etcdpb.RequestOp_RequestDeleteRange{RequestDeleteRange: &etcdpb.DeleteRangeRequest{Key: key}}})
}

// get reads key's value as the command's writes so far leave it (nil:
// absent).
func (w *writer) get(key []byte) ([]byte, error) {
	if i, ok := w.byKey[string(key)]; ok {
		if p, isPut := w.ops[i].Request.(*etcdpb.RequestOp_RequestPut); isPut {
			return p.RequestPut.Value, nil
		}
		return nil, nil
	}
	kv, err := mvcc.Get(w.env.Batch, key, math.MaxInt64)
	if err != nil || kv == nil {
		return nil, err
	}
	return kv.Value, nil
}

// flush makes the gathered writes, in one revision.
func (w *writer) flush() error {
	if len(w.ops) == 0 {
		return nil
	}
	_, err := w.env.KV.Txn(&etcdpb.TxnRequest{Success: w.ops})
	w.ops, w.seq = nil, 0
	clear(w.byKey)
	if err != nil {
		// Every write was checked before it was gathered: a refusal here
		// is a bug, and the batch may hold part of the txn.
		return fmt.Errorf("queue writes: %w", err)
	}
	return nil
}
