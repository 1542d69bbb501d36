package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/internal/lincheck"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// scenario is one run: a cluster, the faults it takes, for how long.
type scenario struct {
	name    string
	process bool // real synod processes instead of an in-process cluster
	nodes   int
	faults  []string
	// duration is how long the workload runs under faults.
	duration time.Duration
	seed     int64
}

func (sc scenario) String() string {
	kind := "in-process"
	if sc.process {
		kind = "processes"
	}
	return fmt.Sprintf("%s: %d nodes (%s), faults %s, %s, seed %d", sc.name, sc.nodes, kind, strings.Join(sc.faults, ","), sc.duration, sc.seed)
}

// stream returns the random generator of one purpose of a run: every
// purpose has its own, so that one's draws do not shift another's.
func stream(seed int64, purpose uint64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), purpose))
}

const (
	streamNemesis  = 1
	streamNetwork  = 2
	streamScenario = 3
	streamLeases   = 50  // + lease worker index
	streamClients  = 100 // + client index
)

// settings shared by every run.
const (
	opTimeout   = 1500 * time.Millisecond
	checkBudget = 2 * time.Minute // porcupine's time limit
)

// run is one scenario in progress: its cluster and everything that talks
// to it.
type run struct {
	t        *testing.T
	sc       scenario
	replay   string
	kinds    []faultKind
	c        cluster
	rec      *lincheck.Recorder
	keys     []string
	workers  []*worker
	watchers []*watcher
	leases   []*leaseWorker
	nem      *nemesis
}

// runScenario runs a scenario and checks what its clients saw; replay is
// the command that runs it again.
func runScenario(t *testing.T, sc scenario, replay string) {
	t.Logf("scenario %s", sc)
	t.Logf("replay: %s", replay)
	r := newRun(t, sc, replay)
	stopWatchers := r.startWatchers()
	defer stopWatchers()
	r.underFaults()
	r.report(r.verify(stopWatchers))
}

// newRun starts the cluster and connects the clients.
func newRun(t *testing.T, sc scenario, replay string) *run {
	r := &run{t: t, sc: sc, replay: replay, rec: lincheck.NewRecorder(), keys: []string{"k0", "k1", "k2", "k3"}}
	for _, name := range sc.faults {
		k, ok := faultKindNamed(name)
		if !ok || (sc.process && !k.process) || (!sc.process && !k.inProcess) {
			t.Fatalf("fault %q is not available for this cluster", name)
		}
		r.kinds = append(r.kinds, k)
	}
	if sc.process {
		r.c = startProcesses(t, sc.nodes)
	} else {
		takeInProcessTurn(t)
		tc := newInProcess(t, testcluster.Options{
			Nodes: sc.nodes, Rand: stream(sc.seed, streamNetwork),
			// Log truncations by agreement every 50 entries, so that many
			// of them meet the faults.
			Configure: func(_ int, cfg *server.Config) { cfg.LogTruncateStep = 50 },
		})
		tc.WaitLeader()
		r.c = inProcess{tc}
	}
	client := func(node int) *clientv3.Client {
		cli, err := newClient(r.c.endpoint(node))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	w := &workload{keys: r.keys, opTimeout: opTimeout, think: 5 * time.Millisecond}
	for i := range 2 * sc.nodes {
		node := i % sc.nodes
		r.workers = append(r.workers, &worker{w: w, id: i, node: r.c.name(node), cli: client(node),
			rng: stream(sc.seed, streamClients+uint64(i)), rec: r.rec, last: map[string]string{}})
	}
	for i := range sc.nodes {
		r.leases = append(r.leases, &leaseWorker{id: i, cli: client(i), rng: stream(sc.seed, streamLeases+uint64(i)), rec: r.rec})
	}
	// Watchers start after the revision the cluster is at now.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	first, err := client(0).Get(ctx, "probe")
	if err != nil {
		t.Fatalf("read the first revision: %v", err)
	}
	for i := range sc.nodes {
		r.watchers = append(r.watchers, newWatcher(r.c.name(i), client(i), first.Header.Revision+1))
	}
	r.nem = &nemesis{
		c: r.c, kinds: r.kinds, rng: stream(sc.seed, streamNemesis), rec: r.rec,
		hold:      [2]time.Duration{300 * time.Millisecond, 1500 * time.Millisecond},
		quiet:     [2]time.Duration{200 * time.Millisecond, 800 * time.Millisecond},
		logf:      t.Logf,
		roundDone: make(chan struct{}),
	}
	return r
}

// startWatchers starts the watchers; they run through the faults and the
// restart of every node, until the returned function stops them (it may be
// called more than once).
func (r *run) startWatchers() (stop func()) {
	ctx, cancel := context.WithCancel(r.t.Context())
	var wg sync.WaitGroup
	for _, w := range r.watchers {
		wg.Go(func() { w.run(ctx) })
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// underFaults runs the workload and the nemesis for the scenario's
// duration, and at least until every fault kind was injected once (a slow
// machine must not lose coverage).
func (r *run) underFaults() {
	ctx, cancel := context.WithCancel(r.t.Context())
	defer cancel()
	var wg sync.WaitGroup
	for _, wk := range r.workers {
		wg.Go(func() { wk.run(ctx) })
	}
	for _, lw := range r.leases {
		wg.Go(func() { lw.run(ctx) })
	}
	var nemErr error
	nemDone := make(chan struct{})
	wg.Go(func() {
		defer close(nemDone)
		nemErr = r.nem.run(ctx)
	})
	start := time.Now()
	sleep(ctx, r.sc.duration)
	select {
	case <-r.nem.roundDone:
	case <-nemDone: // it failed
	case <-ctx.Done():
	}
	cancel()
	wg.Wait()
	r.t.Logf("ran %s under faults", time.Since(start).Round(time.Millisecond))
	if nemErr != nil {
		r.t.Errorf("nemesis: %v", nemErr)
	}
}

// verdict is everything a run's checks found.
type verdict struct {
	res      lincheck.Result
	problems []string
	history  []lincheck.Op
	faults   []lincheck.Event
	eventLog []lincheck.WatchEvent
	watchers []lincheck.Watcher
	leases   []lincheck.Lease
	summary  string
}

// verify restarts every node, reads back what the clients wrote, waits for
// the watchers to catch up, and checks it all.
func (r *run) verify(stopWatchers func()) verdict {
	t, c := r.t, r.c
	var v verdict
	restartErr := restartAll(t, c)
	if restartErr != nil {
		v.problems = append(v.problems, "restart of every node: "+restartErr.Error())
	}
	client := len(r.workers) // the final operations' client id
	v.problems = append(v.problems, finalReads(t, c, r.rec, r.keys, client)...)
	// A last write marks the end of the event log the watchers must reach.
	end, err := sentinel(t.Context(), c, r.rec, client)
	if err != nil {
		v.problems = append(v.problems, err.Error())
	} else {
		var more []string
		v.eventLog, v.watchers, more = checkWatches(t.Context(), c, r.watchers, end)
		v.problems = append(v.problems, more...)
	}
	stopWatchers()

	v.history, v.faults = r.rec.History(), r.rec.Events()
	t.Logf("history: %s", lincheck.Stats(v.history))
	t.Logf("fault schedule (%d faults):\n  %s", len(v.faults), schedule(v.faults))
	start := time.Now()
	v.res = lincheck.Check(v.history, checkBudget)
	t.Logf("checked in %s", time.Since(start).Round(time.Millisecond))
	if restartErr == nil {
		missing, err := checkDurable(t.Context(), c, v.history)
		if err != nil {
			v.problems = append(v.problems, "durability check: "+err.Error())
		}
		v.problems = append(v.problems, missing...)
	}
	if v.eventLog != nil {
		v.problems = append(v.problems, lincheck.CheckEventLog(v.eventLog, v.history)...)
		v.problems = append(v.problems, lincheck.CheckWatchers(v.eventLog, v.watchers)...)
	}
	for _, lw := range r.leases {
		v.leases = append(v.leases, lw.leases...)
	}
	v.problems = append(v.problems, lincheck.CheckLeases(v.leases)...)
	if restartErr == nil {
		if err := leaseKeysGone(t.Context(), c.endpoint(0)); err != nil {
			v.problems = append(v.problems, err.Error())
		}
	}
	v.problems = append(v.problems, r.progress(&v)...)
	return v
}

// progress checks that the run did what it was for: every fault injected,
// writes acknowledged, leases holding keys. It sets v.summary.
func (r *run) progress(v *verdict) []string {
	var problems []string
	for _, k := range r.kinds {
		if r.nem.injected[k.name] == 0 {
			problems = append(problems, fmt.Sprintf("fault %s was never injected", k.name))
		}
	}
	acked := 0
	for _, o := range v.history {
		if !o.Output.Unknown && o.Input.Kind != lincheck.Get {
			acked++
		}
	}
	if acked < 20 {
		problems = append(problems, fmt.Sprintf("only %d writes acknowledged: the cluster made no real progress", acked))
	}
	attached := 0
	for _, l := range v.leases {
		if l.Attached > 0 {
			attached++
		}
	}
	if attached == 0 && len(r.leases) > 0 {
		problems = append(problems, "no lease got its key attached: the lease workload made no progress")
	}
	v.summary = fmt.Sprintf("%d acknowledged writes all present after restart; %d watchers saw all %d events; %d leases (%d with keys) expired neither early nor never",
		acked, len(v.watchers), len(v.eventLog), len(v.leases), attached)
	return problems
}

// report passes the run, or fails it with everything needed to replay and
// study it.
func (r *run) report(v verdict) {
	t, sc := r.t, r.sc
	if v.res.OK() && len(v.problems) == 0 {
		t.Logf("ok: %s; %s", v.res, v.summary)
		return
	}
	jsonPath, htmlPath, err := v.res.WriteFiles(outDir(t, sc), lincheck.Report{Seed: sc.seed, Replay: r.replay, Faults: v.faults,
		Problems: v.problems, EventLog: v.eventLog, Watchers: v.watchers, Leases: v.leases})
	if err != nil {
		t.Errorf("write report: %v", err)
	}
	t.Errorf("FAILED %s\nseed %d; replay: %s\n%s\n%s\n%s\nfault schedule:\n  %s\nhistory: %s\nvisualization: %s\nnode logs: %s",
		sc.name, sc.seed, r.replay, v.res, v.res.Explain(), strings.Join(v.problems, "\n"), schedule(v.faults), jsonPath, htmlPath, r.c.logs())
}

func schedule(faults []lincheck.Event) string {
	var lines []string
	for _, e := range faults {
		lines = append(lines, e.String())
	}
	return strings.Join(lines, "\n  ")
}

// outDir is where a failed run's files go: under -out if set, else in a new
// directory of $TMPDIR that outlives the test.
func outDir(t *testing.T, sc scenario) string {
	name := fmt.Sprintf("%s-seed%d", sc.name, sc.seed)
	if *outFlag != "" {
		return *outFlag + "/" + name
	}
	dir, err := os.MkdirTemp("", "synod-chaos-"+name+"-")
	if err != nil {
		t.Errorf("report dir: %v", err)
		return os.TempDir()
	}
	return dir
}

// restartAll heals the network, then crashes every node and restarts it
// (a power failure for in-process nodes, SIGKILL for processes), and waits
// until every node serves linearizable reads.
func restartAll(t *testing.T, c cluster) error {
	c.heal()
	for i := range c.size() {
		if err := c.resume(i); err != nil {
			return err
		}
		if c.running(i) {
			if err := c.crash(i); err != nil {
				return err
			}
		}
	}
	for i := range c.size() {
		if err := c.restart(i); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	return waitServing(ctx, c)
}

// sentinel writes a last key of the watched range, recorded in the
// history, and returns its revision: the end of the event log.
func sentinel(ctx context.Context, c cluster, rec *lincheck.Recorder, client int) (int64, error) {
	cli, err := newClient(c.endpoint(0))
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p := rec.Invoke(client, c.name(0), lincheck.Input{Kind: lincheck.Put, Key: watchPrefix + "~end", Value: "end"})
	resp, err := cli.Put(ctx, watchPrefix+"~end", "end")
	if err != nil {
		p.Unknown(err)
		return 0, fmt.Errorf("write the end of the event log: %w", err)
	}
	p.Ok(lincheck.Output{Revision: resp.Header.Revision})
	return resp.Header.Revision, nil
}

// checkWatches waits until every watcher reached revision end, and reads the
// store's event log up to it.
func checkWatches(ctx context.Context, c cluster, watchers []*watcher, end int64) ([]lincheck.WatchEvent, []lincheck.Watcher, []string) {
	var problems []string
	deadline := time.Now().Add(30 * time.Second)
	for _, w := range watchers {
		for w.lastRevision() < end && time.Now().Before(deadline) {
			sleep(ctx, 20*time.Millisecond)
		}
	}
	var seen []lincheck.Watcher
	for _, w := range watchers {
		s, fails := w.result()
		seen = append(seen, s)
		problems = append(problems, fails...)
	}
	log, err := eventLog(ctx, c.endpoint(0), end)
	if err != nil {
		return nil, seen, append(problems, err.Error())
	}
	return log, seen, problems
}

// finalReads reads every key once more through each node, recorded in the
// history (client id nClients), and returns the errors.
func finalReads(t *testing.T, c cluster, rec *lincheck.Recorder, keys []string, client int) []string {
	var problems []string
	for i := range c.size() {
		cli, err := newClient(c.endpoint(i))
		if err != nil {
			return append(problems, err.Error())
		}
		for _, k := range keys {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			p := rec.Invoke(client, c.name(i), lincheck.Input{Kind: lincheck.Get, Key: k})
			resp, err := cli.Get(ctx, k)
			cancel()
			if err != nil {
				p.Failed()
				problems = append(problems, fmt.Sprintf("final read of %s on %s: %v", k, c.name(i), err))
				continue
			}
			out := lincheck.Output{Revision: resp.Header.Revision}
			readInto(&out, resp.Kvs)
			p.Ok(out)
		}
		cli.Close()
	}
	return problems
}

// checkDurable reads every acknowledged write back through the first node.
func checkDurable(ctx context.Context, c cluster, history []lincheck.Op) ([]string, error) {
	cli, err := newClient(c.endpoint(0))
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	return lincheck.CheckDurable(ctx, history, func(ctx context.Context, key string, rev int64) (bool, string, int64, error) {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := cli.Get(rctx, key, clientv3.WithRev(rev))
		if errors.Is(err, rpctypes.ErrFutureRev) {
			return false, "", 0, lincheck.ErrFutureRevision
		}
		if err != nil {
			return false, "", 0, err
		}
		if len(resp.Kvs) == 0 {
			return false, "", 0, nil
		}
		if len(resp.Kvs) > 1 {
			return false, "", 0, errors.New("several keys returned")
		}
		return true, string(resp.Kvs[0].Value), resp.Kvs[0].ModRevision, nil
	})
}
