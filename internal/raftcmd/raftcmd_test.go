package raftcmd

import (
	"bytes"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, in := range []Command{
		{RangeID: 7, Proposer: 1 << 60, RequestID: 42, Kind: KindTxn, Payload: []byte("\x00payload\xff"), Term: 9},
		{RangeID: 1, Proposer: 2, RequestID: 3, Kind: KindPut, Payload: []byte("p"), AuthRevision: 12, AuthUser: "alice"},
		{RangeID: 1, Proposer: 2, RequestID: 3, Kind: KindUserAdd, Payload: []byte("p"), AuthNoLogin: true},
		{RangeID: 2, Proposer: 2, RequestID: 3, Kind: KindPut, Payload: []byte("p"), Revision: 1 << 40},
	} {
		out, err := Decode(in.Encode(nil))
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if out.RangeID != in.RangeID || out.Proposer != in.Proposer || out.RequestID != in.RequestID ||
			out.Kind != in.Kind || !bytes.Equal(out.Payload, in.Payload) || out.Term != in.Term ||
			out.AuthRevision != in.AuthRevision || out.AuthUser != in.AuthUser || out.AuthNoLogin != in.AuthNoLogin ||
			out.Revision != in.Revision {
			t.Fatalf("round trip: got %+v, want %+v", out, in)
		}
	}
}

// TestAppendRevision checks that stamping an encoded command sets its
// revision (replacing one it had) and leaves the rest, and the input, as
// they were.
func TestAppendRevision(t *testing.T) {
	in := Command{RangeID: 2, Proposer: 5, RequestID: 9, Kind: KindTxn, Payload: []byte("txn"), Term: 4, AuthUser: "bob", AuthRevision: 3}
	data := in.Encode(nil)
	orig := bytes.Clone(data)
	for _, rev := range []uint64{1, 300, 1 << 62} {
		stamped := AppendRevision(data, rev)
		if !bytes.Equal(data, orig) {
			t.Fatalf("AppendRevision changed its input")
		}
		out, err := Decode(AppendRevision(stamped, rev+1))
		if err != nil {
			t.Fatal(err)
		}
		want := in
		want.Revision = rev + 1
		if out.Revision != want.Revision || out.RequestID != in.RequestID || out.Term != in.Term ||
			!bytes.Equal(out.Payload, in.Payload) || out.AuthUser != in.AuthUser {
			t.Fatalf("restamped command: got %+v, want %+v", out, want)
		}
	}
}

func TestDecodeRejectsGarbage(t *testing.T) {
	for _, data := range [][]byte{{0xff}, {0x08}, {0x2a, 0x05, 'a'}, nil} {
		if _, err := Decode(data); err == nil {
			t.Errorf("decode %x: got no error, want one", data)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add((&Command{RangeID: 1, Kind: KindPut, Payload: []byte("x")}).Encode(nil))
	f.Add([]byte{0x08, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		if err != nil {
			return
		}
		again, err := Decode(c.Encode(nil))
		if err != nil || again.RangeID != c.RangeID || again.Kind != c.Kind || !bytes.Equal(again.Payload, c.Payload) {
			t.Fatalf("re-encoding %+v changed it: %+v, %v", c, again, err)
		}
	})
}

func TestSizeMatchesEncoding(t *testing.T) {
	for _, c := range []Command{
		{},
		{RangeID: 1, Proposer: 1 << 63, RequestID: 1<<64 - 1, Kind: KindTxn, Payload: make([]byte, 300), Term: 1 << 40},
		{RangeID: 7, Proposer: 3, RequestID: 9, Kind: KindPut, Payload: []byte("x")},
		{RangeID: 7, Kind: KindPut, Payload: []byte("x"), AuthRevision: 1 << 33, AuthUser: "someone", AuthNoLogin: true},
	} {
		enc := c.Encode(nil)
		if got, want := c.Size(), len(enc); got != want {
			t.Errorf("Size of %+v: got %d, want %d", c, got, want)
		}
		// A buffer of exactly Size bytes is used as is, not regrown.
		buf := make([]byte, 0, c.Size())
		if out := c.Encode(buf); cap(out) != cap(buf) || &out[:1][0] != &buf[:1][0] {
			t.Errorf("Encode into a buffer of Size %d of %+v: got a new buffer of capacity %d, want the given one", c.Size(), c, cap(out))
		}
	}
}

// TestNumberPayloads checks the payloads that are one number: the
// truncate-log command's index and the oracle-ceiling command's ceiling.
func TestNumberPayloads(t *testing.T) {
	for _, c := range []struct {
		name   string
		encode func(uint64) []byte
		decode func([]byte) (uint64, error)
	}{
		{"truncate-log", EncodeTruncateLog, DecodeTruncateLog},
		{"oracle-ceiling", EncodeOracleCeiling, DecodeOracleCeiling},
	} {
		for _, v := range []uint64{1, 300, 1<<64 - 1} {
			got, err := c.decode(c.encode(v))
			if err != nil || got != v {
				t.Errorf("%s: round trip of %d: got %d, %v, want %d", c.name, v, got, err, v)
			}
		}
		// Unknown fields are skipped, so a later version may add some.
		withExtra := append(c.encode(77), 0x12, 0x01, 'x')
		if got, err := c.decode(withExtra); err != nil || got != 77 {
			t.Errorf("%s: decode with an unknown field: got %d, %v, want 77", c.name, got, err)
		}
		for _, bad := range [][]byte{nil, {0x08}, {0x08, 0x00}, {0x0a, 0x01, 'x'}, {0xff}} {
			if got, err := c.decode(bad); err == nil {
				t.Errorf("%s: decode %x: got %d, want an error", c.name, bad, got)
			}
		}
	}
}

func TestPeek(t *testing.T) {
	for _, c := range []Command{
		{RangeID: 2, Proposer: 1 << 50, RequestID: 1 << 40, Kind: KindTxn, Payload: []byte("x"), Term: 7, AuthUser: "u"},
		{Kind: KindLeaseGrant},
		{RangeID: 2, Kind: KindQueueFirst + 3, Payload: make([]byte, 300), Revision: 9},
	} {
		if k, term, ok := Peek(c.Encode(nil)); !ok || k != c.Kind || term != c.Term {
			t.Errorf("Peek of %+v: got %s, term %d, %v, want %s, term %d, true", c, k, term, ok, c.Kind, c.Term)
		}
	}
	for _, bad := range [][]byte{nil, {0xff}, {0x08}, {0x30, 0x07}} {
		if k, _, ok := Peek(bad); ok {
			t.Errorf("Peek of %x: got %s, true, want false", bad, k)
		}
	}
}
