package transport

import (
	"bytes"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// frame is implemented by every message of the peer service.
type frame interface {
	marshal() []byte
	unmarshal([]byte) error
}

// codec marshals frames for gRPC.
type codec struct{}

func (codec) Name() string { return "synod-peer" }

// Marshal encodes a frame, or a protobuf message for the other services
// that share the peer server (lease forwarding).
func (codec) Marshal(v any) ([]byte, error) {
	switch f := v.(type) {
	case frame:
		return f.marshal(), nil
	case proto.Message:
		return proto.Marshal(f)
	}
	return nil, fmt.Errorf("peer codec cannot marshal %T", v)
}

// Unmarshal decodes a frame. gRPC reuses data once Unmarshal returns, and
// frames alias the bytes they decode, so they decode from a private copy.
func (codec) Unmarshal(data []byte, v any) error {
	switch f := v.(type) {
	case frame:
		return f.unmarshal(bytes.Clone(data))
	case proto.Message:
		return proto.Unmarshal(data, f) // copies what it keeps
	}
	return fmt.Errorf("peer codec cannot unmarshal %T", v)
}

// raftItem is one Raft message of one range.
type raftItem struct {
	rangeID uint64
	msg     []byte // marshaled raftpb.Message
}

// raftFrame carries a batch of Raft messages from one node to another.
type raftFrame struct {
	clusterID uint64
	from      uint64
	items     []raftItem
}

// snapshotFrame is one frame of a snapshot stream: the first carries the
// header (range and MsgSnap), the others key/value pairs, the last final.
type snapshotFrame struct {
	clusterID uint64
	from      uint64
	rangeID   uint64
	msg       []byte
	keys      [][]byte
	values    [][]byte
	final     bool
}

// ack answers a stream.
type ack struct {
	err string
}

var errCorrupt = errors.New("corrupt frame")

func appendUint(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// walk calls fn for each field of a protobuf-encoded message; only varint and
// bytes fields are expected.
func walk(data []byte, fn func(num protowire.Number, v uint64, b []byte) error) error {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return errCorrupt
		}
		data = data[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return errCorrupt
			}
			data = data[n:]
			if err := fn(num, v, nil); err != nil {
				return err
			}
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return errCorrupt
			}
			data = data[n:]
			if err := fn(num, 0, v); err != nil {
				return err
			}
		default:
			return errCorrupt
		}
	}
	return nil
}

// size is the length of an item's encoding, without its own tag and
// length prefix.
func (it *raftItem) size() int {
	return 1 + protowire.SizeVarint(it.rangeID) + 1 + protowire.SizeBytes(len(it.msg))
}

// marshal encodes the frame into one buffer of exactly its size: Raft
// messages are the bulk of the bytes a node sends, so each is copied once.
func (f *raftFrame) marshal() []byte {
	n := 1 + protowire.SizeVarint(f.clusterID) + 1 + protowire.SizeVarint(f.from)
	for i := range f.items {
		n += 1 + protowire.SizeBytes(f.items[i].size())
	}
	b := make([]byte, 0, n)
	b = appendUint(b, 1, f.clusterID)
	b = appendUint(b, 2, f.from)
	for i := range f.items {
		it := &f.items[i]
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(it.size()))
		b = appendUint(b, 1, it.rangeID)
		b = appendBytes(b, 2, it.msg)
	}
	return b
}

func (f *raftFrame) unmarshal(data []byte) error {
	*f = raftFrame{}
	return walk(data, func(num protowire.Number, v uint64, b []byte) error {
		switch num {
		case 1:
			f.clusterID = v
		case 2:
			f.from = v
		case 3:
			var it raftItem
			if err := walk(b, func(num protowire.Number, v uint64, b []byte) error {
				switch num {
				case 1:
					it.rangeID = v
				case 2:
					it.msg = b
				}
				return nil
			}); err != nil {
				return err
			}
			f.items = append(f.items, it)
		}
		return nil
	})
}

func (f *snapshotFrame) marshal() []byte {
	b := appendUint(nil, 1, f.clusterID)
	b = appendUint(b, 2, f.from)
	b = appendUint(b, 3, f.rangeID)
	if f.msg != nil {
		b = appendBytes(b, 4, f.msg)
	}
	for i := range f.keys {
		var sub []byte
		sub = appendBytes(sub, 1, f.keys[i])
		sub = appendBytes(sub, 2, f.values[i])
		b = appendBytes(b, 5, sub)
	}
	if f.final {
		b = appendUint(b, 6, 1)
	}
	return b
}

func (f *snapshotFrame) unmarshal(data []byte) error {
	*f = snapshotFrame{}
	return walk(data, func(num protowire.Number, v uint64, b []byte) error {
		switch num {
		case 1:
			f.clusterID = v
		case 2:
			f.from = v
		case 3:
			f.rangeID = v
		case 4:
			f.msg = b
		case 5:
			var k, val []byte
			if err := walk(b, func(num protowire.Number, _ uint64, b []byte) error {
				switch num {
				case 1:
					k = b
				case 2:
					val = b
				}
				return nil
			}); err != nil {
				return err
			}
			if k == nil {
				return errCorrupt
			}
			f.keys = append(f.keys, k)
			f.values = append(f.values, val)
		case 6:
			f.final = v != 0
		}
		return nil
	})
}

func (a *ack) marshal() []byte {
	if a.err == "" {
		return nil
	}
	return appendBytes(nil, 1, []byte(a.err))
}

func (a *ack) unmarshal(data []byte) error {
	*a = ack{}
	return walk(data, func(num protowire.Number, _ uint64, b []byte) error {
		if num == 1 {
			a.err = string(b)
		}
		return nil
	})
}
