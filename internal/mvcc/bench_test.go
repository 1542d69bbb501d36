package mvcc

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

func BenchmarkPut(b *testing.B) {
	db := openDB(b)
	value := make([]byte, 128)
	keys := make([][]byte, 1000)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key/%06d", i)
	}
	b.ReportAllocs()
	rev := int64(0)
	for b.Loop() {
		rev++
		batch := db.NewIndexedBatch()
		if _, _, err := Put(batch, keys[rev%int64(len(keys))], value, 0, rev, 0); err != nil {
			b.Fatal(err)
		}
		if err := batch.Commit(pebble.NoSync); err != nil {
			b.Fatal(err)
		}
		if err := batch.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRange scans 1000 keys with 5 versions each, at the newest revision
// and at an old one.
func BenchmarkRange(b *testing.B) {
	db := openDB(b)
	const nKeys, nVersions = 1000, 5
	value := make([]byte, 128)
	rev := int64(0)
	for range nVersions {
		rev++
		batch := db.NewIndexedBatch()
		for i := range nKeys {
			if _, _, err := Put(batch, fmt.Appendf(nil, "key/%06d", i), value, 0, rev, int32(i)); err != nil {
				b.Fatal(err)
			}
		}
		if err := batch.Commit(pebble.NoSync); err != nil {
			b.Fatal(err)
		}
		if err := batch.Close(); err != nil {
			b.Fatal(err)
		}
	}
	if err := db.Flush(); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		rev  int64
		opts RangeOptions
	}{
		{"latest", rev, RangeOptions{}},
		{"old", 2, RangeOptions{}},
		{"reverse", rev, RangeOptions{Reverse: true}},
		{"limit10", rev, RangeOptions{Limit: 10}},
		{"countonly", rev, RangeOptions{CountOnly: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				res, err := Range(db, []byte("key/"), []byte("key0"), bc.rev, bc.opts)
				if err != nil {
					b.Fatal(err)
				}
				if res.Count != nKeys {
					b.Fatalf("count: got %d, want %d", res.Count, nKeys)
				}
			}
		})
	}
}

// BenchmarkRangeDeadKeys scans a prefix as a lock's waiters do: 100 live
// keys among 3,000 keys that were created and deleted (two versions each),
// all still in the memtable, as between compactions.
func BenchmarkRangeDeadKeys(b *testing.B) {
	db := openDB(b)
	value := make([]byte, 32)
	rev := int64(0)
	write := func(fn func(batch *pebble.Batch) error) {
		rev++
		batch := db.NewIndexedBatch()
		if err := fn(batch); err != nil {
			b.Fatal(err)
		}
		if err := batch.Commit(pebble.NoSync); err != nil {
			b.Fatal(err)
		}
		if err := batch.Close(); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 3100 {
		k := fmt.Appendf(nil, "lock/%08x", i)
		write(func(batch *pebble.Batch) error { _, _, err := Put(batch, k, value, 0, rev, 0); return err })
		if i < 3000 {
			write(func(batch *pebble.Batch) error { _, err := Delete(batch, k, rev, 0); return err })
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		res, err := Range(db, []byte("lock/"), []byte("lock0"), rev, RangeOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if res.Count != 100 {
			b.Fatalf("count: got %d, want 100", res.Count)
		}
	}
}
