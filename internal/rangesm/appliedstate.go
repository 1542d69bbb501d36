package rangesm

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
)

// AppliedState is the replicated state a range keeps besides its data: how far
// the log has been applied, the Raft configuration, and the KV counters. It is
// written in the same batch as the effects of the entries it covers.
type AppliedState struct {
	Index     uint64
	Term      uint64
	ConfState *pb.ConfState
	KV        kv.Meta
	// NoSpace is set while a member's NOSPACE alarm is active: writes that
	// add data are refused until it is disarmed.
	NoSpace bool
}

const (
	asIndex        protowire.Number = 1
	asTerm         protowire.Number = 2
	asConfState    protowire.Number = 3
	asRevision     protowire.Number = 4
	asCompactedRev protowire.Number = 5
	asNoSpace      protowire.Number = 6
)

func (s *AppliedState) encode() ([]byte, error) {
	cs, err := proto.Marshal(s.ConfState)
	if err != nil {
		return nil, fmt.Errorf("encode conf state: %w", err)
	}
	var b []byte
	b = protowire.AppendTag(b, asIndex, protowire.VarintType)
	b = protowire.AppendVarint(b, s.Index)
	b = protowire.AppendTag(b, asTerm, protowire.VarintType)
	b = protowire.AppendVarint(b, s.Term)
	b = protowire.AppendTag(b, asConfState, protowire.BytesType)
	b = protowire.AppendBytes(b, cs)
	b = protowire.AppendTag(b, asRevision, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(s.KV.Revision))
	b = protowire.AppendTag(b, asCompactedRev, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(s.KV.CompactRevision))
	if s.NoSpace {
		b = protowire.AppendTag(b, asNoSpace, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return b, nil
}

func decodeAppliedState(data []byte) (AppliedState, error) {
	s := AppliedState{ConfState: &pb.ConfState{}}
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return s, protowire.ParseError(n)
		}
		data = data[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return s, protowire.ParseError(n)
			}
			data = data[n:]
			switch num {
			case asIndex:
				s.Index = v
			case asTerm:
				s.Term = v
			case asRevision:
				s.KV.Revision = int64(v)
			case asCompactedRev:
				s.KV.CompactRevision = int64(v)
			case asNoSpace:
				s.NoSpace = v != 0
			}
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return s, protowire.ParseError(n)
			}
			data = data[n:]
			if num == asConfState {
				if err := proto.Unmarshal(v, s.ConfState); err != nil {
					return s, fmt.Errorf("decode conf state: %w", err)
				}
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, data)
			if n < 0 {
				return s, protowire.ParseError(n)
			}
			data = data[n:]
		}
	}
	return s, nil
}

// ErrNoAppliedState means the range has never been bootstrapped on this
// node (or, on a node that joined, has not received its first snapshot).
var ErrNoAppliedState = errors.New("range has no applied state")

// LoadAppliedState reads the applied state of a range.
func LoadAppliedState(r pebble.Reader, id keys.RangeID) (AppliedState, error) {
	v, closer, err := r.Get(keys.RangeAppliedStateKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return AppliedState{}, ErrNoAppliedState
	}
	if err != nil {
		return AppliedState{}, fmt.Errorf("read applied state of range %d: %w", id, err)
	}
	defer closer.Close()
	s, err := decodeAppliedState(v)
	if err != nil {
		return AppliedState{}, fmt.Errorf("decode applied state of range %d: %w", id, err)
	}
	return s, nil
}

// WriteAppliedState stages the applied state of a range in w.
func WriteAppliedState(w pebble.Writer, id keys.RangeID, s *AppliedState) error {
	v, err := s.encode()
	if err != nil {
		return err
	}
	return w.Set(keys.RangeAppliedStateKey(id), v, nil)
}

// IsBootstrapped reports whether the range has state on this node.
func IsBootstrapped(r pebble.Reader, id keys.RangeID) (bool, error) {
	_, err := LoadAppliedState(r, id)
	if errors.Is(err, ErrNoAppliedState) {
		return false, nil
	}
	return err == nil, err
}
