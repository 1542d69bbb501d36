package raftwire

import (
	"errors"
	"fmt"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Field numbers of raftpb.Message and raftpb.Entry (raft.proto).
const (
	msgType       protowire.Number = 1
	msgTo         protowire.Number = 2
	msgFrom       protowire.Number = 3
	msgTerm       protowire.Number = 4
	msgLogTerm    protowire.Number = 5
	msgIndex      protowire.Number = 6
	msgEntries    protowire.Number = 7
	msgCommit     protowire.Number = 8
	msgSnapshot   protowire.Number = 9
	msgReject     protowire.Number = 10
	msgRejectHint protowire.Number = 11
	msgContext    protowire.Number = 12
	msgVote       protowire.Number = 13
	msgResponses  protowire.Number = 14

	entType  protowire.Number = 1
	entTerm  protowire.Number = 2
	entIndex protowire.Number = 3
	entData  protowire.Number = 4
)

// Enum values this version of raftpb knows; proto keeps others as unknown
// fields, so a message with one takes proto's path.
var (
	knownMessageTypes = known(pb.MessageType_name)
	knownEntryTypes   = known(pb.EntryType_name)
)

func known(names map[int32]string) []bool {
	var k []bool
	for v := range names {
		if v < 0 {
			continue // encoded as ten bytes; left to proto
		}
		for int(v) >= len(k) {
			k = append(k, false)
		}
		k[v] = true
	}
	return k
}

func isKnown(k []bool, v uint64) bool { return v < uint64(len(k)) && k[v] }

// errSlow tells the fast decoder to hand the message to proto.Unmarshal.
var errSlow = errors.New("not on the fast path")

// fastEntry reports whether AppendEntry can encode e by hand.
func fastEntry(e *pb.Entry) bool {
	return len(e.ProtoReflect().GetUnknown()) == 0
}

// fastMessage reports whether AppendMessage can encode m by hand.
func fastMessage(m *pb.Message) bool {
	if m.Snapshot != nil || len(m.Responses) > 0 || len(m.ProtoReflect().GetUnknown()) > 0 {
		return false
	}
	for _, e := range m.Entries {
		if e == nil || !fastEntry(e) {
			return false
		}
	}
	return true
}

func sizeUint(v *uint64) int {
	if v == nil {
		return 0
	}
	return 1 + protowire.SizeVarint(*v)
}

func appendUint(b []byte, num protowire.Number, v *uint64) []byte {
	if v == nil {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, *v)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if v == nil {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// entrySize is the length of e's encoding; e must be on the fast path.
func entrySize(e *pb.Entry) int {
	n := sizeUint(e.Term) + sizeUint(e.Index)
	if e.Type != nil {
		n += 1 + protowire.SizeVarint(uint64(*e.Type))
	}
	if e.Data != nil {
		n += 1 + protowire.SizeBytes(len(e.Data))
	}
	return n
}

func appendEntry(b []byte, e *pb.Entry) []byte {
	if e.Type != nil {
		b = protowire.AppendTag(b, entType, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(*e.Type))
	}
	b = appendUint(b, entTerm, e.Term)
	b = appendUint(b, entIndex, e.Index)
	return appendBytes(b, entData, e.Data)
}

// EntrySize is the length of e's encoding, proto.Size(e).
func EntrySize(e *pb.Entry) int {
	if !fastEntry(e) {
		return proto.Size(e)
	}
	return entrySize(e)
}

// AppendEntry appends e's encoding to b, as proto.MarshalAppend does.
func AppendEntry(b []byte, e *pb.Entry) ([]byte, error) {
	if !fastEntry(e) {
		return proto.MarshalOptions{}.MarshalAppend(b, e)
	}
	return appendEntry(b, e), nil
}

// AppendMessage appends m's encoding to b, as proto.MarshalAppend does.
func AppendMessage(b []byte, m *pb.Message) ([]byte, error) {
	if !fastMessage(m) {
		return proto.MarshalOptions{}.MarshalAppend(b, m)
	}
	if m.Type != nil {
		b = protowire.AppendTag(b, msgType, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(*m.Type))
	}
	b = appendUint(b, msgTo, m.To)
	b = appendUint(b, msgFrom, m.From)
	b = appendUint(b, msgTerm, m.Term)
	b = appendUint(b, msgLogTerm, m.LogTerm)
	b = appendUint(b, msgIndex, m.Index)
	for _, e := range m.Entries {
		b = protowire.AppendTag(b, msgEntries, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(entrySize(e)))
		b = appendEntry(b, e)
	}
	b = appendUint(b, msgCommit, m.Commit)
	if m.Reject != nil {
		b = protowire.AppendTag(b, msgReject, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeBool(*m.Reject))
	}
	b = appendUint(b, msgRejectHint, m.RejectHint)
	b = appendBytes(b, msgContext, m.Context)
	b = appendUint(b, msgVote, m.Vote)
	return b, nil
}

// message holds a decoded message and its scalar fields, so that one
// allocation serves them all.
type message struct {
	m                                                        pb.Message
	typ                                                      pb.MessageType
	to, from, term, logTerm, index, commit, vote, rejectHint uint64
	reject                                                   bool
}

// entry holds a decoded entry and its scalar fields.
type entry struct {
	e           pb.Entry
	typ         pb.EntryType
	term, index uint64
}

// DecodeMessage decodes a message encoded by AppendMessage or proto.Marshal.
// The message's byte fields (entries' data, context) alias data, which the
// caller must not modify or reuse while the message is in use.
func DecodeMessage(data []byte) (*pb.Message, error) {
	n, err := scanMessage(data)
	if err == nil {
		return decodeMessage(data, n), nil
	}
	m := &pb.Message{}
	if err := proto.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("decode raft message: %w", err)
	}
	return m, nil
}

// field is one field of an encoded message: a varint's value, or a length-
// delimited field's bytes.
type field struct {
	num protowire.Number
	typ protowire.Type
	v   uint64
	b   []byte
}

// next consumes the field at the start of data. Wire types other than varint
// and bytes are left to proto.
func next(data []byte) (field, int, error) {
	num, typ, n := protowire.ConsumeTag(data)
	if n < 0 {
		return field{}, 0, errSlow
	}
	switch typ {
	case protowire.VarintType:
		v, m := protowire.ConsumeVarint(data[n:])
		if m < 0 {
			return field{}, 0, errSlow
		}
		return field{num: num, typ: typ, v: v}, n + m, nil
	case protowire.BytesType:
		b, m := protowire.ConsumeBytes(data[n:])
		if m < 0 {
			return field{}, 0, errSlow
		}
		return field{num: num, typ: typ, b: b}, n + m, nil
	}
	return field{}, 0, errSlow
}

// isVarint reports whether a field of number num is a varint on the fast path.
func isVarint(num protowire.Number) bool {
	switch num {
	case msgType, msgTo, msgFrom, msgTerm, msgLogTerm, msgIndex, msgCommit, msgReject, msgRejectHint, msgVote:
		return true
	}
	return false
}

// scanMessage checks that data holds only fields the fast path decodes, with
// the wire types and enum values proto would accept as known fields, and
// counts the entries.
func scanMessage(data []byte) (entries int, err error) {
	for len(data) > 0 {
		f, n, err := next(data)
		if err != nil {
			return 0, err
		}
		data = data[n:]
		switch {
		case f.num == msgEntries && f.typ == protowire.BytesType:
			if err := scanEntry(f.b); err != nil {
				return 0, err
			}
			entries++
		case f.num == msgContext && f.typ == protowire.BytesType:
		case isVarint(f.num) && f.typ == protowire.VarintType:
			if f.num == msgType {
				if !isKnown(knownMessageTypes, f.v) {
					return 0, errSlow
				}
			}
		default:
			return 0, errSlow
		}
	}
	return entries, nil
}

func scanEntry(data []byte) error {
	for len(data) > 0 {
		f, n, err := next(data)
		if err != nil {
			return err
		}
		data = data[n:]
		switch {
		case f.num == entType && f.typ == protowire.VarintType:
			if !isKnown(knownEntryTypes, f.v) {
				return errSlow
			}
		case (f.num == entTerm || f.num == entIndex) && f.typ == protowire.VarintType:
		case f.num == entData && f.typ == protowire.BytesType:
		default:
			return errSlow
		}
	}
	return nil
}

// decodeMessage decodes data, which scanMessage accepted with n entries.
func decodeMessage(data []byte, n int) *pb.Message {
	d := &message{}
	m := &d.m
	var ents []entry
	if n > 0 {
		ents = make([]entry, n)
		m.Entries = make([]*pb.Entry, 0, n)
	}
	for len(data) > 0 {
		f, k, _ := next(data)
		data = data[k:]
		switch f.num {
		case msgType:
			d.typ, m.Type = pb.MessageType(f.v), &d.typ
		case msgTo:
			d.to, m.To = f.v, &d.to
		case msgFrom:
			d.from, m.From = f.v, &d.from
		case msgTerm:
			d.term, m.Term = f.v, &d.term
		case msgLogTerm:
			d.logTerm, m.LogTerm = f.v, &d.logTerm
		case msgIndex:
			d.index, m.Index = f.v, &d.index
		case msgCommit:
			d.commit, m.Commit = f.v, &d.commit
		case msgReject:
			d.reject, m.Reject = protowire.DecodeBool(f.v), &d.reject
		case msgRejectHint:
			d.rejectHint, m.RejectHint = f.v, &d.rejectHint
		case msgVote:
			d.vote, m.Vote = f.v, &d.vote
		case msgContext:
			m.Context = f.b[:len(f.b):len(f.b)]
		case msgEntries:
			x := &ents[len(m.Entries)]
			decodeEntry(f.b, x)
			m.Entries = append(m.Entries, &x.e)
		}
	}
	return m
}

func decodeEntry(data []byte, x *entry) {
	e := &x.e
	for len(data) > 0 {
		f, k, _ := next(data)
		data = data[k:]
		switch f.num {
		case entType:
			x.typ, e.Type = pb.EntryType(f.v), &x.typ
		case entTerm:
			x.term, e.Term = f.v, &x.term
		case entIndex:
			x.index, e.Index = f.v, &x.index
		case entData:
			e.Data = f.b[:len(f.b):len(f.b)]
		}
	}
}
