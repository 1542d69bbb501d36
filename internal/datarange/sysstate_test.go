package datarange

import (
	"bytes"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/raftcmd"
)

// LoadSystemState's result must not keep Pebble's memory: pushSystemState
// compared a copy loaded so after its buffer was handed back to the block
// cache, and the race detector saw a compaction free it under the read. A
// batch reuses its buffer after Reset, which shows the same fault without
// a race.
func TestLoadSystemStateOwnsItsBytes(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const id = keys.FirstDataRangeID
	mirror := bytes.Repeat([]byte{'a'}, 64)
	b := db.NewIndexedBatch()
	defer b.Close()
	if err := b.Set(keys.RangeSystemStateKey(id), raftcmd.EncodeSystemState(raftcmd.SystemState{Index: 7, AuthMirror: mirror}), nil); err != nil {
		t.Fatal(err)
	}
	ss, err := LoadSystemState(b, id)
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	if err := b.Set(keys.RangeSystemStateKey(id), raftcmd.EncodeSystemState(raftcmd.SystemState{Index: 7, AuthMirror: bytes.Repeat([]byte{'z'}, 64)}), nil); err != nil {
		t.Fatal(err)
	}
	if ss.Index != 7 || !bytes.Equal(ss.AuthMirror, mirror) {
		t.Fatalf("loaded copy after its buffer was reused: got index %d, mirror %q; want 7, %q", ss.Index, ss.AuthMirror, mirror)
	}
}
