package storage

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/synod-io/synod/internal/keys"
)

// TestWriteStallsAreLogged drives the listener Open installs as Pebble
// would, and checks that a stall and its end reach the node's log.
func TestWriteStallsAreLogged(t *testing.T) {
	var buf bytes.Buffer
	l := stallListener(slog.New(slog.NewTextHandler(&buf, nil)))
	l.WriteStallBegin(pebble.WriteStallBeginInfo{Reason: "memtable count limit reached"})
	l.WriteStallEnd()
	out := buf.String()
	for _, want := range []string{`msg="storage: writes stalled" reason="memtable count limit reached"`, `msg="storage: writes resumed" stalled=`} {
		if !strings.Contains(out, want) {
			t.Fatalf("log: got %q, want a line containing %q", out, want)
		}
	}
	if stallListener(nil) != nil {
		t.Fatal("listener without a logger: got one, want none")
	}
}

// TestOpenInstallsTheStallListener checks the wiring: a node's Pebble
// options carry the listener when the node has a logger (a stall cannot be
// provoked on demand), and a node opens with them.
func TestOpenInstallsTheStallListener(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	o := options(Options{Logger: logger}, vfs.NewMem(), nil)
	if o.EventListener == nil || o.EventListener.WriteStallBegin == nil || o.EventListener.WriteStallEnd == nil {
		t.Fatal("options: got no write stall listener")
	}
	db, err := Open(Options{Dir: "db", FS: vfs.NewMem(), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Set([]byte("k"), []byte("v"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

// TestLargeValuesAreSeparated: a flush writes values of separatedValueSize
// bytes and more into blob files, which compactions then pass by reference
// instead of rewriting; smaller values stay in the sstables.
func TestLargeValuesAreSeparated(t *testing.T) {
	db, err := Open(Options{Dir: "db", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Set([]byte("small"), bytes.Repeat([]byte("s"), 256), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := db.Metrics().BlobFiles.LiveCount; got != 0 {
		t.Fatalf("blob files after flushing a 256-byte value: got %d, want 0", got)
	}
	big := bytes.Repeat([]byte("b"), 32<<10)
	if err := db.Set([]byte("big"), big, pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	m := db.Metrics()
	if m.BlobFiles.LiveCount != 1 || m.BlobFiles.ReferencedValueSize != uint64(len(big)) {
		t.Fatalf("blob files after flushing a 32 KiB value: got %d holding %d bytes of values, want 1 holding %d", m.BlobFiles.LiveCount, m.BlobFiles.ReferencedValueSize, len(big))
	}
	got, closer, err := db.Get([]byte("big"))
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	if !bytes.Equal(got, big) {
		t.Fatalf("read back: got %d bytes, want the %d written", len(got), len(big))
	}
}

// TestRaftLogApartFromData: a flush puts the node-local keys (the Raft log)
// and the replicated data into tables of their own, and a log entry's value
// stays in its table however large: log entries are deleted within seconds,
// and one flushed before its truncation must neither leave a blob file
// behind nor count in the replicated spans' estimated size (the space quota).
func TestRaftLogApartFromData(t *testing.T) {
	db, err := Open(Options{Dir: "db", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	big := bytes.Repeat([]byte("b"), 32<<10)
	if err := db.Set(keys.RaftLogKey(1, 7), big, pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if err := db.Set(keys.MVCCKey([]byte("k"), 2), big, pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	m := db.Metrics()
	if got := m.Levels[0].TablesCount; got != 2 {
		t.Fatalf("tables after flushing a log entry and a version: got %d, want 2", got)
	}
	if got := m.BlobFiles.ReferencedValueSize; got != uint64(len(big)) {
		t.Fatalf("bytes of values in blob files: got %d, want %d (the version's alone)", got, len(big))
	}
	mv := keys.MVCCSpan()
	n, err := db.EstimateDiskUsage(mv.Start, mv.End)
	if err != nil {
		t.Fatal(err)
	}
	if n > 2*uint64(len(big)) {
		t.Fatalf("estimated size of the MVCC span: got %d, want at most %d (one version of %d bytes)", n, 2*len(big), len(big))
	}
}
