package datarange

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	raftpb "go.etcd.io/raft/v3/raftpb"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/raftlog"
	"github.com/synod-io/synod/internal/rangedesc"
	"github.com/synod-io/synod/internal/rangesm"
	"github.com/synod-io/synod/internal/txnlock"
)

// Splits. A split is one command in the log of the range it splits
// (raftcmd.KindRangeSplit): every replica applies it at the same index,
// where the range keeps the keys below the split key and a new range, with
// the same replicas and configuration, takes the rest. The data of the
// new range's keys is already in every replica's store (the ranges of a
// node share one Pebble instance); the command writes both descriptors
// (each range's own, keys.RangeDescriptorKey) and the new range's Raft and
// applied state, at the left range's KV counters, in the batch of the
// entry. Commands routed before the split that name the new range's keys
// are refused from then on with ErrRangeChanged, and routed again.

// ErrRangeChanged is the error of a command that names keys outside the
// range it reached (a split applied since the proposer routed it): it
// wrote nothing, and the proposer routes it again with the range
// descriptors it has now.
var ErrRangeChanged = status.Error(codes.Unavailable, "synod: the range changed since the request was routed")

// ErrSplitBusy is the error of a split of a range whose right-hand side
// holds locks or records of transactions across ranges: the split is
// tried again once they are resolved.
var ErrSplitBusy = status.Error(codes.Unavailable, "synod: transactions across ranges hold keys above the split key")

// SplitResult is the response of an applied split: the two ranges.
type SplitResult struct {
	Left, Right rangedesc.Descriptor
}

// The Raft position a range made by a split starts at, as a bootstrapped
// one (replica.InitialIndex, InitialTerm): a log that is empty but
// truncated there, so every replica that lacks the state gets a snapshot.
const (
	splitInitialIndex uint64 = 10
	splitInitialTerm  uint64 = 5
)

func (a *batch) applySplit(cmd raftcmd.Command) (Result, error) {
	c, err := rangedesc.DecodeSplitCommand(cmd.Payload)
	if err != nil {
		return Result{Err: status.Error(codes.InvalidArgument, err.Error())}, nil
	}
	d := a.desc
	if c.Generation != d.Generation {
		return Result{Err: ErrRangeChanged}, nil
	}
	if bytes.Compare(c.Key, d.Start) <= 0 || (len(d.End) > 0 && bytes.Compare(c.Key, d.End) >= 0) {
		return Result{Err: status.Errorf(codes.InvalidArgument, "synod: split key %q is not inside %v", c.Key, d)}, nil
	}
	if c.NewID == d.RangeID || c.NewID == keys.SystemRangeID {
		return Result{Err: status.Errorf(codes.InvalidArgument, "synod: split into range %d", c.NewID)}, nil
	}
	right := rangedesc.Descriptor{RangeID: c.NewID, Start: c.Key, End: d.End, Generation: 1}
	if busy, err := a.txnsIn(right); err != nil || busy {
		if err != nil {
			return Result{}, err
		}
		return Result{Err: ErrSplitBusy}, nil
	}
	moves, busy, err := a.recordsOf(right)
	if err != nil {
		return Result{}, err
	}
	if busy {
		return Result{Err: ErrSplitBusy}, nil
	}
	exists, err := rangesm.IsBootstrapped(a.b, c.NewID)
	if err != nil {
		return Result{}, err
	}
	if exists {
		// Its state came here first (a snapshot of the new range, which
		// a node takes only once its left range's span no longer
		// overlaps it): leave it.
		a.m.cfg.Logger.Warn("split: the new range already has state here", "range", c.NewID)
	} else if err := a.createRight(right); err != nil {
		return Result{}, err
	}
	for _, m := range moves {
		if err := a.b.Delete(keys.TxnRecordKey(a.m.cfg.RangeID, m.txn), nil); err != nil {
			return Result{}, err
		}
		if err := a.b.Set(keys.TxnRecordKey(right.RangeID, m.txn), m.val, nil); err != nil {
			return Result{}, err
		}
	}
	left := d
	left.End, left.Generation = bytes.Clone(c.Key), d.Generation+1
	if err := rangedesc.PutLocal(a.b, left); err != nil {
		return Result{}, err
	}
	a.desc = left
	a.out.Splits = append(a.out.Splits, rangesm.Split{Left: left, Right: right, Revision: a.st.KV.Revision})
	return Result{Resp: SplitResult{Left: left, Right: right}}, nil
}

// createRight stages the state of the range a split makes: its descriptor,
// an empty Raft log at the initial position (keeping a term and vote it
// may have cast here before), the left range's applied KV counters and
// configuration, its copy of the system state and its highest commit
// revision.
func (a *batch) createRight(right rangedesc.Descriptor) error {
	if err := rangedesc.PutLocal(a.b, right); err != nil {
		return err
	}
	if err := bootstrapRaft(a.b, right.RangeID); err != nil {
		return err
	}
	cs := &raftpb.ConfState{}
	if a.st.ConfState != nil {
		cs = proto.Clone(a.st.ConfState).(*raftpb.ConfState)
	}
	st := rangesm.AppliedState{
		Index:     splitInitialIndex,
		Term:      splitInitialTerm,
		ConfState: cs,
		KV:        a.st.KV,
		NoSpace:   a.st.NoSpace,
	}
	if err := rangesm.WriteAppliedState(a.b, right.RangeID, &st); err != nil {
		return err
	}
	if err := copyKey(a.b, keys.RangeSystemStateKey(a.m.cfg.RangeID), keys.RangeSystemStateKey(right.RangeID)); err != nil {
		return err
	}
	if a.maxCommit > 0 {
		if err := a.b.Set(keys.TxnStateKey(right.RangeID), txnlock.Encode(txnState{MaxCommit: a.maxCommit}), nil); err != nil {
			return err
		}
	}
	return nil
}

// bootstrapRaft stages the initial Raft state of the new range, keeping a
// term and vote a replica of it that had no state yet may have cast on
// this node (Raft must never take them back).
func bootstrapRaft(b *pebble.Batch, id keys.RangeID) error {
	var prev raftpb.HardState
	v, closer, err := b.Get(keys.RaftHardStateKey(id))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return fmt.Errorf("read HardState of range %d: %w", id, err)
	default:
		err = proto.Unmarshal(v, &prev)
		closer.Close()
		if err != nil {
			return fmt.Errorf("decode HardState of range %d: %w", id, err)
		}
	}
	if err := raftlog.Bootstrap(b, id, splitInitialIndex, splitInitialTerm); err != nil {
		return err
	}
	if prev.GetTerm() <= splitInitialTerm {
		return nil
	}
	hs := &raftpb.HardState{Term: prev.Term, Vote: prev.Vote, Commit: proto.Uint64(max(prev.GetCommit(), splitInitialIndex))}
	data, err := proto.Marshal(hs)
	if err != nil {
		return err
	}
	return b.Set(keys.RaftHardStateKey(id), data, nil)
}

func copyKey(b *pebble.Batch, from, to []byte) error {
	v, closer, err := b.Get(from)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %q: %w", from, err)
	}
	defer closer.Close()
	return b.Set(to, v, nil)
}

// txnsIn reports whether a transaction across ranges holds a lock over a
// key of d, or has its record (its primary key) in d.
func (a *batch) txnsIn(d rangedesc.Descriptor) (bool, error) {
	span := txnlock.Span{Start: d.Start, End: end(d)}
	for _, l := range a.locks.All() {
		if l.Overlaps(span) || span.Contains(l.Primary) {
			return true, nil
		}
	}
	return false, nil
}

// recordMove is a transaction record a split moves to the right range.
type recordMove struct {
	txn int64
	val []byte
}

// recordsOf returns the records of transactions whose primary key the
// right range holds, which the split moves into it: whoever meets one of
// their locks elsewhere pushes the record in the primary's range. A record
// from before records named their primary makes the split wait (it is
// forgotten once its transaction is resolved).
func (a *batch) recordsOf(right rangedesc.Descriptor) (moves []recordMove, busy bool, err error) {
	rs := keys.TxnRecordSpan(a.m.cfg.RangeID)
	it, err := a.b.NewIter(&pebble.IterOptions{LowerBound: rs.Start, UpperBound: rs.End})
	if err != nil {
		return nil, false, fmt.Errorf("read txn records: %w", err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		rec, err := txnlock.DecodeRecord(it.Value())
		if err != nil {
			_ = it.Close()
			return nil, false, err
		}
		switch {
		case rec.Primary == nil:
			_ = it.Close()
			return nil, true, nil
		case right.Contains(rec.Primary):
			k := it.Key()
			moves = append(moves, recordMove{txn: int64(binary.BigEndian.Uint64(k[len(k)-8:])), val: bytes.Clone(it.Value())})
		}
	}
	if err := it.Close(); err != nil {
		return nil, false, fmt.Errorf("read txn records: %w", err)
	}
	return moves, false, nil
}
