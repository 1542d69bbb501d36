package systemrange

import (
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangesm"
)

// TestOracleCeilingOnlyRises checks that a ceiling command never lowers
// the stored ceiling (a late command of a former leader may carry a lower
// one) and answers the stored one.
func TestOracleCeilingOnlyRises(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m := New(Config{})
	st := &rangesm.AppliedState{}
	if err := m.Load(db, st); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ ask, want uint64 }{{100, 100}, {50, 100}, {170, 170}, {170, 170}} {
		b := db.NewIndexedBatch()
		a := m.Begin(b, st, &rangesm.Effects{})
		res, err := a.Apply(raftcmd.Command{Kind: raftcmd.KindOracleCeiling, Payload: raftcmd.EncodeOracleCeiling(c.ask)}, 1, 1)
		if err != nil || res.Err != nil {
			t.Fatalf("apply ceiling %d: %v, %v", c.ask, err, res.Err)
		}
		if err := a.Finish(); err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(pebble.Sync); err != nil {
			t.Fatal(err)
		}
		if err := a.Committed(); err != nil {
			t.Fatal(err)
		}
		a.Close()
		if got, _ := res.Resp.(uint64); got != c.want {
			t.Errorf("answer to ceiling %d: got %d, want %d", c.ask, got, c.want)
		}
		if got, err := OracleCeiling(db); err != nil || got != c.want {
			t.Errorf("stored after ceiling %d: got %d, %v, want %d", c.ask, got, err, c.want)
		}
	}
	b := db.NewIndexedBatch()
	defer b.Close()
	a := m.Begin(b, st, &rangesm.Effects{})
	if res, err := a.Apply(raftcmd.Command{Kind: raftcmd.KindOracleCeiling}, 1, 1); err != nil || res.Err == nil {
		t.Errorf("apply a ceiling command without a ceiling: got %v, %v, want an error result", res, err)
	}
}
