package main

import (
	"fmt"
	"strconv"
)

// Keys and Synod's static data ranges (issue 15). The keys that the put, get
// and txn workloads write and read start with one of shards shards: "z",
// two digits, then "/" ("z37/put-many/12345"). With -data-ranges N Synod's
// members bootstrap N data ranges split at shard boundaries, so each of
// these workloads spreads its keys evenly over every range. The other
// workloads' keys (watch/, lock/, lock-rpc/, election/) sort below "z": they
// stay in the first data range, with the leases (a lease on a key outside
// the first data range is not implemented yet). The shard prefix is there
// with one range and on etcd too, so that the keys are the same in every run.
const shards = 100

// maxDataRanges is the most data ranges -data-ranges may ask for: one shard
// each.
const maxDataRanges = shards

// shardKey is name in shard s.
func shardKey(s int, name string) string {
	return fmt.Sprintf("z%02d/%s", s, name)
}

// shardOf spreads sequence numbers over the shards round-robin, so that the
// concurrent clients, which take consecutive numbers, write every shard at
// once.
func shardOf(seq int64) int { return int(seq % shards) }

// rangeBounds returns the first shard of each of n data ranges and, last,
// shards: range r holds the shards [b[r], b[r+1]).
func rangeBounds(n int) []int {
	b := make([]int, n+1)
	for r := range b {
		b[r] = r * shards / n
	}
	return b
}

// rangeOfShard is the data range of shard s among n.
func rangeOfShard(s, n int) int {
	b := rangeBounds(n)
	for r := n - 1; r > 0; r-- {
		if s >= b[r] {
			return r
		}
	}
	return 0
}

// dataRangeSplits returns the split keys of n data ranges (none for one).
func dataRangeSplits(n int) []string {
	b := rangeBounds(n)
	var splits []string
	for r := 1; r < n; r++ {
		splits = append(splits, fmt.Sprintf("z%02d", b[r]))
	}
	return splits
}

// crossRangeShards returns two shards in two different data ranges out of n
// for the transaction seq (with one range, two shards of it): the first
// shard goes round-robin like a put's, the second one in another range,
// which turns with seq too, so that the pairs cover every range with every
// other.
func crossRangeShards(seq int64, n int) (int, int) {
	a := shardOf(seq)
	ra := rangeOfShard(a, n)
	rb := ra
	if n > 1 {
		rb = (ra + 1 + int((seq/shards)%int64(n-1))) % n
	}
	b := rangeBounds(n)
	width := b[rb+1] - b[rb]
	sb := b[rb] + int((seq/shards)%int64(width))
	if n == 1 && sb == a {
		sb = (a + 1) % shards
	}
	return a, sb
}

// seqName is the name of the seq-th key of a workload's prefix.
func seqName(prefix string, seq int64) string {
	return prefix + strconv.FormatInt(seq, 10)
}
