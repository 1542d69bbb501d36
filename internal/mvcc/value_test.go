package mvcc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/synod-io/synod/internal/keys"
)

func TestRecordRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		rec  record
	}{
		{"tombstone", record{tombstone: true}},
		{"tombstone with sub", record{tombstone: true, sub: 7}},
		{"minimal", record{createRev: 1, version: 1}},
		{"value", record{sub: 3, createRev: 10, version: 4, lease: 99, value: []byte("hello")}},
		{"binary value", record{createRev: 1, version: 1, value: []byte{0, 0xff, 0}}},
		{"negative lease", record{createRev: 1, version: 1, lease: -5}},
		{"extremes", record{sub: math.MaxInt32, createRev: math.MaxInt64, version: math.MaxInt64,
			lease: math.MinInt64, value: bytes.Repeat([]byte{1}, 300)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := appendRecord(nil, tt.rec)
			got, err := decodeRecord(enc)
			if err != nil {
				t.Fatalf("decode: got error %v, want nil", err)
			}
			if !sameRecord(got, tt.rec) {
				t.Errorf("got %+v, want %+v", got, tt.rec)
			}
		})
	}
}

func sameRecord(a, b record) bool {
	return a.tombstone == b.tombstone && a.sub == b.sub && a.createRev == b.createRev &&
		a.version == b.version && a.lease == b.lease && bytes.Equal(a.value, b.value)
}

func TestDecodeRecordCorrupt(t *testing.T) {
	live := func(fields ...uint64) []byte {
		b := []byte{0}
		for _, f := range fields {
			b = binary.AppendUvarint(b, f)
		}
		return b
	}
	overflow := bytes.Repeat([]byte{0xff}, 11)
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"unknown flag", []byte{0x02, 0, 0, 0, 0}},
		{"flags only", []byte{0}},
		{"truncated sub", []byte{0, 0x80}},
		{"overflowing sub varint", append([]byte{0}, overflow...)},
		{"sub above int32", live(math.MaxInt32+1, 1, 1, 0)},
		{"missing create", live(0)},
		{"create above int64", live(0, math.MaxInt64+1, 1, 0)},
		{"missing version", live(0, 1)},
		{"missing lease", live(0, 1, 1)},
		{"overflowing lease", append(live(0, 1, 1), overflow...)},
		{"live with version 0", live(0, 1, 0, 0)},
		{"live with create 0", live(0, 0, 1, 0)},
		{"tombstone with value", []byte{flagTombstone, 0, 0, 0, 0, 'x'}},
		{"tombstone with version", []byte{flagTombstone, 0, 0, 1, 0}},
		{"tombstone with lease", []byte{flagTombstone, 0, 0, 0, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeRecord(tt.in)
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("decode %x: got error %v, want ErrCorrupt", tt.in, err)
			}
		})
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte{})
	f.Add(appendRecord(nil, record{tombstone: true, sub: 2}))
	f.Add(appendRecord(nil, record{sub: 1, createRev: 5, version: 2, lease: 7, value: []byte("v")}))
	f.Add([]byte{0, 0x80, 0x80})
	f.Add([]byte{0xff, 1, 2, 3})
	f.Fuzz(func(t *testing.T, in []byte) {
		rec, err := decodeRecord(in)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got error %v, want one wrapping ErrCorrupt", err)
			}
			return
		}
		again, err := decodeRecord(appendRecord(nil, rec))
		if err != nil {
			t.Fatalf("re-decode: got error %v, want nil", err)
		}
		if !sameRecord(again, rec) {
			t.Fatalf("round trip: got %+v, want %+v", again, rec)
		}
	})
}

// TestCorruptValueReported checks that every read path returns an error,
// rather than panicking or skipping, when a stored value is malformed.
func TestCorruptValueReported(t *testing.T) {
	db := openDB(t)
	commit(t, db, func(b *pebble.Batch) {
		mustPut(t, b, "a", "ok", 0, 1, 0)
		if err := b.Set(keys.MVCCKey([]byte("b"), 2), []byte{0x80}, nil); err != nil {
			t.Fatalf("set: %v", err)
		}
	})
	if _, err := Get(db, []byte("b"), 2); !errors.Is(err, ErrCorrupt) {
		t.Errorf("get: got error %v, want ErrCorrupt", err)
	}
	for _, reverse := range []bool{false, true} {
		if _, err := Range(db, []byte("a"), nil, 2, RangeOptions{Reverse: reverse}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("range reverse=%v: got error %v, want ErrCorrupt", reverse, err)
		}
	}
	if err := ChangesSince(db, []byte("a"), nil, 1, func(Change) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Errorf("changes: got error %v, want ErrCorrupt", err)
	}
	b := db.NewIndexedBatch()
	defer b.Close()
	if _, _, err := Put(b, []byte("b"), []byte("x"), 0, 3, 0); !errors.Is(err, ErrCorrupt) {
		t.Errorf("put: got error %v, want ErrCorrupt", err)
	}
	if b.Count() != 0 {
		t.Errorf("batch after failed put: got %d writes, want 0", b.Count())
	}
}

// TestCorruptKeyReported checks that a malformed Pebble key inside the MVCC
// span is reported.
func TestCorruptKeyReported(t *testing.T) {
	db := openDB(t)
	if err := db.Set(append(keys.MVCCSpan().Start, 'x'), []byte{0}, nil); err != nil {
		t.Fatalf("set: %v", err)
	}
	if _, err := Range(db, nil, nil, 1, RangeOptions{}); err == nil {
		t.Errorf("range: got nil error, want a key decoding error")
	}
}
