package kv

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/synod-io/synod/internal/keyindex"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/storage"
)

// BenchmarkBuildIndex measures what a replica pays at start and after a
// snapshot install to index its live keys: a store of n keys, each written
// twice, half of them deleted since; in memory, and on disk through the
// node's Pebble options (internal/storage) after a flush, so that the scan
// reads SSTables. It reports the time per live key.
func BenchmarkBuildIndex(b *testing.B) {
	b.Run("mem/keys=200000", func(b *testing.B) { benchmarkBuildIndex(b, openDB(b), 200_000) })
	b.Run("disk/keys=1000000", func(b *testing.B) {
		db, err := storage.Open(storage.Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		benchmarkBuildIndex(b, db, 1_000_000)
	})
}

func benchmarkBuildIndex(b *testing.B, db *pebble.DB, n int) {
	rev := int64(1)
	for start := 0; start < n; start += 10_000 {
		bt := db.NewIndexedBatch()
		for i := start; i < start+10_000; i++ {
			k := fmt.Appendf(nil, "bench/%08d", i)
			for range 2 {
				rev++
				if _, _, err := mvcc.Put(bt, k, []byte("value"), 0, rev, 0); err != nil {
					b.Fatal(err)
				}
			}
			if i%2 == 0 {
				rev++
				if _, err := mvcc.Delete(bt, k, rev, 0); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := bt.Commit(pebble.NoSync); err != nil {
			b.Fatal(err)
		}
	}
	if err := db.Flush(); err != nil {
		b.Fatal(err)
	}
	var live int
	for b.Loop() {
		x, err := BuildIndex(db, rev)
		if err != nil {
			b.Fatal(err)
		}
		live = 0
		x.Snapshot().Ascend(nil, nil, func(*keyindex.Entry) bool { live++; return true })
	}
	if live != n/2 {
		b.Fatalf("live keys: got %d, want %d", live, n/2)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(live), "ns/live-key")
}
