package gcpolicy

import (
	"bufio"
	"runtime/debug"
	"strings"
	"testing"
)

func TestParseMemInfo(t *testing.T) {
	got, err := parseMemInfo(bufio.NewScanner(strings.NewReader("MemFree: 10 kB\nMemTotal:       24576000 kB\n")))
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(24576000) << 10; got != want {
		t.Fatalf("MemTotal: got %d, want %d", got, want)
	}
	if _, err := parseMemInfo(bufio.NewScanner(strings.NewReader("MemTotal: 12 MB\n"))); err == nil {
		t.Fatalf("MemTotal in MB: got no error, want one")
	}
	if _, err := parseMemInfo(bufio.NewScanner(strings.NewReader("Cached: 1 kB\n"))); err == nil {
		t.Fatalf("no MemTotal: got no error, want one")
	}
}

func TestParseCgroupMax(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"max\n", 0, false},
		{"1073741824\n", 1 << 30, true},
		{"", 0, false},
		{"-5", 0, false},
		{"abc", 0, false},
	} {
		got, ok := parseCgroupMax([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseCgroupMax(%q): got %d, %v, want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestLimit(t *testing.T) {
	if got, want := Limit(0), int64(minLimit); got != want {
		t.Errorf("Limit(unknown): got %d, want %d", got, want)
	}
	if got, want := Limit(24<<30), int64(6<<30); got != want {
		t.Errorf("Limit(24 GiB): got %d, want %d", got, want)
	}
}

func TestApplyRespectsEnvironment(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))

	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	p := Apply()
	if p.Percent != Percent {
		t.Errorf("Percent without GOGC: got %d, want %d", p.Percent, Percent)
	}
	if got := debug.SetGCPercent(Percent); got != Percent {
		t.Errorf("GC percent after Apply: got %d, want %d", got, Percent)
	}
	if got := debug.SetMemoryLimit(-1); got != p.MemoryLimit || got < minLimit {
		t.Errorf("memory limit after Apply: got %d, want %d (at least %d)", got, p.MemoryLimit, minLimit)
	}

	t.Setenv("GOGC", "50")
	t.Setenv("GOMEMLIMIT", "2GiB")
	debug.SetGCPercent(50)
	p = Apply()
	if p.Percent != -1 || p.MemoryLimit != 0 {
		t.Errorf("Apply with GOGC and GOMEMLIMIT set: got %+v, want both left alone", p)
	}
	if got := debug.SetGCPercent(50); got != 50 {
		t.Errorf("GC percent with GOGC=50: got %d, want 50", got)
	}
}
