package mvcc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/synod-io/synod/internal/keys"
)

// rawVersions lists, per user key, the revisions physically stored.
func rawVersions(t testing.TB, db *pebble.DB) map[string][]int64 {
	t.Helper()
	span := keys.MVCCSpan()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: span.Start, UpperBound: span.End})
	if err != nil {
		t.Fatalf("new iter: %v", err)
	}
	defer func() {
		if err := it.Close(); err != nil {
			t.Errorf("close iter: %v", err)
		}
	}()
	out := map[string][]int64{}
	for valid := it.First(); valid; valid = it.Next() {
		k, rev, err := keys.DecodeMVCCKey(nil, it.Key())
		if err != nil {
			t.Fatalf("decode key: %v", err)
		}
		out[string(k)] = append(out[string(k)], rev)
	}
	return out
}

// snapshotReads records what reads at every revision in [from, to] return:
// a full scan each way and a Get of every alphabet key.
func snapshotReads(t testing.TB, r pebble.Reader, from, to int64) []string {
	t.Helper()
	var out []string
	for rev := from; rev <= to; rev++ {
		for _, reverse := range []bool{false, true} {
			res := mustRange(t, r, nil, nil, rev, RangeOptions{Reverse: reverse})
			out = append(out, fmt.Sprintf("%d %v %d %s", rev, reverse, res.Count, kvsString(res.KVs)))
		}
		for _, k := range testAlphabet {
			kv, err := Get(r, []byte(k), rev)
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			out = append(out, fmt.Sprintf("%d %q %s", rev, k, kvString(kv)))
		}
	}
	return out
}

func diffReads(t testing.TB, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("reads: got %d results, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("read %d: got %s, want %s", i, got[i], want[i])
		}
	}
}

// checkCompacted verifies that for every key at most one version <= rev
// remains, and that it is live.
func checkCompacted(t testing.TB, db *pebble.DB, m *model, rev int64) {
	t.Helper()
	for k, revs := range rawVersions(t, db) {
		var old []int64
		for _, r := range revs {
			if r <= rev {
				old = append(old, r)
			}
		}
		if len(old) > 1 {
			t.Errorf("key %q: got versions %v <= %d, want at most one", k, old, rev)
		}
		// A tombstone older than rev goes; one at rev stays, so that a watch
		// starting at the compaction revision still sees that delete.
		if len(old) == 1 && old[0] < rev && m.get(k, old[0]) == nil {
			t.Errorf("key %q: got tombstone at %d < %d kept, want it removed", k, old[0], rev)
		}
	}
}

func TestCompactRemovesInvisibleVersions(t *testing.T) {
	db := openDB(t)
	commit(t, db, func(b *pebble.Batch) {
		mustPut(t, b, "live", "1", 0, 1, 0)
		mustPut(t, b, "dead", "1", 0, 1, 1)
		mustPut(t, b, "late", "1", 0, 1, 2)
	})
	commit(t, db, func(b *pebble.Batch) {
		mustPut(t, b, "live", "2", 0, 2, 0)
		mustDelete(t, b, "dead", 2, 1)
	})
	commit(t, db, func(b *pebble.Batch) {
		mustPut(t, b, "live", "3", 0, 3, 0)
		mustPut(t, b, "late", "3", 0, 3, 1)
		mustPut(t, b, "new", "3", 0, 3, 2)
	})
	if err := Compact(context.Background(), db, 2, 10, nil); err != nil {
		t.Fatalf("compact: %v", err)
	}
	got := rawVersions(t, db)
	// The tombstone of "dead" at the compaction revision itself stays.
	want := map[string][]int64{"dead": {2}, "live": {3, 2}, "late": {3, 1}, "new": {3}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stored versions after compacting at 2: got %v, want %v", got, want)
	}
	if err := Compact(context.Background(), db, 3, 10, nil); err != nil {
		t.Fatalf("compact: %v", err)
	}
	got = rawVersions(t, db)
	want = map[string][]int64{"live": {3}, "late": {3}, "new": {3}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stored versions after compacting at 3: got %v, want %v", got, want)
	}
}

// TestCompactRandomized checks on random histories that reads at every
// revision >= the compaction revision are unchanged, and that nothing
// invisible is left.
func TestCompactRandomized(t *testing.T) {
	for seed := range uint64(30) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 2))
			db := openDB(t)
			m, last := randomHistory(t, rng, db, 40)
			rev := 1 + rng.Int64N(last)
			before := snapshotReads(t, db, rev, last+1)
			batchKeys := []int{1, 2, 3, 1000}[rng.IntN(4)]
			if err := Compact(context.Background(), db, rev, batchKeys, nil); err != nil {
				t.Fatalf("compact at %d: %v", rev, err)
			}
			diffReads(t, snapshotReads(t, db, rev, last+1), before)
			checkCompacted(t, db, m, rev)
			// Compacting again is a no-op for reads.
			if err := Compact(context.Background(), db, rev, batchKeys, nil); err != nil {
				t.Fatalf("second compact: %v", err)
			}
			diffReads(t, snapshotReads(t, db, rev, last+1), before)
		})
	}
}

// TestCompactEveryBatchPreservesReads runs compaction one deletion at a time
// and checks reads after each committed batch: no intermediate state may
// uncover a version hidden by a tombstone.
func TestCompactEveryBatchPreservesReads(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	db := openDB(t)
	_, last := randomHistory(t, rng, db, 40)
	rev := last - 5
	before := snapshotReads(t, db, rev, last)
	resume := keys.MVCCSpan().Start
	for steps := 0; resume != nil; steps++ {
		if steps > 10000 {
			t.Fatalf("compaction made no progress")
		}
		var err error
		if resume, err = compactBatch(db, resume, rev, 1); err != nil {
			t.Fatalf("compact batch: %v", err)
		}
		diffReads(t, snapshotReads(t, db, rev, last), before)
	}
}

// TestCompactConcurrentWithReadsAndWrites runs compaction while readers read
// at revisions >= the compaction revision and a writer appends new revisions.
func TestCompactConcurrentWithReadsAndWrites(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 3))
	db := openDB(t)
	_, last := randomHistory(t, rng, db, 200)
	rev := last / 2
	want := snapshotReads(t, db, rev, last)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 8)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := compareReads(db, rev, last, want); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for w := last + 1; ctx.Err() == nil && w < last+500; w++ {
			b := db.NewIndexedBatch()
			_, _, err := Put(b, []byte(testAlphabet[int(w)%len(testAlphabet)]), []byte("new"), 0, w, 0)
			if err == nil {
				err = b.Commit(pebble.NoSync)
			}
			if cerr := b.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				errs <- err
				return
			}
		}
	}()
	err := Compact(context.Background(), db, rev, 1, nil)
	cancel()
	wg.Wait()
	close(errs)
	if err != nil {
		t.Fatalf("compact: %v", err)
	}
	for err := range errs {
		t.Error(err)
	}
	diffReads(t, snapshotReads(t, db, rev, last), want)
}

// compareReads is snapshotReads for goroutines: it reports instead of failing.
func compareReads(r pebble.Reader, from, to int64, want []string) error {
	i := 0
	for rev := from; rev <= to; rev++ {
		for _, reverse := range []bool{false, true} {
			res, err := Range(r, nil, nil, rev, RangeOptions{Reverse: reverse})
			if err != nil {
				return err
			}
			got := fmt.Sprintf("%d %v %d %s", rev, reverse, res.Count, kvsString(res.KVs))
			if got != want[i] {
				return fmt.Errorf("concurrent read: got %s, want %s", got, want[i])
			}
			i++
		}
		i += len(testAlphabet) // Gets are checked by the final comparison
	}
	return nil
}

func TestCompactStopsOnCanceledContext(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	db := openDB(t)
	_, last := randomHistory(t, rng, db, 20)
	before := snapshotReads(t, db, last, last)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Compact(ctx, db, last, 1, nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got error %v, want context.Canceled", err)
	}
	diffReads(t, snapshotReads(t, db, last, last), before)
}

func TestCompactEmptyAndDefaultBatch(t *testing.T) {
	db := openDB(t)
	if err := Compact(context.Background(), db, 10, 0, nil); err != nil {
		t.Errorf("compact empty db: got error %v, want nil", err)
	}
}
