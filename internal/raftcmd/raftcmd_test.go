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
	} {
		out, err := Decode(in.Encode(nil))
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if out.RangeID != in.RangeID || out.Proposer != in.Proposer || out.RequestID != in.RequestID ||
			out.Kind != in.Kind || !bytes.Equal(out.Payload, in.Payload) || out.Term != in.Term ||
			out.AuthRevision != in.AuthRevision || out.AuthUser != in.AuthUser || out.AuthNoLogin != in.AuthNoLogin {
			t.Fatalf("round trip: got %+v, want %+v", out, in)
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

func TestTruncateLogPayload(t *testing.T) {
	for _, index := range []uint64{1, 300, 1<<64 - 1} {
		got, err := DecodeTruncateLog(EncodeTruncateLog(index))
		if err != nil || got != index {
			t.Errorf("round trip of %d: got %d, %v, want %d", index, got, err, index)
		}
	}
	// Unknown fields are skipped, so a later version may add some.
	withExtra := append(EncodeTruncateLog(77), 0x12, 0x01, 'x')
	if got, err := DecodeTruncateLog(withExtra); err != nil || got != 77 {
		t.Errorf("decode with an unknown field: got %d, %v, want 77", got, err)
	}
	for _, bad := range [][]byte{nil, {0x08}, {0x08, 0x00}, {0x0a, 0x01, 'x'}, {0xff}} {
		if got, err := DecodeTruncateLog(bad); err == nil {
			t.Errorf("decode %x: got %d, want an error", bad, got)
		}
	}
}
