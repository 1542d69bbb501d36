package main

import (
	"slices"
	"sort"
	"testing"
)

// rangeOfKey is the data range of key among the split keys, as Synod routes
// it: range r holds [splits[r-1], splits[r]).
func rangeOfKey(key string, splits []string) int {
	return sort.Search(len(splits), func(i int) bool { return splits[i] > key })
}

func TestDataRangeSplits(t *testing.T) {
	if got := dataRangeSplits(1); len(got) != 0 {
		t.Fatalf("one range: splits %q", got)
	}
	for n := 1; n <= maxDataRanges; n++ {
		splits := dataRangeSplits(n)
		if len(splits) != n-1 || !slices.IsSorted(splits) || len(slices.Compact(slices.Clone(splits))) != n-1 {
			t.Fatalf("%d ranges: splits %q", n, splits)
		}
		perRange := make([]int, n)
		for s := range shards {
			r := rangeOfShard(s, n)
			if got := rangeOfKey(shardKey(s, "put-many/123"), splits); got != r {
				t.Fatalf("%d ranges: shard %d in range %d, its key in range %d", n, s, r, got)
			}
			perRange[r]++
		}
		for r, c := range perRange {
			if c < shards/n || c > shards/n+1 {
				t.Fatalf("%d ranges: range %d holds %d shards", n, r, c)
			}
		}
		for _, k := range []string{"watch/1", "lock/bench/1", "lock-rpc/bench", "election/bench/1"} {
			if r := rangeOfKey(k, splits); r != 0 {
				t.Fatalf("%d ranges: %s in range %d, not the first", n, k, r)
			}
		}
		pairs := map[[2]int]bool{}
		for seq := int64(1); seq <= 100_000; seq++ {
			a, b := crossRangeShards(seq, n)
			ra, rb := rangeOfShard(a, n), rangeOfShard(b, n)
			if a == b || (n > 1 && ra == rb) {
				t.Fatalf("%d ranges: txn %d on shards %d and %d (ranges %d, %d)", n, seq, a, b, ra, rb)
			}
			pairs[[2]int{ra, rb}] = true
		}
		if n > 1 && n <= 10 && len(pairs) != n*(n-1) {
			t.Fatalf("%d ranges: the txns cover %d ordered pairs of ranges, want %d", n, len(pairs), n*(n-1))
		}
	}
}
