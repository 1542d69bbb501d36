package server

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cockroachdb/pebble/v2"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/keyindex"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/replica"
	"github.com/synod-io/synod/internal/txnlock"
)

// Reads at a revision from the oracle: the store's state at one revision
// R across data ranges. R is fresh from the oracle, so above every revision
// of a write acknowledged before the read began; each data range's leader
// then promises, with a read fence (replica/fence.go), that nothing at or
// below R commits there any more, and names the log index up to which
// entries stamped at or below R may lie; this node serves the read from
// its own store once its replica of each range has applied that index.

const oracleFenceMethod = "/" + oracleServiceName + "/Fence"

// maxFenceRounds bounds the tries of a read whose revision a concurrent
// compaction overtook.
const maxFenceRounds = 3

// fenceDataRanges takes a revision from the oracle and makes every data
// range ready for a read at it on this node.
func (s *Server) fenceDataRanges(ctx context.Context) (int64, error) {
	return s.fenceRanges(ctx, s.dataRanges())
}

// fenceRanges takes a revision from the oracle and makes the data ranges
// ids ready for a read at it on this node, all at once.
// Concurrent callers share the oracle's revision and the fences
// (readbatch.go).
func (s *Server) fenceRanges(ctx context.Context, ids []keys.RangeID) (int64, error) {
	rev, err := s.readRevisions.do(ctx, 0, func(uint64) (uint64, error) {
		// Run for every caller of the round: bounded by its own timeout.
		rctx, cancel := context.WithTimeout(s.ctx, s.cfg.RequestTimeout)
		defer cancel()
		return s.Revisions(rctx, 1)
	})
	if err != nil {
		return 0, err
	}
	fenceOne := func(id keys.RangeID) error {
		f, err := s.fences.fenceAt(ctx, id, rev, func(rev uint64) (uint64, uint64, error) {
			rctx, cancel := context.WithTimeout(s.ctx, s.cfg.RequestTimeout)
			defer cancel()
			return s.fenceRange(rctx, id, rev)
		})
		if err != nil {
			return err
		}
		return s.linearizeRangeAt(ctx, id, f.index, f.term)
	}
	if len(ids) == 1 {
		if err := fenceOne(ids[0]); err != nil {
			return 0, err
		}
		return int64(rev), nil
	}
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() { errs[i] = fenceOne(id) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return int64(rev), nil
}

// fenceRange asks range id's leader for a read fence at rev and returns
// the index this node must apply before it serves the read, and the term
// of the leader that answered (replica.NewReadAtLeast).
func (s *Server) fenceRange(ctx context.Context, id keys.RangeID, rev uint64) (index, term uint64, err error) {
	resp := &wrapperspb.BytesValue{}
	err = s.viaRangeLeader(ctx, id, oracleFenceMethod, encodeFenceRequest(id, rev), resp, func() (proto.Message, error) {
		index, term, err := s.fenceLocal(ctx, id, rev)
		if err != nil {
			return nil, err
		}
		return encodePair(index, term), nil
	})
	if err != nil {
		return 0, 0, err
	}
	index, term, err = decodePair(resp)
	return index, term, err
}

// fenceLocal raises the read fence of this node's replica of range id,
// which must lead it, and confirms with a ReadIndex round that it led the
// range in the fence's term throughout: a leader elected later fetched its
// revisions after that, so above rev.
func (s *Server) fenceLocal(ctx context.Context, id keys.RangeID, rev uint64) (index, term uint64, err error) {
	res, err := s.store.FenceReads(ctx, id, rev)
	if errors.Is(err, replica.ErrNotLeader) {
		return 0, 0, rpctypes.ErrGRPCNotLeader
	}
	if err != nil {
		return 0, 0, err
	}
	term, err = s.confirmLeadership(ctx, id)
	if err != nil {
		return 0, 0, err
	}
	if term != res.Term {
		return 0, 0, rpctypes.ErrGRPCNotLeader
	}
	return res.Index, res.Term, nil
}

// readAtOracle serves fn from the store at a revision from the oracle
// after read fences on the data ranges ids (fenceRanges), once the locks
// over spans (nil: any) of transactions that started below it are resolved
// here: the meta fn gets has that revision, and reads are MVCC reads at
// it (oracleView).
func readAtOracle[T any](ctx context.Context, s *Server, ids []keys.RangeID, spans []txnlock.Span, fn func(pebble.Reader, *keyindex.Snapshot, kv.Meta) (T, error)) (T, error) {
	var zero T
	for round := 1; ; round++ {
		rev, err := s.fenceRanges(ctx, ids)
		if err != nil {
			return zero, err
		}
		// What transactions across ranges that started below rev commit
		// is at or below it: resolved before the view is taken.
		if err := s.resolveLocksBelow(ctx, ids, rev, spans); err != nil {
			return zero, err
		}
		r, compactRev, release, err := s.oracleView(ids)
		if err != nil {
			return zero, err
		}
		if compactRev > rev && round < maxFenceRounds {
			// A compaction above rev (of writes made after the fence)
			// applied meanwhile: versions read at rev may be gone.
			release()
			continue
		}
		if compactRev > rev {
			release()
			return zero, rpctypes.ErrGRPCCompacted
		}
		defer release()
		return fn(r, nil, kv.Meta{Revision: rev, CompactRevision: compactRev})
	}
}

// readResolved serves a serializable read over the data ranges ids
// without a round: at the highest revision this node knows every one of
// them closed at (the watch merger's resolved revision, or the lowest of
// their applied revisions, stamps increasing along a range's log, each
// capped by the floor of the locks of transactions across ranges it
// holds), so the read may be stale but is never torn.
func readResolved[T any](s *Server, ids []keys.RangeID, fn func(pebble.Reader, *keyindex.Snapshot, kv.Meta) (T, error)) (T, error) {
	var zero T
	var rev int64 = -1
	for _, id := range ids {
		pub := s.rangePublished(id)
		if pub == nil || !pub.Initialized {
			return zero, errJoining
		}
		closed := pub.KV.Revision
		if f := datarange.Locks(pub.Derived).Floor(); f > 0 && f < closed {
			// A transaction holding locks here may still commit above
			// its locks' floor.
			closed = f
		}
		if rev < 0 || closed < rev {
			rev = closed
		}
	}
	if m := s.merger.Load(); m != nil {
		rev = max(rev, m.resolvedRevision())
	}
	r, compactRev, release, err := s.oracleView(ids)
	if err != nil {
		return zero, err
	}
	defer release()
	if compactRev > rev {
		return zero, rpctypes.ErrGRPCCompacted
	}
	return fn(r, nil, kv.Meta{Revision: rev, CompactRevision: compactRev})
}

// oracleView returns a view of the data ranges ids as this node applied
// them now, and the highest compaction revision of those ranges. With one
// data range it is that range's shared view. With several it is a Pebble
// snapshot of its own, even for a read of one range: a replica's shared
// view was taken when its own range last changed, and may miss what the
// others applied since. (Reads of one range from its view and index were
// tried and undone: docs/design.md, "Reads take a Pebble snapshot".)
func (s *Server) oracleView(ids []keys.RangeID) (r pebble.Reader, compactRev int64, release func(), err error) {
	if !s.multiRange() {
		snap, meta, err := s.view()
		if err != nil {
			return nil, 0, nil, err
		}
		return snap, meta.CompactRevision, func() { snap.Close() }, nil
	}
	snap := s.db.NewSnapshot()
	rev, err := compactRevisionIn(snap, ids)
	if err != nil {
		snap.Close()
		return nil, 0, nil, err
	}
	return snap, rev, func() { snap.Close() }, nil
}

// compactRevisionIn returns the highest compaction revision of the data
// ranges ids as r holds their applied states: reads below it may miss
// versions.
func compactRevisionIn(r pebble.Reader, ids []keys.RangeID) (int64, error) {
	var rev int64
	for _, id := range ids {
		st, err := replica.LoadAppliedState(r, id)
		if err != nil {
			return 0, err
		}
		rev = max(rev, st.KV.CompactRevision)
	}
	return rev, nil
}

// The peer request for a read fence is a BytesValue holding two varint
// fields, 1 the range and 2 the revision; the answer is one holding 1 the
// index and 2 the term.
func encodeFenceRequest(id keys.RangeID, rev uint64) *wrapperspb.BytesValue {
	return encodePair(uint64(id), rev)
}

func decodeFenceRequest(req *wrapperspb.BytesValue) (keys.RangeID, uint64, error) {
	id, rev, err := decodePair(req)
	return keys.RangeID(id), rev, err
}

func encodePair(a, b uint64) *wrapperspb.BytesValue {
	buf := protowire.AppendTag(nil, 1, protowire.VarintType)
	buf = protowire.AppendVarint(buf, a)
	buf = protowire.AppendTag(buf, 2, protowire.VarintType)
	return wrapperspb.Bytes(protowire.AppendVarint(buf, b))
}

func decodePair(req *wrapperspb.BytesValue) (uint64, uint64, error) {
	var id, rev uint64
	b := req.GetValue()
	for len(b) > 0 {
		num, typ, k := protowire.ConsumeTag(b)
		if k < 0 || typ != protowire.VarintType {
			return 0, 0, status.Error(codes.InvalidArgument, "synod: malformed read fence message")
		}
		v, m := protowire.ConsumeVarint(b[k:])
		if m < 0 {
			return 0, 0, status.Error(codes.InvalidArgument, "synod: malformed read fence message")
		}
		switch num {
		case 1:
			id = v
		case 2:
			rev = v
		}
		b = b[k+m:]
	}
	return id, rev, nil
}

// peerFence answers a read fence request forwarded to this node as the
// leader of a data range.
func peerFence(s *Server, ctx context.Context, req *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	id, rev, err := decodeFenceRequest(req)
	if err != nil {
		return nil, err
	}
	if !s.isDataRange(id) {
		return nil, status.Error(codes.InvalidArgument, fmt.Sprintf("synod: no data range %d to fence", id))
	}
	if !s.isRangeLeader(id) {
		return nil, rpctypes.ErrGRPCNotLeader
	}
	index, term, err := s.fenceLocal(ctx, id, rev)
	if err != nil {
		return nil, err
	}
	return encodePair(index, term), nil
}

// isDataRange reports whether id is one of the data ranges.
func (s *Server) isDataRange(id keys.RangeID) bool {
	for _, d := range s.dataRanges() {
		if d == id {
			return true
		}
	}
	return false
}
