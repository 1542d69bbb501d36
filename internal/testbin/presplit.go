package testbin

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// PresplitEnv is the environment variable that, set to 1, runs the
// process-level suites (test/e2e, test/chaos) against a store pre-split
// into many data ranges: every cluster of synod processes they bootstrap
// gets PresplitKeys (synod start and synod demo with PresplitArgs), every
// in-process cluster PresplitInProcessKeys (server.Config.DataRangeSplits),
// and their ranges split by size above PresplitRangeMaxBytes. CI runs
// those suites both ways (.ci/run; issue 15).
const PresplitEnv = "SYNOD_TEST_PRESPLIT"

// PresplitRangeMaxBytes is the size limit of a data range in pre-split
// runs (--range-max-bytes, server.Config.RangeMaxBytes): small, so that a
// range that grows past it splits by size too. Sizes are Pebble's estimate
// of flushed sstables, and the suites write little (behind 32 MiB
// memtables), so such splits stay rare in them.
const PresplitRangeMaxBytes = 1 << 20

// Presplit reports whether PresplitEnv is 1. Call it inside a test (not in
// TestMain before m.Run), where go test records the variables a test reads
// and keys its cached results on them.
func Presplit() bool { return os.Getenv(PresplitEnv) == "1" }

// PresplitKeys returns the split keys of a pre-split store, sorted: every
// printable ASCII byte from '/' to 'z' (each first byte of the suites' keys
// gets a data range of its own: "foo", "k...", "lease/...", "chaos/...",
// digits, ...), and "k0" to "k9", which put the chaos workload's keys k0
// to k3 (and the end of its watched prefix "k") in ranges of their own, so
// that its watches and reads span several ranges. Every key sorts above
// Synod's reserved keys ("\x01synod/..."), as server.Config requires.
func PresplitKeys() [][]byte {
	var out [][]byte
	for c := byte('/'); c <= 'z'; c++ {
		out = append(out, []byte{c})
		if c == 'k' {
			for d := byte('0'); d <= '9'; d++ {
				out = append(out, []byte{'k', d})
			}
		}
	}
	return out
}

// PresplitInProcessKeys returns the split keys of a pre-split in-process
// cluster (internal/testcluster), a few of PresplitKeys: "c" (so that
// "chaos/..." leaves the first range, with the services' reserved keys and
// the leases), "k0" to "k4" (the chaos workload's keys k0 to k3 each in a
// range of its own, the end of its watched prefix "k" in another) and "l".
// An in-process cluster runs every replica of every node in the test's
// race-built process: with all of PresplitKeys, 3 or 5 nodes on 2 cores
// agreed on no leader within 15 s and took minutes to shut down.
func PresplitInProcessKeys() [][]byte {
	var out [][]byte
	for _, k := range []string{"c", "k0", "k1", "k2", "k3", "k4", "l"} {
		out = append(out, []byte(k))
	}
	return out
}

// PresplitArgs returns the flags that make synod start or synod demo
// bootstrap a pre-split store, or nil unless Presplit.
func PresplitArgs() []string {
	if !Presplit() {
		return nil
	}
	return []string{"--test-data-range-splits", FormatSplitKeys(PresplitKeys()),
		"--range-max-bytes", strconv.Itoa(PresplitRangeMaxBytes)}
}

// FormatSplitKeys writes keys as the value of synod's hidden
// --test-data-range-splits: comma-separated, each byte that is not
// printable ASCII, a backslash or a comma written \xHH.
func FormatSplitKeys(keys [][]byte) string {
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		for _, c := range k {
			if c <= ' ' || c > '~' || c == '\\' || c == ',' {
				fmt.Fprintf(&b, `\x%02x`, c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	return b.String()
}
