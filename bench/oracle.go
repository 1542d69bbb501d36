package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The revision oracle's load (issue 15). Every write on Synod takes its
// revision from the cluster's oracle, which serves requests in batches, one
// ReadIndex round per batch; the workloads report how many requests,
// batches and revisions it served per second beside the writes. Synod's
// members serve /metrics (server.Config.MetricsAddr) during the workloads,
// and the harness reads the oracle's counters from every member just before
// and just after each measured window.

// The oracle's counters, in the order of the report's columns.
const (
	oracleRequests  = "synod_oracle_requests_total"
	oracleBatches   = "synod_oracle_batches_total"
	oracleRevisions = "synod_oracle_revisions_total"
)

var oracleCounterNames = []string{oracleRequests, oracleBatches, oracleRevisions}

// oracleCounters are the oracle's counters of one member, or their sum over
// members or their increase over a window, by name. A counter the members
// do not export (a Synod built from a commit before it) is absent; a nil
// map means none was read (etcd, which has no oracle).
type oracleCounters map[string]float64

// parseOracleCounters reads the oracle's counters from a Prometheus text
// exposition (/metrics). A counter with labels would be the sum of its
// series; the oracle's have none.
func parseOracleCounters(r io.Reader) (oracleCounters, error) {
	c := oracleCounters{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		var name, rest string
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				return nil, fmt.Errorf("parse metrics line %q: unclosed labels", line)
			}
			name, rest = line[:i], line[j+1:]
		} else {
			name, rest, _ = strings.Cut(line, " ")
		}
		if !slices.Contains(oracleCounterNames, name) {
			continue
		}
		// The value, then an optional timestamp.
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("parse metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("parse metrics line %q: %w", line, err)
		}
		c[name] += v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	return c, nil
}

// sumOracleCounters adds up the members' counters; a counter is in the sum
// only if every member exports it.
func sumOracleCounters(members []oracleCounters) oracleCounters {
	if len(members) == 0 {
		return nil
	}
	sum := oracleCounters{}
	for _, name := range oracleCounterNames {
		var total float64
		all := true
		for _, m := range members {
			v, ok := m[name]
			if !ok {
				all = false
				break
			}
			total += v
		}
		if all {
			sum[name] = total
		}
	}
	return sum
}

// since is the increase of the counters from before to c, for the counters
// read both times; one that went down (a member restarted) is left out.
func (c oracleCounters) since(before oracleCounters) oracleCounters {
	if c == nil || before == nil {
		return nil
	}
	d := oracleCounters{}
	for name, v := range c {
		if b, ok := before[name]; ok && v >= b {
			d[name] = v - b
		}
	}
	return d
}

// plus adds two increases (rounds pooled), for the counters both have; nil
// when either is.
func (c oracleCounters) plus(o oracleCounters) oracleCounters {
	if c == nil || o == nil {
		return nil
	}
	s := oracleCounters{}
	for name, v := range c {
		if w, ok := o[name]; ok {
			s[name] = v + w
		}
	}
	return s
}

// servesMetrics reports whether the members serve /metrics (Synod's, in
// the workloads).
func (c *cluster) servesMetrics() bool {
	for _, m := range c.members {
		if m.args.MetricsAddr == "" {
			return false
		}
	}
	return len(c.members) > 0
}

// oracleCounters reads the oracle's counters from every member's /metrics
// and sums them; nil if the members serve none.
func (c *cluster) oracleCounters(ctx context.Context) (oracleCounters, error) {
	if !c.servesMetrics() {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var members []oracleCounters
	for _, m := range c.members {
		mc, err := scrapeOracleCounters(ctx, "http://"+m.args.MetricsAddr+"/metrics")
		if err != nil {
			return nil, fmt.Errorf("%s member %s: %w", c.system, m.args.Name, err)
		}
		members = append(members, mc)
	}
	return sumOracleCounters(members), nil
}

func scrapeOracleCounters(ctx context.Context, url string) (oracleCounters, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("read %s: %s: %s", url, resp.Status, b)
	}
	return parseOracleCounters(resp.Body)
}

// readOracle is cluster.oracleCounters for a window: a member that cannot
// be read leaves the window's oracle columns empty ("–") rather than
// failing the workload, whose other figures stand.
func readOracle(ctx context.Context, c *cluster) oracleCounters {
	oc, err := c.oracleCounters(ctx)
	if err != nil {
		logf("oracle counters not read: %v", err)
		return nil
	}
	return oc
}

// oracleRate is a counter's increase per second over the window of res, or
// false when it was not read.
func oracleRate(res *result, name string) (float64, bool) {
	v, ok := res.oracle[name]
	if !ok || res.window <= 0 {
		return 0, false
	}
	return v / res.window.Seconds(), true
}

// oracleRatesByRound lists a counter's rate round by round, "–" for a
// round without it, or only "–" when no round has it.
func oracleRatesByRound(rounds []*result, name string) string {
	var parts []string
	some := false
	for _, rr := range rounds {
		if v, ok := oracleRate(rr, name); ok {
			parts = append(parts, fmtRate(v))
			some = true
		} else {
			parts = append(parts, "–")
		}
	}
	if !some {
		return "–"
	}
	return strings.Join(parts, ", ")
}

// perUnit is a/b for the report's ratios: "–" when b is not positive.
func perUnit(a, b float64, okA, okB bool) string {
	if !okA || !okB || b <= 0 {
		return "–"
	}
	q := a / b
	if q >= 100 {
		return commas(int64(q + 0.5))
	}
	return fmt.Sprintf("%.2f", q)
}

// oracleTable reports the oracle's load per workload and round, followed
// by an empty line; nothing when no Synod ran.
func (r *report) oracleTable(p func(string, ...any)) {
	if !slices.ContainsFunc(r.runs, func(sr *systemRun) bool { return isSynod(sr.system) }) {
		return
	}
	p("### Revision oracle (issue 15)")
	p("")
	p("What Synod's revision oracle served during each measured window, per second, round by round, beside the workload's throughput (for the put and txn workloads an operation is one write: a put, or a txn however many keys it puts): requests for revisions (the data ranges' leaders' for stamping, the linearizable reads' for a read revision; the other members forward theirs to the oracle on the system range's leader), batches (one ReadIndex round of the system range each) and revisions handed out. The counters (`%s`, `%s`, `%s`) are read from every member's `/metrics` just before and just after the window and summed over the members. The last two columns pool the rounds. etcd has no oracle (–); a Synod build that does not export a counter shows – too.",
		oracleRequests, oracleBatches, oracleRevisions)
	p("")
	p("| workload | system | ops/s by round | oracle requests/s by round | oracle batches/s by round | revisions/s by round | ops / request | requests / batch |")
	p("|---|---|--:|--:|--:|--:|--:|--:|")
	for _, w := range workloads() {
		for _, sr := range r.runs {
			res := sr.results[w.name]
			if res == nil || res.na != "" {
				continue
			}
			req, okReq := res.oracle[oracleRequests]
			bat, okBat := res.oracle[oracleBatches]
			p("| %s | %s | %s | %s | %s | %s | %s | %s |", w.name, sr.system, throughputByRound(sr.rounds[w.name]),
				oracleRatesByRound(sr.rounds[w.name], oracleRequests), oracleRatesByRound(sr.rounds[w.name], oracleBatches),
				oracleRatesByRound(sr.rounds[w.name], oracleRevisions),
				perUnit(float64(res.ops), req, true, okReq), perUnit(req, bat, okReq, okBat))
		}
	}
	p("")
}

// isSynod reports whether system is Synod (synod, or synod@<commit>).
func isSynod(system string) bool {
	return system == "synod" || strings.HasPrefix(system, "synod@")
}
