package main

import (
	"slices"
	"strings"
	"testing"
)

func TestRangeKeys(t *testing.T) {
	const n = 1000
	var splits []string
	for i := 1; i < n; i++ {
		splits = append(splits, rangeSplitKey(i))
	}
	if !slices.IsSorted(splits) || splits[0] <= "\x01synod/\xff" {
		t.Fatalf("split keys unsorted or not above the reserved keys: %q...", splits[:3])
	}
	for i := range n {
		if got := rangeOfKey(rangeKey(i), splits); got != i {
			t.Fatalf("key %q of range %d lies in range %d", rangeKey(i), i, got)
		}
	}
}

func TestParseGoroutines(t *testing.T) {
	got, err := parseGoroutines(strings.NewReader("goroutine profile: total 1234\n5 @ 0x1 0x2\n"))
	if err != nil || got != 1234 {
		t.Fatalf("got %d, %v, want 1234", got, err)
	}
	if _, err := parseGoroutines(strings.NewReader("heap profile: 1: 2\n")); err == nil {
		t.Fatal("a heap profile parsed as a goroutine profile")
	}
}

func TestParseOptionsRangesIdle(t *testing.T) {
	o, err := parseOptions([]string{"-ranges-idle", "1,100,1000"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.rangesIdle, []int{1, 100, 1000}) || !slices.Equal(o.systems, []string{"synod"}) {
		t.Fatalf("parsed %v on %v, want [1 100 1000] on [synod] (etcd left out)", o.rangesIdle, o.systems)
	}
	if o, err = parseOptions([]string{"-ranges-idle", "1,10", "-systems", "synod,synod@abc123"}); err != nil || len(o.systems) != 2 {
		t.Fatalf("synod@<commit>: %v, %v", o, err)
	}
	for _, bad := range [][]string{
		{"-ranges-idle", "100,10"}, {"-ranges-idle", "0"}, {"-ranges-idle", "x"},
		{"-ranges-idle", "10", "-systems", "etcd"}, {"-ranges-idle", "10", "-leases", "idle"},
		{"-ranges-idle", "10", "-data-ranges", "2"},
	} {
		if _, err := parseOptions(bad); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

func TestRangesMarkdownGrowth(t *testing.T) {
	pt := func(n int, rss uint64) *rangesPoint {
		return &rangesPoint{system: "synod", ranges: n, names: []string{"n1", "n2", "n3"},
			leaderCPU: []float64{1}, meanCPU: []float64{1}, rss: []uint64{rss, rss, rss},
			heap: []uint64{rss / 2, rss / 2, rss / 2}, goroutines: []int{10, 10, 10}, led: []int{n + 1, 0, 0}}
	}
	r := &rangesReport{opts: &options{rangesIdle: []int{1, 101}, systems: []string{"synod"}, rounds: 1},
		points: []*rangesPoint{pt(1, 100<<20), pt(101, 100<<20+100*20<<10)}}
	md := r.markdown()
	// 2,000 KiB more over 100 ranges added: 20 KiB of RSS and 10 of heap
	// per range.
	if !strings.Contains(md, "| 20.0 KiB |") || !strings.Contains(md, "| 10.0 KiB |") {
		t.Fatalf("no growth of 20 and 10 KiB per range in\n%s", md)
	}
	if !strings.HasPrefix(md, rangesBeginMarker) || !strings.Contains(md, rangesEndMarker) {
		t.Fatalf("markers missing from\n%s", md)
	}
}
