package kv

import (
	"bytes"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/synod-io/synod/internal/keyindex"
)

// Txn applies a txn request in three steps, as etcd does:
//
//  1. Evaluate the compares of the txn and of every nested txn on the
//     chosen path, all against the state before the txn, to fix the path.
//  2. Check everything on the path that can fail, so that a failing txn
//     writes nothing.
//  3. Execute the operations of the path in order, all writes sharing one
//     revision; ranges read the txn's own earlier writes.
func (a *Applier) Txn(r *pb.TxnRequest) (*pb.TxnResponse, error) {
	p, err := a.planTxn(r)
	if err != nil {
		return nil, err
	}
	if err := a.checkTxn(p, &pendingWrites{}); err != nil {
		return nil, err
	}
	c := a.begin()
	resp, err := c.txn(p)
	if err != nil {
		return nil, err
	}
	c.finish()
	resp.Header.Revision = c.headerRev()
	return resp, nil
}

// txnPlan is the path through a txn: the branch chosen by its compares and,
// for each operation of that branch that is a txn, its own plan.
type txnPlan struct {
	succeeded bool
	ops       []*pb.RequestOp
	nested    []*txnPlan // nested[i] is set when ops[i] is a txn
}

func (a *Applier) planTxn(r *pb.TxnRequest) (*txnPlan, error) {
	ok, err := a.compareAll(r.GetCompare())
	if err != nil {
		return nil, err
	}
	ops := r.GetSuccess()
	if !ok {
		ops = r.GetFailure()
	}
	p := &txnPlan{succeeded: ok, ops: ops, nested: make([]*txnPlan, len(ops))}
	for i, op := range ops {
		if t, isTxn := op.GetRequest().(*pb.RequestOp_RequestTxn); isTxn {
			if p.nested[i], err = a.planTxn(t.RequestTxn); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

// checkTxn checks, in execution order, every operation of a planned txn that
// could fail. pending accumulates the writes of the operations checked so
// far, so that a put ignoring its value sees the txn's earlier deletes.
func (a *Applier) checkTxn(p *txnPlan, pending *pendingWrites) error {
	for i, op := range p.ops {
		var err error
		switch req := op.GetRequest().(type) {
		case *pb.RequestOp_RequestRange:
			err = a.checkTxnRange(req.RequestRange)
		case *pb.RequestOp_RequestPut:
			err = a.checkTxnPut(req.RequestPut, pending)
		case *pb.RequestOp_RequestDeleteRange:
			err = checkTxnDelete(req.RequestDeleteRange, pending)
		case *pb.RequestOp_RequestTxn:
			err = a.checkTxn(p.nested[i], pending)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkTxnRange checks the revision a range inside a txn asks for against
// the state before the txn.
func (a *Applier) checkTxnRange(r *pb.RangeRequest) error {
	if err := checkSortOptions(r); err != nil {
		return err
	}
	rev := r.GetRevision()
	switch {
	case rev <= 0:
		return nil
	case rev > a.readRevision():
		return rpctypes.ErrGRPCFutureRev
	case rev < a.Meta.CompactRevision:
		return rpctypes.ErrGRPCCompacted
	}
	return nil
}

func (a *Applier) checkTxnPut(r *pb.PutRequest, pending *pendingWrites) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if err := a.checkPutTarget(r, pending); err != nil {
		return err
	}
	if err := a.checkLease(r.GetLease()); err != nil {
		return err
	}
	pending.add(pendingWrite{start: r.GetKey(), put: true})
	return nil
}

func checkTxnDelete(r *pb.DeleteRangeRequest, pending *pendingWrites) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	start, end := rangeBounds(r.GetKey(), r.GetRangeEnd())
	pending.add(pendingWrite{start: start, end: end})
	return nil
}

// pendingWrites lists the writes a txn makes before the operation being
// checked. A nil *pendingWrites is an empty list.
type pendingWrites struct {
	writes []pendingWrite
}

// pendingWrite is a put of the key start, or a delete of [start, end) (end
// nil: every key >= start).
type pendingWrite struct {
	start, end []byte
	put        bool
}

func (p *pendingWrites) add(w pendingWrite) {
	p.writes = append(p.writes, w)
}

// exists reports whether key exists after the pending writes; stored tells
// whether it exists before them.
func (p *pendingWrites) exists(key []byte, stored func([]byte) (bool, error)) (bool, error) {
	if p != nil {
		for i := len(p.writes) - 1; i >= 0; i-- {
			w := p.writes[i]
			if w.put {
				if bytes.Equal(w.start, key) {
					return true, nil
				}
				continue
			}
			if bytes.Compare(key, w.start) >= 0 && (w.end == nil || bytes.Compare(key, w.end) < 0) {
				return false, nil
			}
		}
	}
	return stored(key)
}

// txn executes a checked plan.
func (c *command) txn(p *txnPlan) (*pb.TxnResponse, error) {
	// Like etcd, only the outermost txn response gets a header revision.
	resp := &pb.TxnResponse{
		Header:    &pb.ResponseHeader{},
		Succeeded: p.succeeded,
		Responses: make([]*pb.ResponseOp, len(p.ops)),
	}
	for i, op := range p.ops {
		out, err := c.op(op, p.nested[i])
		if err != nil {
			return nil, err
		}
		resp.Responses[i] = out
	}
	return resp, nil
}

func (c *command) op(op *pb.RequestOp, nested *txnPlan) (*pb.ResponseOp, error) {
	switch req := op.GetRequest().(type) {
	case *pb.RequestOp_RequestRange:
		if c.a.NoReadResults {
			resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: c.headerRev()}}
			return &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: resp}}, nil
		}
		idx := c.a.index()
		rev := req.RequestRange.GetRevision()
		if rev <= 0 {
			rev = c.headerRev()
			if !c.written && idx != nil && idx.Revision() == c.baseRev {
				// Before the command's writes, the index holds what the
				// range holds at readRevision (commits above Meta's
				// revision too).
				idx = indexAt{Reader: idx, rev: rev}
			}
		}
		resp, err := executeRange(c.a.reader(), idx, req.RequestRange, rev, c.headerRev())
		if err != nil {
			return nil, err
		}
		return &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: resp}}, nil
	case *pb.RequestOp_RequestPut:
		resp, err := c.put(req.RequestPut)
		if err != nil {
			return nil, err
		}
		return &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: resp}}, nil
	case *pb.RequestOp_RequestDeleteRange:
		resp, err := c.deleteRange(req.RequestDeleteRange)
		if err != nil {
			return nil, err
		}
		return &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: resp}}, nil
	case *pb.RequestOp_RequestTxn:
		resp, err := c.txn(nested)
		if err != nil {
			return nil, err
		}
		return &pb.ResponseOp{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: resp}}, nil
	default:
		return &pb.ResponseOp{}, nil
	}
}

// IsReadOnlyTxn reports whether a txn only reads, on both of its branches
// and in every nested txn: etcd serves such a txn as a linearizable read,
// without a Raft entry, and so does Synod (ReadTxn).
func IsReadOnlyTxn(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.GetSuccess(), r.GetFailure()} {
		for _, op := range ops {
			switch req := op.GetRequest().(type) {
			case *pb.RequestOp_RequestRange:
			case *pb.RequestOp_RequestTxn:
				if !IsReadOnlyTxn(req.RequestTxn) {
					return false
				}
			default:
				return false
			}
		}
	}
	return true
}

// ReadTxn serves a read-only txn (IsReadOnlyTxn) outside apply, from a DB or
// snapshot reader whose applied state is m, with the same code, checks and
// errors as apply: the response is the one applying it would give.
func ReadTxn(r pebble.Reader, idx *keyindex.Snapshot, m Meta, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	if !IsReadOnlyTxn(req) {
		return nil, fmt.Errorf("txn writes: it must be applied through raft")
	}
	a := Applier{Reader: r, LiveSnapshot: idx, Meta: &m}
	return a.Txn(req)
}

// TxnKeys calls fn with every key range a txn names, its compares and the
// operations of both branches, nested txns included (end as in etcd: empty
// for a single key, "\x00" for every key from key on), with the lease a
// put attaches (0 otherwise), until fn returns false; it reports whether
// fn never did.
func TxnKeys(t *pb.TxnRequest, fn func(key, end []byte, lease int64) bool) bool {
	for _, c := range t.GetCompare() {
		if !fn(c.GetKey(), c.GetRangeEnd(), 0) {
			return false
		}
	}
	for _, ops := range [][]*pb.RequestOp{t.GetSuccess(), t.GetFailure()} {
		for _, op := range ops {
			ok := true
			switch o := op.GetRequest().(type) {
			case *pb.RequestOp_RequestRange:
				ok = fn(o.RequestRange.GetKey(), o.RequestRange.GetRangeEnd(), 0)
			case *pb.RequestOp_RequestPut:
				ok = fn(o.RequestPut.GetKey(), nil, o.RequestPut.GetLease())
			case *pb.RequestOp_RequestDeleteRange:
				ok = fn(o.RequestDeleteRange.GetKey(), o.RequestDeleteRange.GetRangeEnd(), 0)
			case *pb.RequestOp_RequestTxn:
				ok = TxnKeys(o.RequestTxn, fn)
			}
			if !ok {
				return false
			}
		}
	}
	return true
}

// indexAt is an index of live keys read as of a later revision, at which
// the keys it holds are the same.
type indexAt struct {
	keyindex.Reader
	rev int64
}

func (x indexAt) Revision() int64 { return x.rev }
