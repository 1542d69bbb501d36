package main

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"
)

// memberMetrics is a member's /metrics as client_golang writes it, with
// the oracle's counters at the given values (an empty one is left out,
// as by a Synod from before it).
func memberMetrics(requests, batches, revisions string) string {
	var b strings.Builder
	b.WriteString("# HELP go_goroutines Number of goroutines that currently exist.\n# TYPE go_goroutines gauge\ngo_goroutines 123\n")
	for _, c := range []struct{ name, v string }{{oracleBatches, batches}, {oracleRequests, requests}, {oracleRevisions, revisions}} {
		if c.v == "" {
			continue
		}
		b.WriteString("# HELP " + c.name + " Something.\n# TYPE " + c.name + " counter\n" + c.name + " " + c.v + "\n")
	}
	b.WriteString(`synod_grpc_requests_total{code="OK",method="/etcdserverpb.KV/Put"} 99` + "\n")
	b.WriteString("synod_oracle_requests_total_bogus 5\nsynod_raft_term 7\n")
	return b.String()
}

func TestParseOracleCounters(t *testing.T) {
	got, err := parseOracleCounters(strings.NewReader(memberMetrics("41", "7", "1.234567e+06")))
	if err != nil {
		t.Fatal(err)
	}
	want := oracleCounters{oracleRequests: 41, oracleBatches: 7, oracleRevisions: 1234567}
	if !maps.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// An old Synod: no requests counter, and none at all.
	got, err = parseOracleCounters(strings.NewReader(memberMetrics("", "7", "9")))
	if err != nil {
		t.Fatal(err)
	}
	if want := (oracleCounters{oracleBatches: 7, oracleRevisions: 9}); !maps.Equal(got, want) {
		t.Fatalf("without requests: got %v, want %v", got, want)
	}
	got, err = parseOracleCounters(strings.NewReader("go_goroutines 1\n"))
	if err != nil || len(got) != 0 {
		t.Fatalf("without the counters: got %v, %v, want none", got, err)
	}
	// Labelled series add up; a timestamp is ignored.
	got, err = parseOracleCounters(strings.NewReader(oracleBatches + `{node="a b"} 2` + "\n" + oracleBatches + `{node="c"} 3 1700000000000` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (oracleCounters{oracleBatches: 5}); !maps.Equal(got, want) {
		t.Fatalf("labelled: got %v, want %v", got, want)
	}
	if _, err := parseOracleCounters(strings.NewReader(oracleBatches + " many\n")); err == nil {
		t.Fatal("a value that is no number: no error")
	}
}

func TestOracleCountersSumAndDiff(t *testing.T) {
	parse := func(text string) oracleCounters {
		t.Helper()
		c, err := parseOracleCounters(strings.NewReader(text))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The system range's leader (n2) serves the oracle; n1 led it before.
	before := sumOracleCounters([]oracleCounters{
		parse(memberMetrics("100", "40", "150")),
		parse(memberMetrics("1000", "200", "5000")),
		parse(memberMetrics("0", "0", "0")),
	})
	if want := (oracleCounters{oracleRequests: 1100, oracleBatches: 240, oracleRevisions: 5150}); !maps.Equal(before, want) {
		t.Fatalf("sum before: got %v, want %v", before, want)
	}
	after := sumOracleCounters([]oracleCounters{
		parse(memberMetrics("100", "40", "150")),
		parse(memberMetrics("6000", "450", "55000")),
		parse(memberMetrics("0", "0", "0")),
	})
	d := after.since(before)
	if want := (oracleCounters{oracleRequests: 5000, oracleBatches: 250, oracleRevisions: 50000}); !maps.Equal(d, want) {
		t.Fatalf("increase: got %v, want %v", d, want)
	}
	// Over a 10 s window, 500 requests/s in 25 batches/s.
	res := &result{ops: 50000, window: 10 * time.Second, oracle: d}
	for name, want := range map[string]float64{oracleRequests: 500, oracleBatches: 25, oracleRevisions: 5000} {
		if got, ok := oracleRate(res, name); !ok || got != want {
			t.Errorf("%s per second: got %v (%v), want %v", name, got, ok, want)
		}
	}

	// A member without the requests counter leaves it out of the sum.
	old := sumOracleCounters([]oracleCounters{parse(memberMetrics("", "3", "4")), parse(memberMetrics("", "5", "6"))})
	if want := (oracleCounters{oracleBatches: 8, oracleRevisions: 10}); !maps.Equal(old, want) {
		t.Fatalf("old build: got %v, want %v", old, want)
	}
	if got := old.since(before); !maps.Equal(got, oracleCounters{}) {
		// Every counter went down: a member restarted, no increase to tell.
		t.Fatalf("counters that went down: got %v, want none", got)
	}
	if got := oracleCounters(nil).since(before); got != nil {
		t.Fatalf("not read after: got %v, want nil", got)
	}
	if got := sumOracleCounters(nil); got != nil {
		t.Fatalf("no members: got %v, want nil", got)
	}
}

func TestOracleTable(t *testing.T) {
	o := &options{workloads: []string{"put-1000"}}
	round := func(ops int64, oracle oracleCounters) *result {
		return &result{ops: ops, window: 10 * time.Second, oracle: oracle}
	}
	etcdRounds := []*result{round(40000, nil), round(42000, nil)}
	synodRounds := []*result{
		round(50000, oracleCounters{oracleRequests: 2000, oracleBatches: 1000, oracleRevisions: 50100}),
		round(52000, oracleCounters{oracleRequests: 2200, oracleBatches: 1100, oracleRevisions: 52100}),
	}
	oldRounds := []*result{
		round(30000, oracleCounters{oracleBatches: 900, oracleRevisions: 30000}),
		round(31000, oracleCounters{oracleBatches: 950, oracleRevisions: 31000}),
	}
	var runs []*systemRun
	for _, s := range []struct {
		system string
		rounds []*result
	}{{"etcd", etcdRounds}, {"synod", synodRounds}, {"synod@abc123", oldRounds}} {
		runs = append(runs, &systemRun{system: s.system,
			rounds:  map[string][]*result{"put-1000": s.rounds},
			results: map[string]*result{"put-1000": mergeRounds(s.rounds)}})
	}
	var b strings.Builder
	(&report{opts: o, runs: runs}).oracleTable(func(format string, args ...any) {
		b.WriteString(strings.TrimSpace(fmt.Sprintf(format, args...)) + "\n")
	})
	for _, want := range []string{
		"| put-1000 | etcd | 4,000, 4,200 | – | – | – | – | – |",
		"| put-1000 | synod | 5,000, 5,200 | 200, 220 | 100, 110 | 5,010, 5,210 | 24.29 | 2.00 |",
		"| put-1000 | synod@abc123 | 3,000, 3,100 | – | 90.0, 95.0 | 3,000, 3,100 | – | – |",
	} {
		if !strings.Contains(b.String(), want+"\n") {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}

	// Without a Synod there is no table.
	b.Reset()
	(&report{opts: o, runs: runs[:1]}).oracleTable(func(format string, args ...any) { b.WriteString(fmt.Sprintf(format, args...)) })
	if b.Len() != 0 {
		t.Errorf("etcd alone: got\n%s\nwant no table", b.String())
	}
}
