package main

import (
	"strconv"

	"github.com/spf13/pflag"

	"github.com/synod-io/synod/internal/server"
)

// testSplitsFlag is the hidden flag of synod start and synod demo that
// bootstraps a new cluster with its data ranges already split
// (server.Config.DataRangeSplits): a test setting, with which the
// end-to-end and chaos suites run against a store of many data ranges
// (SYNOD_TEST_PRESPLIT=1, internal/testbin).
const testSplitsFlag = "test-data-range-splits"

const testSplitsUsage = `test setting: split keys of the data ranges a new cluster bootstraps, comma-separated, ` +
	`sorted and distinct, each above the reserved keys ("\x01synod/..."); \\, \, and \xHH in a key stand for a backslash, ` +
	`a comma and the byte HH. Applies only when this member bootstraps a new cluster (a new data dir, ` +
	`not with --join or --initial-cluster-state existing); every initial member must be given the same keys`

// addTestSplitsFlag adds the hidden --test-data-range-splits to fs.
func addTestSplitsFlag(fs *pflag.FlagSet, p *string) {
	fs.StringVar(p, testSplitsFlag, "", testSplitsUsage)
	_ = fs.MarkHidden(testSplitsFlag)
}

// parseTestSplits parses and checks the value of --test-data-range-splits
// (empty: none, one data range).
func parseTestSplits(s string) ([][]byte, error) {
	if s == "" {
		return nil, nil
	}
	var splits [][]byte
	var key []byte
	end := func() error {
		if len(key) == 0 {
			return usageErrorf("--%s: key %d is empty", testSplitsFlag, len(splits)+1)
		}
		splits = append(splits, key)
		key = nil
		return nil
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ',':
			if err := end(); err != nil {
				return nil, err
			}
		case '\\':
			switch {
			case i+1 < len(s) && (s[i+1] == '\\' || s[i+1] == ','):
				key = append(key, s[i+1])
				i++
			case i+1 < len(s) && s[i+1] == 'x':
				if i+4 > len(s) {
					return nil, usageErrorf(`--%s: \x needs two hex digits, got %q`, testSplitsFlag, s[i:])
				}
				b, err := strconv.ParseUint(s[i+2:i+4], 16, 8)
				if err != nil {
					return nil, usageErrorf(`--%s: \x needs two hex digits, got %q`, testSplitsFlag, s[i:i+4])
				}
				key = append(key, byte(b))
				i += 3
			default:
				return nil, usageErrorf(`--%s: bad escape at %q: want \\, \, or \xHH`, testSplitsFlag, s[i:min(i+2, len(s))])
			}
		default:
			key = append(key, c)
		}
	}
	if err := end(); err != nil {
		return nil, err
	}
	if err := server.CheckDataRangeSplits(splits); err != nil {
		return nil, usageErrorf("--%s: %v", testSplitsFlag, err)
	}
	return splits, nil
}

// checkRangeMaxBytes checks --range-max-bytes.
func checkRangeMaxBytes(n int64) error {
	if n == 0 {
		return usageErrorf("--range-max-bytes must not be 0 (negative: ranges split only with synod range split)")
	}
	return nil
}

// rangeMaxBytesUsage is the usage of --range-max-bytes (synod start, and
// hidden in synod demo).
const rangeMaxBytesUsage = "size of a data range's keys and their versions on disk above which it splits in two (negative: ranges split only with synod range split)"
