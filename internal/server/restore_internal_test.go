package server

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/lease"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/storage"
)

// TestAttachLeasedKeys: a restore attaches each live key to the lease its
// newest version names, and grants again, with the shortest TTL, a lease the
// backup lacks (revoked after the backup's revision in a backup of several
// ranges), so that its keys do not outlive it for good.
func TestAttachLeasedKeys(t *testing.T) {
	t.Parallel()
	db, err := storage.Open(storage.Options{Dir: "/db", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := db.NewIndexedBatch()
	if err := (lease.Table{RW: b}).Put(lease.Record{ID: 7, TTL: 60}); err != nil {
		t.Fatal(err)
	}
	put := func(key string, l, rev int64) {
		t.Helper()
		if _, _, err := mvcc.Put(b, []byte(key), []byte("v"), l, rev, 0); err != nil {
			t.Fatal(err)
		}
	}
	put("a", 7, 2) // lease 7, which exists: attached
	put("b", 7, 3) // then put without a lease: not attached
	put("b", 0, 4)
	put("c", 0, 5) // then put with lease 9, which the backup lacks
	put("c", 9, 6)
	put("d", 7, 7) // then deleted: not attached
	if _, err := mvcc.Delete(b, []byte("d"), 8, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}
	if err := attachLeasedKeys(db); err != nil {
		t.Fatal(err)
	}
	attached := func(l int64, key string) bool {
		_, closer, err := db.Get(keys.LeaseAttachmentKey(l, []byte(key)))
		if err == nil {
			closer.Close()
		}
		return err == nil
	}
	for _, tc := range []struct {
		lease int64
		key   string
		want  bool
	}{{7, "a", true}, {7, "b", false}, {7, "c", false}, {9, "c", true}, {7, "d", false}} {
		if got := attached(tc.lease, tc.key); got != tc.want {
			t.Errorf("%q attached to lease %d: got %v, want %v", tc.key, tc.lease, got, tc.want)
		}
	}
	if rec, ok, err := lease.Get(db, 9); err != nil || !ok || rec.TTL != 1 {
		t.Errorf("lease 9, named by a key but missing: got %+v %v %v, want granted again with TTL 1", rec, ok, err)
	}
	if rec, ok, err := lease.Get(db, 7); err != nil || !ok || rec.TTL != 60 {
		t.Errorf("lease 7: got %+v %v %v, want TTL 60 as it was", rec, ok, err)
	}
}
