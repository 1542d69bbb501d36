package raftcmd

import (
	"bytes"
	"testing"
)

// benchCommand is the command of a put of a 16-byte key with a 256-byte
// value, the shape of the put workloads of the bench command.
func benchCommand() Command {
	payload := append([]byte{0x0a, 16}, bytes.Repeat([]byte("k"), 16)...)
	payload = append(payload, 0x12, 0x80, 0x02)
	payload = append(payload, bytes.Repeat([]byte("v"), 256)...)
	return Command{RangeID: 1, Proposer: 0x8e9e05c52164694d, RequestID: 1 << 62, Kind: KindPut, Payload: payload}
}

func BenchmarkEncode(b *testing.B) {
	c := benchCommand()
	b.Run("alloc", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.RequestID++
			_ = c.Encode(nil)
		}
	})
	b.Run("reuse", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			c.RequestID++
			buf = c.Encode(buf[:0])
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	c := benchCommand()
	data := c.Encode(nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}
