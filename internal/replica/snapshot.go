package replica

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keys"
)

// OutgoingSnapshot is a point-in-time view of a range's replicated state,
// taken when Raft asked for a snapshot, to be streamed to one follower. Its
// owner (the transport, once SendSnapshot is called) must Close it.
type OutgoingSnapshot struct {
	ID          uint64
	RangeID     keys.RangeID
	Meta        *pb.SnapshotMetadata
	snap        *pebble.Snapshot
	spans       []keys.Span // nil: keys.ReplicatedSpans(RangeID)
	createdTick uint64
}

// Close releases the Pebble snapshot.
func (s *OutgoingSnapshot) Close() {
	if s.snap != nil {
		s.snap.Close()
		s.snap = nil
	}
}

// KeyValue is one Pebble key and value of a snapshot.
type KeyValue struct {
	Key, Value []byte
}

// Iterate calls fn with consecutive chunks of the snapshot's key/value
// pairs, each about chunkBytes large. The slices are valid only during fn.
func (s *OutgoingSnapshot) Iterate(chunkBytes int, fn func([]KeyValue) error) error {
	var chunk []KeyValue
	size := 0
	spans := s.spans
	if spans == nil {
		spans = keys.ReplicatedSpans(s.RangeID)
	}
	for _, span := range spans {
		it, err := s.snap.NewIter(&pebble.IterOptions{LowerBound: span.Start, UpperBound: span.End})
		if err != nil {
			return err
		}
		for valid := it.First(); valid; valid = it.Next() {
			v, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return err
			}
			kv := KeyValue{Key: append([]byte(nil), it.Key()...), Value: append([]byte(nil), v...)}
			chunk = append(chunk, kv)
			size += len(kv.Key) + len(kv.Value)
			if size >= chunkBytes {
				if err := fn(chunk); err != nil {
					it.Close()
					return err
				}
				chunk, size = chunk[:0], 0
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
	}
	if len(chunk) > 0 {
		return fn(chunk)
	}
	return nil
}

// NewOutgoingSnapshot takes a snapshot of a range's replicated state as it
// is in db now (for backups and tests; replicas snapshot themselves).
func NewOutgoingSnapshot(db *pebble.DB, id keys.RangeID) (*OutgoingSnapshot, error) {
	snap := db.NewSnapshot()
	st, err := LoadAppliedState(snap, id)
	if err != nil {
		snap.Close()
		return nil, err
	}
	return &OutgoingSnapshot{RangeID: id, Meta: snapshotMetadata(&st), snap: snap}, nil
}

func snapshotMetadata(s *AppliedState) *pb.SnapshotMetadata {
	return &pb.SnapshotMetadata{
		Index:     proto.Uint64(s.Index),
		Term:      proto.Uint64(s.Term),
		ConfState: proto.Clone(s.ConfState).(*pb.ConfState),
	}
}

// snapshot implements raftlog.SnapshotFunc: it describes the applied state
// at this instant and keeps a Pebble snapshot of it for the transport. Raft
// calls it on this replica's goroutine, when r.state matches what is
// committed to Pebble.
func (r *Replica) snapshot() (*pb.Snapshot, error) {
	r.nextSnapID++
	s := &OutgoingSnapshot{
		ID:          r.nextSnapID,
		RangeID:     r.cfg.RangeID,
		Meta:        snapshotMetadata(&r.state),
		snap:        r.db.NewSnapshot(),
		spans:       r.Spans(),
		createdTick: r.tick,
	}
	r.outgoing[s.ID] = s
	return &pb.Snapshot{
		Data:     binary.BigEndian.AppendUint64(nil, s.ID),
		Metadata: s.Meta,
	}, nil
}

func (r *Replica) takeOutgoing(m *pb.Message) *OutgoingSnapshot {
	data := m.GetSnapshot().GetData()
	if len(data) != 8 {
		return nil
	}
	id := binary.BigEndian.Uint64(data)
	s, ok := r.outgoing[id]
	if !ok {
		return nil
	}
	delete(r.outgoing, id)
	return s
}

// IncomingSnapshot collects the data of a snapshot streamed from the leader.
// Any goroutine may build one; it is handed to the replica by StepSnapshot.
type IncomingSnapshot struct {
	rangeID keys.RangeID
	spans   []keys.Span
	batch   *pebble.Batch
}

// NewIncomingSnapshot starts collecting a snapshot of range id.
func NewIncomingSnapshot(db *pebble.DB, id keys.RangeID) *IncomingSnapshot {
	return NewIncomingSnapshotOf(db, id, keys.ReplicatedSpans(id))
}

// NewIncomingSnapshotOf starts collecting a snapshot of range id, whose
// replicated state is spans (Replica.Spans).
func NewIncomingSnapshotOf(db *pebble.DB, id keys.RangeID, spans []keys.Span) *IncomingSnapshot {
	return &IncomingSnapshot{rangeID: id, spans: spans, batch: db.NewBatch()}
}

// Add records one key/value pair. Keys outside the range's replicated spans
// are refused: a snapshot must never touch a node's Raft log or another range.
func (s *IncomingSnapshot) Add(key, value []byte) error {
	inside := false
	for _, sp := range s.spans {
		if bytes.Compare(key, sp.Start) >= 0 && bytes.Compare(key, sp.End) < 0 {
			inside = true
			break
		}
	}
	if !inside {
		return fmt.Errorf("snapshot key %q outside range %d", key, s.rangeID)
	}
	return s.batch.Set(key, value, nil)
}

// Iterate calls fn for each key/value pair collected so far, in the order
// they were added.
func (s *IncomingSnapshot) Iterate(fn func(key, value []byte) error) error {
	r := s.batch.Reader()
	for {
		kind, k, v, ok, err := r.Next()
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		if kind != pebble.InternalKeyKindSet {
			continue
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
}

// Close discards the collected data.
func (s *IncomingSnapshot) Close() {
	if s.batch != nil {
		s.batch.Close()
		s.batch = nil
	}
}

type incomingSnapshot struct {
	index uint64
	data  *IncomingSnapshot
}

func (s *incomingSnapshot) close() { s.data.Close() }

// StepSnapshot hands Raft a snapshot message whose data has been received in
// full. If Raft accepts it, the next HandleReady installs the data.
func (r *Replica) StepSnapshot(m *pb.Message, data *IncomingSnapshot) error {
	if m.GetType() != pb.MsgSnap || data.rangeID != r.cfg.RangeID {
		data.Close()
		return fmt.Errorf("not a snapshot of range %d", r.cfg.RangeID)
	}
	if r.incoming != nil {
		r.incoming.close()
	}
	r.incoming = &incomingSnapshot{index: m.GetSnapshot().GetMetadata().GetIndex(), data: data}
	return r.rn.Step(m)
}

// stageSnapshotInstall stages in b the replacement of the range's replicated
// state by the received snapshot, and the reset of its log.
func (r *Replica) stageSnapshotInstall(b *pebble.Batch, snap *pb.Snapshot) error {
	meta := snap.GetMetadata()
	if r.incoming == nil || r.incoming.index != meta.GetIndex() {
		return fmt.Errorf("range %d: raft installs snapshot at %d but its data was not received", r.cfg.RangeID, meta.GetIndex())
	}
	for _, span := range r.Spans() {
		if err := b.DeleteRange(span.Start, span.End, nil); err != nil {
			return err
		}
	}
	if err := b.Apply(r.incoming.data.batch, nil); err != nil {
		return fmt.Errorf("stage snapshot data: %w", err)
	}
	return r.log.InstallSnapshot(b, meta)
}

func (r *Replica) finishSnapshotInstall(snap *pb.Snapshot) error {
	meta := snap.GetMetadata()
	st, err := LoadAppliedState(r.db, r.cfg.RangeID)
	if err != nil {
		return fmt.Errorf("load installed snapshot: %w", err)
	}
	if st.Index != meta.GetIndex() || st.Term != meta.GetTerm() {
		return fmt.Errorf("range %d: snapshot data is at %d/%d but raft says %d/%d",
			r.cfg.RangeID, st.Index, st.Term, meta.GetIndex(), meta.GetTerm())
	}
	r.state = st
	r.incoming.close()
	r.incoming = nil
	// Proposals made here may or may not be in the snapshot: their outcome
	// can no longer be told.
	for id, p := range r.proposals {
		delete(r.proposals, id)
		p.complete(Result{Err: ErrAbandoned})
	}
	if err := r.sm.Load(r.db, &r.state); err != nil {
		return fmt.Errorf("range %d: installed snapshot: %w", r.cfg.RangeID, err)
	}
	r.freshIfPartial()
	r.logger.Info("installed snapshot", "index", st.Index, "term", st.Term, "revision", st.KV.Revision)
	r.publish()
	return nil
}
