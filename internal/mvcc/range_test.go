package mvcc

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// rangeFixture builds this history:
//
//	rev 1: put a=1, a\x00=1, a\xff=1, b=1
//	rev 2: put a=2, delete b
//	rev 3: put \x00=3, \xff=3, c=3
//	rev 4: delete a\x00, put b=4
func rangeFixture(t *testing.T) *pebble.DB {
	db := openDB(t)
	commit(t, db, func(b *pebble.Batch) {
		for i, k := range []string{"a", "a\x00", "a\xff", "b"} {
			mustPut(t, b, k, "1", 0, 1, int32(i))
		}
	})
	commit(t, db, func(b *pebble.Batch) {
		mustPut(t, b, "a", "2", 7, 2, 0)
		mustDelete(t, b, "b", 2, 1)
	})
	commit(t, db, func(b *pebble.Batch) {
		for i, k := range []string{"\x00", "\xff", "c"} {
			mustPut(t, b, k, "3", 0, 3, int32(i))
		}
	})
	commit(t, db, func(b *pebble.Batch) {
		mustDelete(t, b, "a\x00", 4, 0)
		mustPut(t, b, "b", "4", 0, 4, 1)
	})
	return db
}

func TestRange(t *testing.T) {
	db := rangeFixture(t)
	var (
		a1   = kv("a", "1", 1, 1, 1, 0)
		a2   = kv("a", "2", 1, 2, 2, 7)
		a0   = kv("a\x00", "1", 1, 1, 1, 0)
		aff  = kv("a\xff", "1", 1, 1, 1, 0)
		b1   = kv("b", "1", 1, 1, 1, 0)
		b4   = kv("b", "4", 4, 4, 1, 0)
		nul  = kv("\x00", "3", 3, 3, 1, 0)
		ff   = kv("\xff", "3", 3, 3, 1, 0)
		c3   = kv("c", "3", 3, 3, 1, 0)
		keys = func(kvs ...*mvccpb.KeyValue) []*mvccpb.KeyValue {
			out := make([]*mvccpb.KeyValue, len(kvs))
			for i, kv := range kvs {
				out[i] = proto.Clone(kv).(*mvccpb.KeyValue)
				out[i].Value = nil
			}
			return out
		}
	)
	tests := []struct {
		name      string
		key, end  string
		unbounded bool
		rev       int64
		opts      RangeOptions
		want      []*mvccpb.KeyValue
		count     int64
	}{
		{name: "all at 4", unbounded: true, rev: 4, want: []*mvccpb.KeyValue{nul, a2, aff, b4, c3, ff}, count: 6},
		{name: "all at 1", unbounded: true, rev: 1, want: []*mvccpb.KeyValue{a1, a0, aff, b1}, count: 4},
		{name: "all at 2 hides tombstone", unbounded: true, rev: 2, want: []*mvccpb.KeyValue{a2, a0, aff}, count: 3},
		{name: "at 0 sees nothing", unbounded: true, rev: 0},
		{name: "above newest", unbounded: true, rev: 100, want: []*mvccpb.KeyValue{nul, a2, aff, b4, c3, ff}, count: 6},
		{name: "single key via end", key: "a", end: "a\x00", rev: 4, want: []*mvccpb.KeyValue{a2}, count: 1},
		{name: "nul suffix key", key: "a\x00", end: "a\x00\x00", rev: 3, want: []*mvccpb.KeyValue{a0}, count: 1},
		{name: "prefix a", key: "a", end: "b", rev: 3, want: []*mvccpb.KeyValue{a2, a0, aff}, count: 3},
		{name: "from key unbounded", key: "b", unbounded: true, rev: 4, want: []*mvccpb.KeyValue{b4, c3, ff}, count: 3},
		{name: "end equals key", key: "b", end: "b", rev: 4},
		{name: "end below key", key: "c", end: "a", rev: 4},
		{name: "0xff keys", key: "\xff", end: "\xff\xff", rev: 4, want: []*mvccpb.KeyValue{ff}, count: 1},
		{name: "limit", unbounded: true, rev: 4, opts: RangeOptions{Limit: 2},
			want: []*mvccpb.KeyValue{nul, a2}, count: 6},
		{name: "reverse", key: "a", end: "c", rev: 4, opts: RangeOptions{Reverse: true},
			want: []*mvccpb.KeyValue{b4, aff, a2}, count: 3},
		{name: "reverse limit", unbounded: true, rev: 4, opts: RangeOptions{Reverse: true, Limit: 2},
			want: []*mvccpb.KeyValue{ff, c3}, count: 6},
		{name: "reverse at old revision", unbounded: true, rev: 2, opts: RangeOptions{Reverse: true},
			want: []*mvccpb.KeyValue{aff, a0, a2}, count: 3},
		{name: "reverse at 0", unbounded: true, rev: 0, opts: RangeOptions{Reverse: true}},
		{name: "keys only", key: "a", end: "b", rev: 1, opts: RangeOptions{KeysOnly: true},
			want: keys(a1, a0, aff), count: 3},
		{name: "count only", unbounded: true, rev: 4, opts: RangeOptions{CountOnly: true, Limit: 1}, count: 6},
		{name: "limit above count", key: "a", end: "b", rev: 4, opts: RangeOptions{Limit: 10},
			want: []*mvccpb.KeyValue{a2, aff}, count: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var end []byte
			if !tt.unbounded {
				end = []byte(tt.end)
			}
			got := mustRange(t, db, []byte(tt.key), end, tt.rev, tt.opts)
			if !sameKVs(got.KVs, tt.want) {
				t.Errorf("kvs: got %s, want %s", kvsString(got.KVs), kvsString(tt.want))
			}
			if got.Count != tt.count {
				t.Errorf("count: got %d, want %d", got.Count, tt.count)
			}
		})
	}
}

// TestRangeRandomized compares Range against the model on random histories,
// for random bounds, revisions and options.
func TestRangeRandomized(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1))
			db := openDB(t)
			m, last := randomHistory(t, rng, db, 30)
			for range 200 {
				key, end := randomBounds(rng)
				rev := rng.Int64N(last + 2)
				opts := RangeOptions{
					Limit:     rng.Int64N(4),
					Reverse:   rng.IntN(2) == 0,
					KeysOnly:  rng.IntN(4) == 0,
					CountOnly: rng.IntN(6) == 0,
				}
				got := mustRange(t, db, key, end, rev, opts)
				want := m.rangeAt(key, end, rev, opts)
				if !sameKVs(got.KVs, want.KVs) || got.Count != want.Count {
					t.Fatalf("range [%q, %q) at %d %+v: got %s count %d, want %s count %d",
						key, end, rev, opts, kvsString(got.KVs), got.Count, kvsString(want.KVs), want.Count)
				}
				for _, k := range testAlphabet {
					g, err := Get(db, []byte(k), rev)
					if err != nil {
						t.Fatalf("get: %v", err)
					}
					if w := m.get(k, rev); !sameKV(g, w) {
						t.Fatalf("get %q at %d: got %s, want %s", k, rev, kvString(g), kvString(w))
					}
				}
			}
		})
	}
}

// TestRangeInBatchSeesOwnWrites checks reads through an indexed batch.
func TestRangeInBatchSeesOwnWrites(t *testing.T) {
	db := openDB(t)
	commit(t, db, func(b *pebble.Batch) { mustPut(t, b, "a", "1", 0, 1, 0) })
	b := db.NewIndexedBatch()
	defer b.Close()
	mustPut(t, b, "b", "2", 0, 2, 0)
	mustDelete(t, b, "a", 2, 1)
	got := mustRange(t, b, []byte("a"), nil, 2, RangeOptions{})
	want := []*mvccpb.KeyValue{kv("b", "2", 2, 2, 1, 0)}
	if !sameKVs(got.KVs, want) || got.Count != 1 {
		t.Errorf("got %s count %d, want %s count 1", kvsString(got.KVs), got.Count, kvsString(want))
	}
}

func TestLiveAndFillValues(t *testing.T) {
	db := openDB(t)
	commit(t, db, func(b *pebble.Batch) {
		mustPut(t, b, "a", "a1", 0, 2, 0)
		mustPut(t, b, "b", "b1", 5, 3, 0)
		mustPut(t, b, "a", "a2", 0, 4, 0)
		mustDelete(t, b, "b", 5, 0)
		mustPut(t, b, "c", "c1", 0, 6, 0)
	})
	var live []*mvccpb.KeyValue
	if err := Live(db, 5, func(kv *mvccpb.KeyValue) error { live = append(live, kv); return nil }); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(live), fmt.Sprint([]*mvccpb.KeyValue{
		{Key: []byte("a"), CreateRevision: 2, ModRevision: 4, Version: 2},
	}); got != want {
		t.Fatalf("live at 5: got %s, want %s", got, want)
	}
	if err := FillValues(db, live); err != nil || string(live[0].Value) != "a2" {
		t.Fatalf("fill values: got %q, %v, want \"a2\", nil", live[0].Value, err)
	}
	for _, bad := range []*mvccpb.KeyValue{
		{Key: []byte("a"), CreateRevision: 2, ModRevision: 3, Version: 2},           // no such version
		{Key: []byte("a"), CreateRevision: 2, ModRevision: 4, Version: 1},           // another version number
		{Key: []byte("b"), CreateRevision: 3, ModRevision: 5, Version: 1, Lease: 5}, // a tombstone
		{Key: []byte("b"), CreateRevision: 3, ModRevision: 3, Version: 1},           // another lease
	} {
		if err := FillValues(db, []*mvccpb.KeyValue{bad}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("fill values of %v: got %v, want ErrCorrupt", bad, err)
		}
	}
}

// TestRangeUncounted pages through a range without counting it: each page
// is what a counted scan returns, and the scan stops at the page's end
// (Count is the page's size), so paging through n keys reads each once.
func TestRangeUncounted(t *testing.T) {
	db := openDB(t)
	commit(t, db, func(b *pebble.Batch) {
		for i := range 50 {
			mustPut(t, b, fmt.Sprintf("k%02d", i), "v", 0, int64(i+1), 0)
		}
		mustDelete(t, b, "k07", 60, 0) // a tombstone inside the first page
	})
	var got []string
	start := []byte("k")
	for {
		page := mustRange(t, db, start, []byte("l"), 100, RangeOptions{Limit: 10, Uncounted: true})
		counted := mustRange(t, db, start, []byte("l"), 100, RangeOptions{Limit: 10})
		if page.Count != int64(len(page.KVs)) {
			t.Fatalf("uncounted page from %q: count %d, want its %d keys", start, page.Count, len(page.KVs))
		}
		if len(page.KVs) != len(counted.KVs) {
			t.Fatalf("uncounted page from %q: got %d keys, want %d", start, len(page.KVs), len(counted.KVs))
		}
		for i, kv := range page.KVs {
			if string(kv.Key) != string(counted.KVs[i].Key) {
				t.Fatalf("uncounted page from %q: key %d is %q, want %q", start, i, kv.Key, counted.KVs[i].Key)
			}
			got = append(got, string(kv.Key))
		}
		if len(page.KVs) < 10 {
			break
		}
		start = append([]byte(page.KVs[len(page.KVs)-1].Key), 0)
	}
	if len(got) != 49 || got[7] != "k08" {
		t.Fatalf("paged through %d keys (%v), want the 49 live ones", len(got), got)
	}
}
