package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestLimitCommands(t *testing.T) {
	c := startCluster(t)
	// Revisions may have gaps: each set must answer a higher one.
	var prev int64
	for _, tc := range []struct {
		what string
		args []string
	}{
		{"api created", []string{"api", "--rate", "100/h", "--burst", "3"}},
		{"api changed", []string{"api", "--rate", "100/h", "--burst", "2"}},
		{"day created", []string{"day", "--rate", "5/day", "--algorithm", "calendar-window", "--time-zone", "Europe/Paris", "--mode", "shadow"}},
		{"jobs created", []string{"jobs", "--algorithm", "concurrency", "--max", "1"}},
	} {
		prev = wantLimitSet(t, c, tc.what, prev, tc.args...)
	}

	// take: exit 0 while allowed, 1 once refused, with a JSON object.
	c.want(t, "", "allowed remaining=1 limit=2\n", "limit", "take", "api", "alice")
	code, stdout, stderr := c.run(t, "", "limit", "take", "api", "alice", "--cost", "2", "-w", "json")
	if code != 1 {
		t.Fatalf("take beyond the burst: exit %d (stderr %q), want 1", code, stderr)
	}
	var d struct {
		Allowed      *bool  `json:"allowed"`
		Remaining    *int64 `json:"remaining"`
		RetryAfterMs *int64 `json:"retry_after_ms"`
	}
	if err := json.Unmarshal([]byte(stdout), &d); err != nil || d.Allowed == nil || *d.Allowed || d.Remaining == nil || *d.Remaining != 1 || d.RetryAfterMs == nil || *d.RetryAfterMs < 35_000 {
		t.Fatalf("take -w json: got %q (%v), want allowed false, remaining 1, retry_after_ms about 36000", stdout, err)
	}
	// Another key is apart.
	c.want(t, "", "allowed remaining=0 limit=2\n", "limit", "take", "api", "bob", "--cost", "2")
	// Shadow: never refused, said so.
	if code, stdout, _ := c.run(t, "", "limit", "take", "day", "k", "--peek", "--cost", "5"); code != 0 || !strings.HasPrefix(stdout, "allowed remaining=0") {
		t.Fatalf("peek: exit %d, %q", code, stdout)
	}
	c.run(t, "", "limit", "take", "day", "k", "--cost", "5")
	code, stdout, _ = c.run(t, "", "limit", "take", "day", "k")
	if code != 0 || !strings.Contains(stdout, "shadow: would refuse") {
		t.Fatalf("shadow take over its limit: exit %d, %q; want allowed, would refuse", code, stdout)
	}

	// Usage errors exit 2.
	for _, args := range [][]string{
		{"limit", "set", "x"},
		{"limit", "set", "x", "--rate", "ten/s"},
		{"limit", "set", "x", "--rate", "10/fortnight"},
		{"limit", "set", "x", "--rate", "10/s", "--algorithm", "leaky"},
		{"limit", "set", "x", "--algorithm", "concurrency"},
		{"limit", "set", "x", "--rate", "10/s", "--mode", "lax"},
		{"limit", "take"},
		{"limit", "run", "api"},
	} {
		if code, _, _ := c.run(t, "", args...); code != exitUsage {
			t.Errorf("synod %s: exit %d, want %d", strings.Join(args, " "), code, exitUsage)
		}
	}

	// list, get, stats, delete.
	code, stdout, _ = c.run(t, "", "limit", "list")
	for _, want := range []string{"NAME", "api", "gcra", "100/h", "day", "calendar-window", "5/day", "shadow", "jobs", "concurrency"} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Fatalf("limit list: exit %d, got %q, want %q in it", code, stdout, want)
		}
	}
	code, stdout, _ = c.run(t, "", "limit", "get", "day")
	if code != 0 || !strings.Contains(stdout, "time zone: Europe/Paris") || !strings.Contains(stdout, "mode: shadow") {
		t.Fatalf("limit get: exit %d, %q", code, stdout)
	}
	code, stdout, _ = c.run(t, "", "limit", "get", "api", "-w", "json")
	if code != 0 || !strings.Contains(stdout, `"burst":"2"`) {
		t.Fatalf("limit get -w json: exit %d, %q", code, stdout)
	}
	code, stdout, _ = c.run(t, "", "limit", "stats", "api")
	if code != 0 || !strings.Contains(stdout, "allowed: 2") || !strings.Contains(stdout, "refused: 1") {
		t.Fatalf("limit stats: exit %d, %q; want 2 allowed, 1 refused", code, stdout)
	}
	c.want(t, "", "limit api deleted\n", "limit", "delete", "api")
	c.wantError(t, "", "delete limit api: rpc error: code = NotFound desc = no such limit", "limit", "delete", "api")
	code, _, stderr = c.run(t, "", "limit", "take", "api")
	if code != exitError || !strings.Contains(stderr, "not found") {
		t.Fatalf("take from a deleted limit: exit %d, stderr %q", code, stderr)
	}
}

// TestLimitRun runs commands under a concurrency limit of one: the second
// waits until the first exits, and gets the first's exit code semantics.
func TestLimitRun(t *testing.T) {
	c := startCluster(t)
	wantLimitSet(t, c, "jobs created", 0, "jobs", "--algorithm", "concurrency", "--max", "1")
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	// The first holds the permit until the gate file exists.
	first := c.start(t, "limit", "run", "jobs", "k", "--", "sh", "-c", "echo started; while [ ! -e "+gate+" ]; do sleep 0.02; done; exit 3")
	first.waitOutput(t, "started", 10*time.Second)
	second := c.start(t, "limit", "run", "jobs", "k", "--", "sh", "-c", "echo second; test -e "+gate)
	// While the first runs, the permit is taken.
	code, stdout, _ := c.run(t, "", "limit", "stats", "jobs")
	if code != 0 || !strings.Contains(stdout, "permits held: 1") {
		t.Fatalf("stats while the first runs: exit %d, %q", code, stdout)
	}
	if strings.Contains(second.stdout.String(), "second") {
		t.Fatal("the second command ran while the first held the only permit")
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := first.exitCode(t, 10*time.Second); code != 3 {
		t.Fatalf("first: exit %d, want its command's 3", code)
	}
	second.waitOutput(t, "second", 10*time.Second)
	if code := second.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("second: exit %d (stderr %q), want 0", code, second.stderr.String())
	}
	// A rate limit: run waits for the token.
	wantLimitSet(t, c, "r created", 0, "r", "--rate", "10/s", "--burst", "1")
	start := time.Now()
	for range 3 {
		c.want(t, "", "ok\n", "limit", "run", "r", "--", "echo", "ok")
	}
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Fatalf("three runs at 10/s with a burst of 1 took %s, want at least 200ms", took)
	}
}

// wantLimitSet runs synod limit set with args and checks that it answers
// "limit <what> (revision N)" with N above prev; it returns N.
func wantLimitSet(t *testing.T, c *testCluster, what string, prev int64, args ...string) int64 {
	t.Helper()
	code, stdout, stderr := c.run(t, "", append([]string{"limit", "set"}, args...)...)
	m := regexp.MustCompile(`^limit ` + regexp.QuoteMeta(what) + ` \(revision (\d+)\)\n$`).FindStringSubmatch(stdout)
	if code != 0 || m == nil {
		t.Fatalf("synod limit set %v: exit %d, %q (stderr %q), want 0 and \"limit %s (revision N)\"", args, code, stdout, stderr, what)
	}
	rev, _ := strconv.ParseInt(m[1], 10, 64)
	if rev <= prev {
		t.Fatalf("synod limit set %v: revision %d, want above %d", args, rev, prev)
	}
	return rev
}
