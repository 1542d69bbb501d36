package raftcmd

import (
	"bytes"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	in := Command{RangeID: 7, Proposer: 1 << 60, RequestID: 42, Kind: KindTxn, Payload: []byte("\x00payload\xff"), Term: 9}
	out, err := Decode(in.Encode(nil))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if out.RangeID != in.RangeID || out.Proposer != in.Proposer || out.RequestID != in.RequestID ||
		out.Kind != in.Kind || !bytes.Equal(out.Payload, in.Payload) || out.Term != in.Term {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
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
