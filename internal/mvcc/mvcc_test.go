package mvcc

import (
	"bytes"
	"math"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keys"
)

// TestVersionsAcrossDeleteAndRecreate checks create_revision, version and
// lease through a key's lifecycle, and that every old revision stays
// readable.
func TestVersionsAcrossDeleteAndRecreate(t *testing.T) {
	db := openDB(t)
	steps := []struct {
		rev      int64
		del      bool
		value    string
		lease    int64
		wantPrev *mvccpb.KeyValue
	}{
		{rev: 1, value: "v1", lease: 5},
		{rev: 2, value: "v2", wantPrev: kv("k", "v1", 1, 1, 1, 5)},
		{rev: 3, value: "v3", lease: 6, wantPrev: kv("k", "v2", 1, 2, 2, 0)},
		{rev: 4, del: true, wantPrev: kv("k", "v3", 1, 3, 3, 6)},
		{rev: 6, value: "v6"},
		{rev: 7, value: "v7", wantPrev: kv("k", "v6", 6, 6, 1, 0)},
	}
	for _, s := range steps {
		commit(t, db, func(b *pebble.Batch) {
			var prev *mvccpb.KeyValue
			if s.del {
				prev = mustDelete(t, b, "k", s.rev, 0)
			} else {
				prev, _ = mustPut(t, b, "k", s.value, s.lease, s.rev, 0)
			}
			if !sameKV(prev, s.wantPrev) {
				t.Errorf("rev %d prev: got %s, want %s", s.rev, kvString(prev), kvString(s.wantPrev))
			}
		})
	}
	want := map[int64]*mvccpb.KeyValue{
		0: nil,
		1: kv("k", "v1", 1, 1, 1, 5),
		2: kv("k", "v2", 1, 2, 2, 0),
		3: kv("k", "v3", 1, 3, 3, 6),
		4: nil,
		5: nil,
		6: kv("k", "v6", 6, 6, 1, 0),
		7: kv("k", "v7", 6, 7, 2, 0),
		8: kv("k", "v7", 6, 7, 2, 0),
	}
	for rev, w := range want {
		got, err := Get(db, []byte("k"), rev)
		if err != nil {
			t.Fatalf("get at %d: %v", rev, err)
		}
		if !sameKV(got, w) {
			t.Errorf("get at %d: got %s, want %s", rev, kvString(got), kvString(w))
		}
	}
	if got, err := Get(db, []byte("k"), -1); err != nil || got != nil {
		t.Errorf("get at -1: got %s, %v, want <nil>, nil", kvString(got), err)
	}
}

func TestPutReturnsWrittenVersion(t *testing.T) {
	db := openDB(t)
	b := db.NewIndexedBatch()
	defer b.Close()
	_, got := mustPut(t, b, "k", "v", 9, 3, 2)
	want := kv("k", "v", 3, 3, 1, 9)
	if !sameKV(got, want) {
		t.Errorf("got %s, want %s", kvString(got), kvString(want))
	}
}

func TestDeleteOfMissingKeyWritesNothing(t *testing.T) {
	db := openDB(t)
	commit(t, db, func(b *pebble.Batch) {
		mustPut(t, b, "k", "v", 0, 1, 0)
		mustDelete(t, b, "k", 2, 0)
	})
	b := db.NewIndexedBatch()
	defer b.Close()
	for _, key := range []string{"k", "never"} {
		if prev := mustDelete(t, b, key, 3, 0); prev != nil {
			t.Errorf("delete %q: got prev %s, want <nil>", key, kvString(prev))
		}
	}
	if b.Count() != 0 {
		t.Errorf("batch: got %d writes, want 0", b.Count())
	}
}

func TestWriteArgumentErrors(t *testing.T) {
	db := openDB(t)
	commit(t, db, func(b *pebble.Batch) {
		mustPut(t, b, "k", "v", 0, 5, 0)
		mustPut(t, b, "k2", "v", 0, 5, 1)
	})
	b := db.NewIndexedBatch()
	defer b.Close()
	tests := []struct {
		name string
		err  func() error
	}{
		{"put empty key", func() error { _, _, err := Put(b, nil, nil, 0, 6, 0); return err }},
		{"put revision 0", func() error { _, _, err := Put(b, []byte("x"), nil, 0, 0, 0); return err }},
		{"put negative sub", func() error { _, _, err := Put(b, []byte("x"), nil, 0, 6, -1); return err }},
		{"put below newest", func() error { _, _, err := Put(b, []byte("k"), nil, 0, 4, 0); return err }},
		{"delete below newest", func() error { _, err := Delete(b, []byte("k"), 4, 0); return err }},
		{"delete empty key", func() error { _, err := Delete(b, nil, 6, 0); return err }},
		{"delete range below newest", func() error { _, err := DeleteRange(b, []byte("a"), nil, 4, 0); return err }},
		{"delete range sub overflow", func() error {
			_, err := DeleteRange(b, []byte("a"), nil, 6, math.MaxInt32)
			return err
		}},
	}
	for _, tt := range tests {
		if err := tt.err(); err == nil {
			t.Errorf("%s: got nil error, want an error", tt.name)
		}
	}
	if b.Count() != 0 {
		t.Errorf("batch: got %d writes, want 0", b.Count())
	}
}

// TestSameRevisionRewrites checks that several writes of one key in one
// revision behave like consecutive writes whose last one wins.
func TestSameRevisionRewrites(t *testing.T) {
	db := openDB(t)
	commit(t, db, func(b *pebble.Batch) { mustPut(t, b, "k", "v1", 0, 1, 0) })
	commit(t, db, func(b *pebble.Batch) {
		_, kv1 := mustPut(t, b, "k", "v2", 0, 2, 0)
		if kv1.Version != 2 {
			t.Errorf("first put version: got %d, want 2", kv1.Version)
		}
		prev, kv2 := mustPut(t, b, "k", "v3", 0, 2, 1)
		if !sameKV(prev, kv1) {
			t.Errorf("second put prev: got %s, want %s", kvString(prev), kvString(kv1))
		}
		if kv2.Version != 3 || kv2.CreateRevision != 1 {
			t.Errorf("second put: got %s, want version 3 create 1", kvString(kv2))
		}
		if prev := mustDelete(t, b, "k", 2, 2); !sameKV(prev, kv2) {
			t.Errorf("delete prev: got %s, want %s", kvString(prev), kvString(kv2))
		}
	})
	if got, err := Get(db, []byte("k"), 2); err != nil || got != nil {
		t.Errorf("get at 2: got %s, %v, want <nil>, nil", kvString(got), err)
	}
	want := kv("k", "v1", 1, 1, 1, 0)
	if got, err := Get(db, []byte("k"), 1); err != nil || !sameKV(got, want) {
		t.Errorf("get at 1: got %s, %v, want %s, nil", kvString(got), err, kvString(want))
	}
}

func TestDeleteRange(t *testing.T) {
	db := openDB(t)
	commit(t, db, func(b *pebble.Batch) {
		for i, k := range []string{"a", "b", "c", "d"} {
			mustPut(t, b, k, "v", 0, 1, int32(i))
		}
	})
	commit(t, db, func(b *pebble.Batch) { mustDelete(t, b, "b", 2, 0) })
	var prevs []*mvccpb.KeyValue
	commit(t, db, func(b *pebble.Batch) {
		var err error
		prevs, err = DeleteRange(b, []byte("a"), []byte("d"), 3, 4)
		if err != nil {
			t.Fatalf("delete range: %v", err)
		}
	})
	want := []*mvccpb.KeyValue{kv("a", "v", 1, 1, 1, 0), kv("c", "v", 1, 1, 1, 0)}
	if !sameKVs(prevs, want) {
		t.Errorf("prevs: got %s, want %s", kvsString(prevs), kvsString(want))
	}
	res := mustRange(t, db, []byte("a"), nil, 3, RangeOptions{})
	if wantKeys := []*mvccpb.KeyValue{kv("d", "v", 1, 1, 1, 0)}; !sameKVs(res.KVs, wantKeys) {
		t.Errorf("after: got %s, want %s", kvsString(res.KVs), kvsString(wantKeys))
	}
	var subs []int32
	err := ChangesSince(db, []byte("a"), nil, 3, func(c Change) error {
		subs = append(subs, c.Sub)
		return nil
	})
	if err != nil {
		t.Fatalf("changes: %v", err)
	}
	if len(subs) != 2 || subs[0] != 4 || subs[1] != 5 {
		t.Errorf("tombstone subs: got %v, want [4 5]", subs)
	}
}

func TestDeleteRangeEmpty(t *testing.T) {
	db := openDB(t)
	b := db.NewIndexedBatch()
	defer b.Close()
	prevs, err := DeleteRange(b, []byte("a"), []byte("z"), 1, 0)
	if err != nil || len(prevs) != 0 {
		t.Errorf("got %s, %v, want [], nil", kvsString(prevs), err)
	}
	if b.Count() != 0 {
		t.Errorf("batch: got %d writes, want 0", b.Count())
	}
}

// TestWriterSeesItsOwnWrites checks that a Writer's reused iterator sees the
// earlier writes of its batch, its own and others', across keys that share
// prefixes.
func TestWriterSeesItsOwnWrites(t *testing.T) {
	db := openDB(t)
	b := db.NewIndexedBatch()
	defer b.Close()
	w := NewWriter(b)
	defer w.Close()
	if _, _, err := w.Put([]byte("a"), []byte("1"), 0, 1, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.Put([]byte("ab"), []byte("x"), 0, 1, 1); err != nil {
		t.Fatal(err)
	}
	prev, got, err := w.Put([]byte("a"), []byte("2"), 0, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := kv("a", "1", 1, 1, 1, 0); !proto.Equal(prev, want) {
		t.Fatalf("prev of the second put of a: got %v, want %v", prev, want)
	}
	if got.Version != 2 || got.CreateRevision != 1 {
		t.Fatalf("second put of a: got version %d create %d, want 2 and 1", got.Version, got.CreateRevision)
	}
	// A write made to the batch without the Writer is seen too.
	if err := writeTombstone(b, []byte("ab"), 3, 0); err != nil {
		t.Fatal(err)
	}
	prev, got, err = w.Put([]byte("ab"), []byte("y"), 0, 4, 0)
	if err != nil {
		t.Fatal(err)
	}
	if prev != nil || got.Version != 1 || got.CreateRevision != 4 {
		t.Fatalf("put of ab after its delete: got prev %v, version %d, create %d; want nil, 1, 4", prev, got.Version, got.CreateRevision)
	}
	// A stale write is refused, as by Put.
	if _, _, err := w.Put([]byte("a"), []byte("3"), 0, 1, 5); err == nil {
		t.Fatalf("put of a below its newest revision: got no error, want one")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	v, err := Get(db, []byte("a"), 2)
	if err != nil || string(v.GetValue()) != "2" {
		t.Fatalf("get a after commit: got %v, %v; want value 2", v, err)
	}
}

// TestWriterBoundsMatchKeys checks the bounds the Writer builds in place
// against the keys package's own, with buffers reused from longer keys.
func TestWriterBoundsMatchKeys(t *testing.T) {
	var b [2][]byte
	for _, k := range []string{"key/with/slashes", "a", "a\x00b", "\xff", ""} {
		versionBounds(&b, []byte(k))
		if !bytes.Equal(b[0], keys.MVCCBound([]byte(k))) || !bytes.Equal(b[1], keys.MVCCKeyUpperBound([]byte(k))) {
			t.Errorf("bounds of %q: got %x %x, want %x %x", k, b[0], b[1], keys.MVCCBound([]byte(k)), keys.MVCCKeyUpperBound([]byte(k)))
		}
	}
}

// TestPutNewStartsANewLife checks that PutNew writes what Put writes for a
// key that is not live: version 1, created at the write's revision.
func TestPutNewStartsANewLife(t *testing.T) {
	db := openDB(t)
	commit(t, db, func(b *pebble.Batch) {
		mustPut(t, b, "k", "v1", 0, 2, 0)
		mustDelete(t, b, "k", 3, 0)
		for _, k := range []string{"k", "fresh"} {
			kv, err := PutNew(b, []byte(k), []byte("v2"), 7, 4, 1)
			if err != nil {
				t.Fatal(err)
			}
			want := &mvccpb.KeyValue{Key: []byte(k), CreateRevision: 4, ModRevision: 4, Version: 1, Lease: 7, Value: []byte("v2")}
			if !proto.Equal(kv, want) {
				t.Errorf("put new %q: got %v, want %v", k, kv, want)
			}
			got, err := Get(b, []byte(k), 4)
			if err != nil || !proto.Equal(got, want) {
				t.Errorf("get %q after put new: got %v, %v, want %v", k, got, err, want)
			}
		}
	})
}
