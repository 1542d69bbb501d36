package backup

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/synod-io/synod/internal/keys"
)

func TestRoundTripAndCorruption(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := db.NewBatch()
	want := map[string]string{}
	for i := 0; i < 500; i++ {
		k := keys.MVCCKey([]byte(fmt.Sprintf("k%03d", i)), int64(i+2))
		v := bytes.Repeat([]byte{byte(i)}, i)
		_ = b.Set(k, v, nil)
		want[string(k)] = string(v)
	}
	_ = b.Set(keys.RangeAppliedStateKey(keys.FirstDataRangeID), []byte("state"), nil)
	want[string(keys.RangeAppliedStateKey(keys.FirstDataRangeID))] = "state"
	_ = b.Set(keys.RaftLogKey(1, 11), []byte("not replicated"), nil) // must not be in the backup
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	snap := db.NewSnapshot()
	defer snap.Close()
	var buf bytes.Buffer
	h := Header{ClusterID: 7, MemberID: 9, Revision: 501, CompactRevision: 3, AppliedIndex: 600, CreatedUnix: 1}
	n, err := Write(&buf, snap, keys.ReplicatedSpans(keys.FirstDataRangeID), h, nil)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("write: %d bytes (buffer %d), %v", n, buf.Len(), err)
	}
	if n%512 != 32 {
		t.Fatalf("backup size %d is not a multiple of 512 plus 32 (etcdctl snapshot save refuses it)", n)
	}
	got := map[string]string{}
	gh, err := Read(bytes.NewReader(buf.Bytes()), func(k, v []byte) error {
		got[string(k)] = string(v)
		return nil
	})
	if err != nil || gh != h {
		t.Fatalf("read: header %+v, %v, want %+v", gh, err, h)
	}
	if len(got) != len(want) {
		t.Fatalf("pairs: got %d, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("pair %q: got %d bytes, want %d", k, len(got[k]), len(v))
		}
	}
	// Any flipped byte or truncation is detected.
	data := buf.Bytes()
	for _, pos := range []int{0, 9, len(data) / 2, len(data) - 40, len(data) - 1} {
		bad := bytes.Clone(data)
		bad[pos] ^= 0x5a
		if _, _, err := Verify(bytes.NewReader(bad)); err == nil {
			t.Fatalf("flipped byte at %d not detected", pos)
		}
	}
	for _, cut := range []int{0, 5, len(data) / 3, len(data) - 1} {
		if _, _, err := Verify(bytes.NewReader(data[:cut])); err == nil {
			t.Fatalf("truncation at %d not detected", cut)
		}
	}
	if _, _, err := Verify(bytes.NewReader(append(bytes.Clone(data), 0))); !errors.Is(err, errCorrupt) {
		t.Fatalf("trailing data: got %v, want corrupt", err)
	}
}

func FuzzRead(f *testing.F) {
	f.Add([]byte(magic + "\x01\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _, _ = Verify(bytes.NewReader(data))
	})
}
