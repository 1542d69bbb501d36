package storage

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
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
