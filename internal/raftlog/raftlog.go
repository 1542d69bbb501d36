package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/raftwire"
)

// TruncatedState is the index and term of the last entry removed from the log.
// Term(Index) must keep answering so that Raft can match the next entry.
type TruncatedState struct {
	Index, Term uint64
}

// SnapshotFunc returns a snapshot of the range's current applied state. The
// replica provides it, since only the replica knows its applied state.
type SnapshotFunc func() (*pb.Snapshot, error)

// Storage is the raft.Storage of one range. See the package comment.
type Storage struct {
	db       *pebble.DB
	rangeID  keys.RangeID
	snapshot SnapshotFunc

	hardState *pb.HardState
	confState *pb.ConfState
	trunc     TruncatedState
	lastIndex uint64
	lastTerm  uint64
	cache     entryCache
}

var _ raft.Storage = (*Storage)(nil)

// DefaultCacheBytes bounds the entry cache of one range.
const DefaultCacheBytes = 8 << 20

// Load reads the persisted Raft state of a range. confState is the
// configuration recorded in the range's applied state.
func Load(db *pebble.DB, id keys.RangeID, confState *pb.ConfState, snap SnapshotFunc) (*Storage, error) {
	s := &Storage{
		db:        db,
		rangeID:   id,
		snapshot:  snap,
		hardState: &pb.HardState{},
		confState: confState,
		cache:     entryCache{maxBytes: DefaultCacheBytes},
	}
	if err := readProto(db, keys.RaftHardStateKey(id), s.hardState); err != nil {
		return nil, fmt.Errorf("load hard state of range %d: %w", id, err)
	}
	trunc, err := readTruncatedState(db, id)
	if err != nil {
		return nil, fmt.Errorf("load truncated state of range %d: %w", id, err)
	}
	s.trunc = trunc
	s.lastIndex, s.lastTerm = trunc.Index, trunc.Term
	last, ok, err := s.readLastEntry()
	if err != nil {
		return nil, fmt.Errorf("load last entry of range %d: %w", id, err)
	}
	if ok {
		s.lastIndex, s.lastTerm = last.GetIndex(), last.GetTerm()
	}
	return s, nil
}

func readProto(r pebble.Reader, key []byte, m proto.Message) error {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer closer.Close()
	return proto.Unmarshal(v, m)
}

func readTruncatedState(r pebble.Reader, id keys.RangeID) (TruncatedState, error) {
	v, closer, err := r.Get(keys.RaftTruncatedStateKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return TruncatedState{}, nil
	}
	if err != nil {
		return TruncatedState{}, err
	}
	defer closer.Close()
	if len(v) != 16 {
		return TruncatedState{}, fmt.Errorf("truncated state has %d bytes, want 16", len(v))
	}
	return TruncatedState{Index: binary.BigEndian.Uint64(v), Term: binary.BigEndian.Uint64(v[8:])}, nil
}

func encodeTruncatedState(t TruncatedState) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 16), t.Index)
	return binary.BigEndian.AppendUint64(b, t.Term)
}

func (s *Storage) readLastEntry() (*pb.Entry, bool, error) {
	prefix := keys.RaftLogPrefix(s.rangeID)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: keys.PrefixEnd(prefix)})
	if err != nil {
		return nil, false, err
	}
	defer it.Close()
	if !it.Last() {
		return nil, false, it.Error()
	}
	e := &pb.Entry{}
	if err := proto.Unmarshal(it.Value(), e); err != nil {
		return nil, false, fmt.Errorf("decode last log entry: %w", err)
	}
	return e, true, nil
}

// InitialState implements raft.Storage.
func (s *Storage) InitialState() (*pb.HardState, *pb.ConfState, error) {
	return proto.Clone(s.hardState).(*pb.HardState), proto.Clone(s.confState).(*pb.ConfState), nil
}

// HardState returns the last HardState staged or loaded.
func (s *Storage) HardState() *pb.HardState { return s.hardState }

// FirstIndex implements raft.Storage.
func (s *Storage) FirstIndex() (uint64, error) { return s.trunc.Index + 1, nil }

// LastIndex implements raft.Storage.
func (s *Storage) LastIndex() (uint64, error) { return s.lastIndex, nil }

// Truncated returns the truncated state.
func (s *Storage) Truncated() TruncatedState { return s.trunc }

// Term implements raft.Storage.
func (s *Storage) Term(i uint64) (uint64, error) {
	switch {
	case i == s.trunc.Index:
		return s.trunc.Term, nil
	case i < s.trunc.Index:
		return 0, raft.ErrCompacted
	case i > s.lastIndex:
		return 0, raft.ErrUnavailable
	case i == s.lastIndex:
		return s.lastTerm, nil
	}
	if e, ok := s.cache.get(i); ok {
		return e.GetTerm(), nil
	}
	e, err := s.readEntry(i)
	if err != nil {
		return 0, err
	}
	return e.GetTerm(), nil
}

func (s *Storage) readEntry(i uint64) (*pb.Entry, error) {
	e := &pb.Entry{}
	v, closer, err := s.db.Get(keys.RaftLogKey(s.rangeID, i))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, raft.ErrUnavailable
	}
	if err != nil {
		return nil, fmt.Errorf("read log entry %d of range %d: %w", i, s.rangeID, err)
	}
	defer closer.Close()
	if err := proto.Unmarshal(v, e); err != nil {
		return nil, fmt.Errorf("decode log entry %d of range %d: %w", i, s.rangeID, err)
	}
	return e, nil
}

// Entries implements raft.Storage.
func (s *Storage) Entries(lo, hi, maxSize uint64) ([]*pb.Entry, error) {
	if lo <= s.trunc.Index {
		return nil, raft.ErrCompacted
	}
	if hi > s.lastIndex+1 {
		return nil, fmt.Errorf("entries [%d, %d) beyond last index %d", lo, hi, s.lastIndex)
	}
	if lo >= hi {
		return nil, nil
	}
	if ents, ok := s.cache.scan(lo, hi, maxSize); ok {
		return ents, nil
	}
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: keys.RaftLogKey(s.rangeID, lo),
		UpperBound: keys.RaftLogKey(s.rangeID, hi),
	})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var ents []*pb.Entry
	var size uint64
	next := lo
	for valid := it.First(); valid; valid = it.Next() {
		e := &pb.Entry{}
		if err := proto.Unmarshal(it.Value(), e); err != nil {
			return nil, fmt.Errorf("decode log entry of range %d: %w", s.rangeID, err)
		}
		if e.GetIndex() != next {
			return nil, raft.ErrUnavailable
		}
		size += uint64(raftwire.EntrySize(e))
		if len(ents) > 0 && size > maxSize {
			break
		}
		ents = append(ents, e)
		next++
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	if len(ents) == 0 {
		return nil, raft.ErrUnavailable
	}
	return ents, nil
}

// Snapshot implements raft.Storage by asking the replica for a snapshot of its
// current applied state.
func (s *Storage) Snapshot() (*pb.Snapshot, error) {
	if s.snapshot == nil {
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	return s.snapshot()
}

// Append stages entries in b, replacing any conflicting suffix of the log.
func (s *Storage) Append(b *pebble.Batch, ents []*pb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	first := ents[0].GetIndex()
	if first <= s.trunc.Index {
		return fmt.Errorf("append at %d below truncated index %d", first, s.trunc.Index)
	}
	if first > s.lastIndex+1 {
		return fmt.Errorf("append at %d leaves a gap after last index %d", first, s.lastIndex)
	}
	var buf []byte
	for _, e := range ents {
		var err error
		buf, err = raftwire.AppendEntry(buf[:0], e)
		if err != nil {
			return fmt.Errorf("encode log entry %d: %w", e.GetIndex(), err)
		}
		if err := b.Set(keys.RaftLogKey(s.rangeID, e.GetIndex()), buf, nil); err != nil {
			return err
		}
	}
	last := ents[len(ents)-1]
	if last.GetIndex() < s.lastIndex {
		// The new entries replace a longer tail: remove what is left of it.
		if err := b.DeleteRange(keys.RaftLogKey(s.rangeID, last.GetIndex()+1), keys.RaftLogKey(s.rangeID, s.lastIndex+1), nil); err != nil {
			return err
		}
	}
	s.cache.append(ents)
	s.lastIndex, s.lastTerm = last.GetIndex(), last.GetTerm()
	return nil
}

// SetHardState stages hs in b.
func (s *Storage) SetHardState(b *pebble.Batch, hs *pb.HardState) error {
	v, err := proto.Marshal(hs)
	if err != nil {
		return fmt.Errorf("encode hard state: %w", err)
	}
	if err := b.Set(keys.RaftHardStateKey(s.rangeID), v, nil); err != nil {
		return err
	}
	s.hardState = proto.Clone(hs).(*pb.HardState)
	return nil
}

// SetConfState records the configuration InitialState reports. The replica
// persists it as part of its applied state.
func (s *Storage) SetConfState(cs *pb.ConfState) { s.confState = proto.Clone(cs).(*pb.ConfState) }

// InstallSnapshot stages in b the removal of the whole log: after a snapshot
// at (index, term) is installed, the log restarts after it.
func (s *Storage) InstallSnapshot(b *pebble.Batch, meta *pb.SnapshotMetadata) error {
	prefix := keys.RaftLogPrefix(s.rangeID)
	if err := b.DeleteRange(prefix, keys.PrefixEnd(prefix), nil); err != nil {
		return err
	}
	t := TruncatedState{Index: meta.GetIndex(), Term: meta.GetTerm()}
	if err := b.Set(keys.RaftTruncatedStateKey(s.rangeID), encodeTruncatedState(t), nil); err != nil {
		return err
	}
	s.trunc = t
	s.lastIndex, s.lastTerm = t.Index, t.Term
	s.confState = proto.Clone(meta.GetConfState()).(*pb.ConfState)
	s.cache.clear()
	return nil
}

// Truncate stages in b the removal of entries up to and including index,
// which must be applied already. It is a no-op if index is not above the
// truncated index.
func (s *Storage) Truncate(b *pebble.Batch, index uint64) error {
	if index <= s.trunc.Index {
		return nil
	}
	if index > s.lastIndex {
		return fmt.Errorf("truncate to %d beyond last index %d", index, s.lastIndex)
	}
	term, err := s.Term(index)
	if err != nil {
		return fmt.Errorf("term of truncation point %d: %w", index, err)
	}
	if err := b.DeleteRange(keys.RaftLogKey(s.rangeID, s.trunc.Index+1), keys.RaftLogKey(s.rangeID, index+1), nil); err != nil {
		return err
	}
	t := TruncatedState{Index: index, Term: term}
	if err := b.Set(keys.RaftTruncatedStateKey(s.rangeID), encodeTruncatedState(t), nil); err != nil {
		return err
	}
	s.trunc = t
	s.cache.dropBefore(index + 1)
	return nil
}

// Bootstrap stages the initial Raft state of a new range in b: a log that
// is empty but truncated at (index, term), with that entry committed. The
// configuration is part of the applied state, not of the log, so a log that
// starts after index 1 makes Raft catch any new member up by snapshot, which
// carries the configuration.
func Bootstrap(b *pebble.Batch, id keys.RangeID, index, term uint64) error {
	if err := b.Set(keys.RaftTruncatedStateKey(id), encodeTruncatedState(TruncatedState{Index: index, Term: term}), nil); err != nil {
		return err
	}
	hs, err := proto.Marshal(&pb.HardState{Term: proto.Uint64(term), Commit: proto.Uint64(index)})
	if err != nil {
		return err
	}
	return b.Set(keys.RaftHardStateKey(id), hs, nil)
}
