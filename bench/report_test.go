package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestWriteGeneratedKeepsAnalysis(t *testing.T) {
	path := filepath.Join(t.TempDir(), "benchmarks.md")
	doc := "# Title\n\nintro\n\n" + beginMarker + "\nold table\n" + endMarker + "\n\n## Analysis\n\nkept\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeGenerated(path, beginMarker+"\nnew table\n"+endMarker+"\n"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "# Title\n\nintro\n\n" + beginMarker + "\nnew table\n" + endMarker + "\n\n## Analysis\n\nkept\n"
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestWriteGeneratedCreatesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.md")
	if err := writeGenerated(path, beginMarker+"\ntable\n"+endMarker+"\n"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), "table") || !strings.Contains(string(got), "## Where the time goes") {
		t.Fatalf("new file lacks the table or the analysis heading:\n%s", got)
	}
}

func TestPercentile(t *testing.T) {
	var r result
	for i := 1; i <= 1000; i++ {
		r.lat = append(r.lat, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 500}, {99, 990}, {99.9, 999}, {100, 1000}, {0, 1}} {
		if got := r.percentile(c.p); got != c.want {
			t.Errorf("p%v: got %v, want %v", c.p, got, c.want)
		}
	}
	if got := (&result{}).percentile(50); got != 0 {
		t.Errorf("percentile of nothing: got %v, want 0", got)
	}
}

func TestCommas(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1575: "-1,575"} {
		if got := commas(n); got != want {
			t.Errorf("commas(%d): got %q, want %q", n, got, want)
		}
	}
}

func TestProcessCPUOfSelf(t *testing.T) {
	if _, err := processCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if _, err := statusField(os.Getpid(), "VmHWM"); err != nil {
		t.Fatal(err)
	}
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions([]string{"-systems", "synod", "-workloads", "put-1,txn-4-puts"})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.systems) != 1 || o.systems[0] != "synod" || len(o.workloads) != 2 {
		t.Fatalf("parsed %v %v", o.systems, o.workloads)
	}
	o, err = parseOptions([]string{"-systems", "synod@fb899af,synod", "-workloads", "put-1000", "-data-ranges", "8"})
	if err != nil || len(o.systems) != 2 || o.systems[0] != "synod@fb899af" {
		t.Fatalf("synod@<commit> for the workloads: got %v, %v, want both systems", o, err)
	}
	for _, bad := range [][]string{{"-systems", "zookeeper"}, {"-systems", "synod@"}, {"-workloads", "nope"}, {"-clients", "0"}} {
		if _, err := parseOptions(bad); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

func TestMergeRounds(t *testing.T) {
	a := &result{ops: 100, window: time.Second, lat: []time.Duration{3, 5}, peakRSS: 10, keys: 100, errors: 1}
	b := &result{ops: 300, window: time.Second, lat: []time.Duration{1, 4}, peakRSS: 7, keys: 300}
	m := mergeRounds([]*result{a, b})
	if got, want := m.throughput(), 200.0; got != want {
		t.Errorf("throughput: got %v, want %v", got, want)
	}
	if got, want := m.lat, []time.Duration{1, 3, 4, 5}; !slices.Equal(got, want) {
		t.Errorf("latencies: got %v, want %v", got, want)
	}
	if m.peakRSS != 10 || m.keys != 400 || m.errors != 1 {
		t.Errorf("peak RSS, keys, errors: got %d, %d, %d, want 10, 400, 1", m.peakRSS, m.keys, m.errors)
	}
	failed := &result{na: "failed: boom"}
	if got := mergeRounds([]*result{a, failed}); got.na != failed.na {
		t.Errorf("a failed round: got na %q, want %q", got.na, failed.na)
	}
}

func TestWriteSectionLeavesTheOtherSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "benchmarks.md")
	doc := "intro\n" + beginMarker + "\nmain\n" + endMarker + "\nmiddle\n" + leaseBeginMarker + "\nold leases\n" + leaseEndMarker + "\nend\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(path, leaseBeginMarker, leaseEndMarker, leaseBeginMarker+"\nnew leases\n"+leaseEndMarker+"\n"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "intro\n" + beginMarker + "\nmain\n" + endMarker + "\nmiddle\n" + leaseBeginMarker + "\nnew leases\n" + leaseEndMarker + "\nend\n"
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestParseHeapInuse(t *testing.T) {
	prof := "heap profile: 1: 2 [3: 4] @ heap/1048576\n\n# runtime.MemStats\n# Alloc = 100\n# HeapInuse = 123456\n# Stack = 1\n"
	got, err := parseHeapInuse(strings.NewReader(prof))
	if err != nil || got != 123456 {
		t.Fatalf("got %d, %v, want 123456", got, err)
	}
}

// TestMemberOverlayLeavesOutDataRanges checks that synodmember is built
// against a Synod without static data ranges with its DataRangeSplits field
// left out, and against one with them unchanged.
func TestMemberOverlayLeavesOutDataRanges(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		config      string
		wantOverlay bool
	}{
		{"package server\n\ntype Config struct{ DataRangeSplits [][]byte }\n", false},
		{"package server\n\ntype Config struct{}\n", true},
	} {
		src := t.TempDir()
		if err := os.MkdirAll(filepath.Join(src, "internal", "server"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, "internal", "server", "config.go"), []byte(tc.config), 0o644); err != nil {
			t.Fatal(err)
		}
		overlay, err := memberOverlay(dir, src, "abc")
		if err != nil {
			t.Fatal(err)
		}
		if got := overlay != ""; got != tc.wantOverlay {
			t.Fatalf("config %q: got an overlay %v, want %v", tc.config, got, tc.wantOverlay)
		}
		if overlay == "" {
			continue
		}
		patched, err := os.ReadFile(filepath.Join(dir, "synodmember-abc-main.go"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(patched), "DataRangeSplits:") {
			t.Errorf("the patched synodmember still sets DataRangeSplits")
		}
		if !strings.Contains(string(patched), "server.Open(server.Config{") {
			t.Errorf("the patched synodmember lost its server.Open call")
		}
	}
}
