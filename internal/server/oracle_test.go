package server_test

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/systemrange"
	"github.com/synod-io/synod/internal/testcluster"
)

// revisionsOp is one completed request for revisions.
type revisionsOp struct {
	node         int
	start, end   time.Time
	first, count uint64
}

// TestOracleRevisionsIncreaseAcrossFailovers asks every member for
// revisions without pause while the system range's leader is crashed,
// isolated, and the whole cluster crashed and restarted, with a ceiling
// window small enough that leaders store new ceilings all the time. No
// revision may be handed out twice, and a request that began after another
// ended must get higher revisions, whichever members served them.
func TestOracleRevisionsIncreaseAcrossFailovers(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *server.Config) { cfg.OracleWindow = 7 }})
	c.WaitLeader()

	var (
		mu   sync.Mutex
		ops  []revisionsOp
		done atomic.Bool
		wg   sync.WaitGroup
	)
	served := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(ops)
	}
	for i, n := range c.Nodes() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			for !done.Load() {
				srv := n.Server()
				if srv == nil {
					time.Sleep(time.Millisecond) // crashed: wait for its restart
					continue
				}
				count := 1 + rng.Uint64N(4)
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				start := time.Now()
				first, err := srv.Revisions(ctx, count)
				end := time.Now()
				cancel()
				if err != nil {
					continue // leader changes fail requests; they are retried
				}
				mu.Lock()
				ops = append(ops, revisionsOp{node: i, start: start, end: end, first: first, count: count})
				mu.Unlock()
			}
		}()
	}
	stop := func() {
		done.Store(true)
		wg.Wait()
	}
	defer stop()
	// progress waits until count more requests were served.
	progress := func(what string, count int) {
		t.Helper()
		want := served() + count
		deadline := time.Now().Add(20 * time.Second)
		for served() < want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: got %d requests served, want %d", what, served(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	progress("start", 200)
	for range 2 {
		l := c.WaitLeader()
		l.Crash()
		progress("after crashing the leader", 100)
		l.Restart()
		progress("after its restart", 100)
	}
	l := c.WaitLeader()
	c.Isolate(l)
	progress("with the leader isolated", 100)
	c.Heal()
	progress("healed", 100)
	for _, n := range c.Nodes() {
		n.Crash()
	}
	for _, n := range c.Nodes() {
		n.Restart()
	}
	progress("after a crash of every member", 200)
	stop()

	mu.Lock()
	defer mu.Unlock()
	// No revision handed out twice.
	byFirst := slices.Clone(ops)
	slices.SortFunc(byFirst, func(a, b revisionsOp) int { return cmpUint(a.first, b.first) })
	for i := 1; i < len(byFirst); i++ {
		if a, b := byFirst[i-1], byFirst[i]; a.first+a.count > b.first {
			t.Fatalf("revisions handed out twice: [%d,%d) to n%d and [%d,%d) to n%d",
				a.first, a.first+a.count, a.node+1, b.first, b.first+b.count, b.node+1)
		}
	}
	// Real-time order: each request gets revisions above those of every
	// request that ended before it began.
	byEnd := slices.Clone(ops)
	slices.SortFunc(byEnd, func(a, b revisionsOp) int { return a.end.Compare(b.end) })
	byStart := slices.Clone(ops)
	slices.SortFunc(byStart, func(a, b revisionsOp) int { return a.start.Compare(b.start) })
	var maxEnded uint64
	var maxOp revisionsOp
	j := 0
	for _, op := range byStart {
		for ; j < len(byEnd) && byEnd[j].end.Before(op.start); j++ {
			if last := byEnd[j].first + byEnd[j].count - 1; last > maxEnded {
				maxEnded, maxOp = last, byEnd[j]
			}
		}
		if op.first <= maxEnded {
			t.Fatalf("request of n%d begun at %v got revision %d, want above %d, handed out to n%d by a request that ended at %v",
				op.node+1, op.start.Format(time.StampMicro), op.first, maxEnded, maxOp.node+1, maxOp.end.Format(time.StampMicro))
		}
	}
	// The stored ceiling is above every revision handed out.
	last := byFirst[len(byFirst)-1]
	for _, n := range c.Nodes() {
		ceiling, err := systemrange.OracleCeiling(n.Server().DB())
		if err != nil {
			t.Fatal(err)
		}
		if top := last.first + last.count - 1; ceiling < top && n == c.WaitLeader() {
			t.Fatalf("stored ceiling on the leader: got %d, want at least %d", ceiling, top)
		}
	}
	t.Logf("%d requests served, revisions up to %d", len(ops), last.first+last.count-1)
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestOracleMetricsCountRequests asks every member for revisions, one
// request at a time (the followers' reach the oracle forwarded): the
// oracle's counters, summed over the members, must count every request
// and every revision, in no more batches than requests.
func TestOracleMetricsCountRequests(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *server.Config) { cfg.MetricsAddr = "127.0.0.1:0" }})
	c.WaitLeader()
	names := []string{"synod_oracle_requests_total", "synod_oracle_batches_total", "synod_oracle_revisions_total"}
	counters := func() map[string]float64 {
		t.Helper()
		sum := map[string]float64{}
		for _, n := range c.Nodes() {
			resp, err := http.Get("http://" + n.Server().HTTPAddr() + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			for line := range strings.SplitSeq(string(b), "\n") {
				for _, name := range names {
					if v, ok := strings.CutPrefix(line, name+" "); ok {
						f, err := strconv.ParseFloat(v, 64)
						if err != nil {
							t.Fatalf("%q: %v", line, err)
						}
						sum[name] += f
					}
				}
			}
		}
		for _, name := range names {
			if _, ok := sum[name]; !ok {
				t.Fatalf("/metrics lacks %s", name)
			}
		}
		return sum
	}
	before := counters()
	ctx := testcluster.Context(t, 30*time.Second)
	var requests, revisions float64
	for i := range 30 {
		n := c.Node(i % 3)
		count := uint64(1 + i%4)
		if _, err := n.Server().Revisions(ctx, count); err != nil {
			t.Fatal(err)
		}
		requests++
		revisions += float64(count)
	}
	after := counters()
	// Other things may ask the oracle meanwhile, never fewer.
	d := func(name string) float64 { return after[name] - before[name] }
	if got := d("synod_oracle_requests_total"); got < requests {
		t.Errorf("requests: got %v more, want at least %v", got, requests)
	}
	if got := d("synod_oracle_revisions_total"); got < revisions {
		t.Errorf("revisions: got %v more, want at least %v", got, revisions)
	}
	if got, reqs := d("synod_oracle_batches_total"), d("synod_oracle_requests_total"); got < 1 || got > reqs {
		t.Errorf("batches: got %v more, want 1 to %v (the requests)", got, reqs)
	}
}
