package raftwire

import (
	"bytes"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func u(v uint64) *uint64 { return &v }

// messages are the shapes peers exchange, with fields present at zero values
// and byte fields empty but present, which proto2 tells apart from absent.
func messages() map[string]*pb.Message {
	app := pb.MsgApp
	resp := pb.MsgAppResp
	hb := pb.MsgHeartbeat
	normal, cc, cc2 := pb.EntryNormal, pb.EntryConfChange, pb.EntryConfChangeV2
	yes, no := true, false
	return map[string]*pb.Message{
		"empty": {},
		"append": {
			Type: &app, To: u(2), From: u(1), Term: u(7), LogTerm: u(7), Index: u(41), Commit: u(40),
			Entries: []*pb.Entry{
				{Term: u(7), Index: u(42), Type: &normal, Data: []byte("put a")},
				{Term: u(7), Index: u(43), Data: []byte{}},
				{Term: u(7), Index: u(44), Type: &cc2, Data: bytes.Repeat([]byte{0xff}, 300)},
				{Term: u(7), Index: u(45), Type: &cc},
				{},
			},
		},
		"append response": {Type: &resp, To: u(1), From: u(3), Term: u(7), Index: u(45), Reject: &no, RejectHint: u(0), LogTerm: u(0)},
		"rejection":       {Type: &resp, To: u(1), From: u(3), Term: u(7), Index: u(45), Reject: &yes, RejectHint: u(30), LogTerm: u(6)},
		"heartbeat":       {Type: &hb, To: u(2), From: u(1), Term: u(1 << 60), Commit: u(0), Context: []byte("read-index-ctx")},
		"empty context":   {Type: &hb, Context: []byte{}, Vote: u(3)},
	}
}

// slowMessages take proto's path.
func slowMessages() map[string]*pb.Message {
	snap := pb.MsgSnap
	unknown := pb.MessageType(99)
	odd := pb.EntryType(42)
	withUnknown := &pb.Message{To: u(1)}
	withUnknown.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 5))
	entUnknown := &pb.Entry{Index: u(1)}
	entUnknown.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 98, protowire.VarintType), 5))
	return map[string]*pb.Message{
		"snapshot": {Type: &snap, To: u(2), Snapshot: &pb.Snapshot{Data: []byte("x"), Metadata: &pb.SnapshotMetadata{
			Index: u(10), Term: u(2), ConfState: &pb.ConfState{Voters: []uint64{1, 2, 3}},
		}}},
		"responses":             {To: u(1), Responses: []*pb.Message{{To: u(2)}}},
		"unknown message type":  {Type: &unknown, To: u(1)},
		"unknown entry type":    {To: u(1), Entries: []*pb.Entry{{Type: &odd}}},
		"unknown field":         withUnknown,
		"unknown field (entry)": {To: u(1), Entries: []*pb.Entry{entUnknown}},
	}
}

func TestMessagesMatchProto(t *testing.T) {
	all := messages()
	for name, m := range slowMessages() {
		all[name] = m
	}
	for name, m := range all {
		t.Run(name, func(t *testing.T) {
			want, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			got, err := AppendMessage([]byte("prefix"), m)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[6:], want) || string(got[:6]) != "prefix" {
				t.Fatalf("AppendMessage: got %x, want prefix then %x", got, want)
			}
			dec, err := DecodeMessage(want)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(dec, m) {
				t.Fatalf("DecodeMessage: got %v, want %v", dec, m)
			}
			for _, e := range m.Entries {
				b, err := AppendEntry(nil, e)
				if err != nil {
					t.Fatal(err)
				}
				if w, _ := proto.Marshal(e); !bytes.Equal(b, w) {
					t.Fatalf("AppendEntry: got %x, want %x", b, w)
				}
				if got, want := EntrySize(e), proto.Size(e); got != want {
					t.Fatalf("EntrySize: got %d, want %d", got, want)
				}
			}
		})
	}
}

func TestFastPath(t *testing.T) {
	for name, m := range messages() {
		if !fastMessage(m) {
			t.Errorf("%s: encoded through proto", name)
		}
		b, _ := proto.Marshal(m)
		if _, err := scanMessage(b); err != nil {
			t.Errorf("%s: decoded through proto: %v", name, err)
		}
	}
	for name, m := range slowMessages() {
		b, _ := proto.Marshal(m)
		if _, err := scanMessage(b); err == nil {
			t.Errorf("%s: decoded by hand, want proto", name)
		}
	}
}

// TestDecodedDataIsBounded checks that appending to a decoded entry's data
// cannot overwrite the bytes after it in the buffer it aliases.
func TestDecodedDataIsBounded(t *testing.T) {
	b, _ := proto.Marshal(messages()["append"])
	orig := bytes.Clone(b)
	m, err := DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range m.Entries {
		_ = append(e.Data, 1, 2, 3, 4)
	}
	if !bytes.Equal(b, orig) {
		t.Fatal("append to decoded data changed the buffer")
	}
}

func TestDecodeAllocations(t *testing.T) {
	b, _ := proto.Marshal(messages()["append"])
	got := testing.AllocsPerRun(100, func() {
		if _, err := DecodeMessage(b); err != nil {
			t.Fatal(err)
		}
	})
	// The message with its scalars, the entries, the slice of pointers.
	if got > 3 {
		t.Fatalf("got %v allocations per decode, want at most 3", got)
	}
	if pa := testing.AllocsPerRun(100, func() { _ = proto.Unmarshal(b, &pb.Message{}) }); pa <= got {
		t.Fatalf("proto.Unmarshal allocates %v, no more than DecodeMessage's %v", pa, got)
	}
}

func TestDecodeErrors(t *testing.T) {
	good, _ := proto.Marshal(messages()["append"])
	for name, b := range map[string][]byte{
		"truncated":     good[:len(good)-1],
		"bad tag":       {0x00},
		"long varint":   bytes.Repeat([]byte{0xff}, 11),
		"entry garbage": protowire.AppendBytes(protowire.AppendTag(nil, msgEntries, protowire.BytesType), []byte{0x08}),
	} {
		if _, err := DecodeMessage(b); err == nil {
			t.Errorf("%s: got no error", name)
		}
	}
}

// FuzzDecodeMessage holds DecodeMessage to proto.Unmarshal's answer on any
// input, and AppendMessage to proto.Marshal's bytes on what it decodes.
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range messages() {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	for _, m := range slowMessages() {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		want := &pb.Message{}
		werr := proto.Unmarshal(data, want)
		got, err := DecodeMessage(bytes.Clone(data))
		if (err == nil) != (werr == nil) {
			t.Fatalf("got error %v, want %v", err, werr)
		}
		if err != nil {
			return
		}
		if !proto.Equal(got, want) {
			t.Fatalf("got %v, want %v", got, want)
		}
		wb, err := proto.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		gb, err := AppendMessage(nil, got)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(gb, wb) {
			t.Fatalf("AppendMessage: got %x, want %x", gb, wb)
		}
	})
}

func BenchmarkDecodeMessage(b *testing.B) {
	data, _ := proto.Marshal(messages()["append"])
	b.Run("raftwire", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeMessage(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := proto.Unmarshal(data, &pb.Message{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkAppendMessage(b *testing.B) {
	m := messages()["append"]
	buf := make([]byte, 0, 4096)
	b.Run("raftwire", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = AppendMessage(buf[:0], m)
		}
	})
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = proto.MarshalOptions{}.MarshalAppend(buf[:0], m)
		}
	})
}
