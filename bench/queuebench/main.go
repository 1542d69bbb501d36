// Command queuebench measures Synod's job queues against River
// (github.com/riverqueue/river) on PostgreSQL, on the same machine in the
// same run, and prints the results as Markdown:
//
//	cd bench && go run ./queuebench
//
// It starts a 3-node Synod cluster (the synodmember command, which it builds
// with the go tool, so run it from the bench directory; default
// configuration: every entry fsynced on every member) and one PostgreSQL
// server (Debian's package, initdb with default durability: fsync and
// synchronous_commit on), each in its own processes, and drives both from
// this process with their Go clients: Synod's client.Queue and Worker, and
// River's Client with the pgx v5 driver. Both sides work with -workers
// concurrent handlers (Synod: one Worker with that concurrency; River: one
// queue with that MaxWorkers), handlers that do nothing.
//
// Every workload reports two latencies per job, both taken in this process
// on the same clock, from the start of the push call that pushed the job
// (its payload carries that time):
//
//   - push to completion (the "from push to completion"): until the
//     job's completion is committed and this process learns it. Synod: the
//     Worker SDK sends each finish over its claim stream after the handler
//     returned, and the member answers it (a FinishResult with no error in
//     a ClaimResponse) once the finish is applied, i.e. committed by a
//     quorum with fsync; the bench sees that answer through a gRPC stream
//     interceptor on the Claim stream (the SDK has no hook of its own) and
//     takes the time when RecvMsg returns it. River: the completer
//     (BatchCompleter by default: it writes completions in batches, on a
//     50 ms tick once 100 wait, else every fifth tick) emits a JobCompleted
//     event after its UPDATE of river_job returned, i.e. committed; the
//     bench subscribes to those events (channel large enough that none is
//     dropped) and takes the time when it receives one. (River's
//     finalized_at column is not used: it is the time the handler returned,
//     set before the batch is written.)
//   - push to handler start (pickup): until the handler starts, as the first
//     thing it does. The idle pickup target is p50 under 5 ms, p99
//     under 25 ms.
//
// Workloads, per system:
//
//   - idle: with the workers idle, push one job, wait until a handler has
//     it, pause 5-14 ms, repeat -idle times (after 10 warm-up jobs). The
//     next push does not wait for the completion (see idle);
//   - steady: -rate jobs a second for 10 s, open loop (in batches every
//     10 ms), below every system's capacity: the latencies of a queue that
//     keeps up;
//   - empty: -producers producers push -jobs jobs in batches of -batch while
//     the workers run them; the throughput is -jobs over the time from the
//     first push to the moment every job is completed (counted by the
//     server);
//   - backlog: the same with -backlog jobs waiting in the same queue
//     (scheduled a day ahead, pushed before the measurement). Then the
//     stores' background work settles: Synod waits until no member's LSM
//     has a flush or compaction running (read from their /metrics) for 5 s
//     in a row, at least -settle and at most -settle-max; River waits
//     -settle. (Pebble's compaction debt does not fall to zero when idle:
//     it compacts L0 only once it holds enough sublevels.) With -settle-quiet=false Synod
//     waits -settle only, and the workload measures the aftermath of
//     the push (memtable flushes and compactions of its millions of keys)
//     as much as the backlog.
//
// The latencies of empty and backlog are those of a saturated queue: the
// producers push faster than the workers run, so they are mostly the wait
// behind the jobs pushed before.
//
// For Synod it also reads the queue operations and commands applied by the
// first member (its /metrics) during each workload: the operations per
// command are the claims, completions and pushes (one operation per push
// call, whatever its jobs) that shared one Raft proposal; the jobs per
// command are the workload's jobs over the commands applied meanwhile (each
// job is pushed, claimed and completed).
package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/bench/internal/member"
	"github.com/synod-io/synod/client"
)

var (
	flagJobs      = flag.Int("jobs", 50000, "jobs pushed and worked per throughput workload")
	flagWorkers   = flag.Int("workers", 100, "concurrent handlers")
	flagProducers = flag.Int("producers", 4, "concurrent producers")
	flagBatch     = flag.Int("batch", 100, "jobs per push call")
	flagBacklog   = flag.Int("backlog", 1000000, "jobs waiting in the queue during the backlog workload (0: skip it)")
	flagIdle      = flag.Int("idle", 300, "jobs of the idle workload (one at a time)")
	flagRate      = flag.Int("rate", 500, "jobs per second of the steady workload (0: skip it)")
	flagSettle    = flag.Duration("settle", 20*time.Second, "pause after pushing the backlog (compactions, checkpoints)")
	flagQuiet     = flag.Bool("settle-quiet", true, "after -settle, also wait until Synod's members have no flush or compaction running for 5s")
	flagSettleMax = flag.Duration("settle-max", 10*time.Minute, "longest wait for Synod's members to be quiet")
	flagSystems   = flag.String("systems", "synod,river,river-tuned", "systems to measure (river-tuned: River with -river-cooldown)")
	flagCooldown  = flag.Duration("river-cooldown", 5*time.Millisecond, "FetchCooldown of river-tuned")
	flagPgBin     = flag.String("pg-bin", "/usr/lib/postgresql/15/bin", "PostgreSQL's binaries")
	flagPoolConns = flag.Int("pg-conns", 20, "River's pgx pool size")
)

func main() {
	flag.Parse()
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "queuebench:", err)
		os.Exit(1)
	}
}

// result is one workload on one system.
type result struct {
	system, workload string
	jobs             int
	elapsed          time.Duration
	started          []time.Duration // from push to handler start
	done             []time.Duration // from push to committed completion
	unseen           int             // completions counted by the server but not observed
	opsPerCommand    float64
	jobsPerCommand   float64 // jobs worked per command applied
}

func (r result) perSecond() float64 { return float64(r.jobs) / r.elapsed.Seconds() }

// pct returns the p-quantile of lat.
func pct(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// observer receives a job's events: pushed is the start of its push call,
// at the moment the event was seen (both Unix nanoseconds).
type observer struct {
	// started: the handler started.
	started func(pushed, at int64)
	// completed: the job's completion was committed (see the package
	// comment for what each system reports).
	completed func(pushed, at int64)
}

// system is what a workload needs of a queue system.
type system interface {
	name() string
	// start starts workers on queue that report to obs.
	start(ctx context.Context, queue string, obs observer) (stop func(), err error)
	// push pushes n jobs whose payload is the push's start time, or
	// scheduled a day ahead.
	push(ctx context.Context, queue string, n int, scheduled bool) error
	// completed counts the completed jobs of queue.
	completed(ctx context.Context, queue string) (int64, error)
	// counters returns the operations and commands applied so far (zero
	// when the system has no such notion).
	counters() (ops, cmds float64)
	// settle waits for the background work of a bulk push.
	settle(ctx context.Context) error
}

func run(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "queuebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var systems []system
	var pg *riverSys // the PostgreSQL server the River systems share
	for _, name := range strings.Split(*flagSystems, ",") {
		switch name {
		case "synod":
			s, stop, err := startSynod(ctx, filepath.Join(dir, "synod"))
			if err != nil {
				return fmt.Errorf("start synod: %w", err)
			}
			defer stop()
			systems = append(systems, s)
		case "river", "river-tuned":
			if pg == nil {
				s, stop, err := startRiver(ctx, filepath.Join(dir, "pg"))
				if err != nil {
					return fmt.Errorf("start river: %w", err)
				}
				defer stop()
				pg = s
			}
			s := &riverSys{pool: pg.pool, ins: pg.ins}
			if name == "river-tuned" {
				s.cooldown = *flagCooldown
			}
			systems = append(systems, s)
		default:
			return fmt.Errorf("unknown system %q", name)
		}
	}
	var results []result
	for _, wl := range []string{"idle", "steady", "empty", "backlog"} {
		if wl == "backlog" && *flagBacklog == 0 || wl == "steady" && *flagRate == 0 {
			continue
		}
		for i, s := range systems {
			q := fmt.Sprintf("%s-%d", wl, i)
			fmt.Fprintf(os.Stderr, "%s %s...\n", s.name(), wl)
			var r result
			var err error
			if wl == "idle" {
				r, err = idle(ctx, s, q)
			} else {
				r, err = throughput(ctx, s, wl, q)
			}
			if err != nil {
				return fmt.Errorf("%s %s: %w", s.name(), wl, err)
			}
			fmt.Fprintf(os.Stderr, "  %.0f jobs/s, push to completion p50 %v p99 %v, push to start p50 %v p99 %v, ops/cmd %.1f\n",
				r.perSecond(), pct(r.done, 0.5), pct(r.done, 0.99), pct(r.started, 0.5), pct(r.started, 0.99), r.opsPerCommand)
			if r.unseen > 0 {
				fmt.Fprintf(os.Stderr, "  warning: %d completions counted by the server were not observed; the completion latencies cover the %d observed\n", r.unseen, len(r.done))
			}
			results = append(results, r)
		}
	}
	report(results)
	return nil
}

func payload(t int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(t)) }

// idle measures the latencies of one job at a time with idle workers: the
// next job is pushed 5-14 ms after the handler started the previous one.
// It does not wait for the previous completion: River writes completions
// in batches on a 250 ms tick when few are waiting, and pushing right
// after each of them would put every job at the start of that tick's wait.
func idle(ctx context.Context, s system, q string) (result, error) {
	started := make(chan time.Duration, 1)
	var warm atomic.Int64 // the start of the first measured push
	var mu sync.Mutex
	var done []time.Duration
	stop, err := s.start(ctx, q, observer{
		started: func(pushed, at int64) { started <- time.Duration(at - pushed) },
		completed: func(pushed, at int64) {
			if w := warm.Load(); w != 0 && pushed >= w {
				mu.Lock()
				done = append(done, time.Duration(at-pushed))
				mu.Unlock()
			}
		},
	})
	if err != nil {
		return result{}, err
	}
	defer stop()
	r := result{system: s.name(), workload: "idle", jobs: *flagIdle}
	start := time.Now()
	for i := 0; i < *flagIdle+10; i++ {
		if i == 10 { // the first ones warm up connections
			warm.Store(time.Now().UnixNano())
		}
		if err := s.push(ctx, q, 1, false); err != nil {
			return r, err
		}
		select {
		case d := <-started:
			if i >= 10 {
				r.started = append(r.started, d)
			}
		case <-time.After(30 * time.Second):
			return r, errors.New("a job was not picked up within 30s")
		}
		// Leave the workers idle a moment, as between real pushes.
		time.Sleep(time.Duration(5+i%10) * time.Millisecond)
	}
	r.elapsed = time.Since(start)
	for wait := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		r.done = slices.Clone(done)
		mu.Unlock()
		if len(r.done) >= r.jobs || time.Now().After(wait) {
			break
		}
	}
	r.unseen = max(0, r.jobs-len(r.done))
	return r, nil
}

// throughput pushes and works -jobs jobs end to end.
func throughput(ctx context.Context, s system, wl, q string) (result, error) {
	if wl == "backlog" {
		fmt.Fprintf(os.Stderr, "  pushing %d waiting jobs...\n", *flagBacklog)
		t0 := time.Now()
		const chunk = 5000
		var wg sync.WaitGroup
		errs := make(chan error, *flagProducers)
		var left atomic.Int64
		left.Store(int64(*flagBacklog))
		for range *flagProducers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					n := min(chunk, left.Add(-chunk)+chunk)
					if n <= 0 {
						return
					}
					if err := s.push(ctx, q, int(n), true); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return result{}, fmt.Errorf("push the backlog: %w", err)
		}
		fmt.Fprintf(os.Stderr, "  pushed in %v\n", time.Since(t0).Round(time.Second))
		t1 := time.Now()
		if err := s.settle(ctx); err != nil {
			return result{}, fmt.Errorf("settle after the backlog: %w", err)
		}
		fmt.Fprintf(os.Stderr, "  settled in %v\n", time.Since(t1).Round(time.Second))
	}
	var mu sync.Mutex
	started := make([]time.Duration, 0, *flagJobs)
	done := make([]time.Duration, 0, *flagJobs)
	stop, err := s.start(ctx, q, observer{
		started: func(pushed, at int64) {
			mu.Lock()
			started = append(started, time.Duration(at-pushed))
			mu.Unlock()
		},
		completed: func(pushed, at int64) {
			mu.Lock()
			done = append(done, time.Duration(at-pushed))
			mu.Unlock()
		},
	})
	if err != nil {
		return result{}, err
	}
	defer stop()
	base, err := s.completed(ctx, q)
	if err != nil {
		return result{}, err
	}
	ops0, cmds0 := s.counters()
	start := time.Now()
	var wg sync.WaitGroup
	if wl == "steady" {
		if err := steady(ctx, s, q); err != nil {
			return result{}, err
		}
	}
	errs := make(chan error, *flagProducers)
	var left atomic.Int64
	left.Store(int64(*flagJobs))
	if wl == "steady" {
		left.Store(0) // pushed by steady
	}
	for range *flagProducers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := int64(*flagBatch)
			for {
				n := min(b, left.Add(-b)+b)
				if n <= 0 {
					return
				}
				if err := s.push(ctx, q, int(n), false); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return result{}, err
	}
	want := *flagJobs
	if wl == "steady" {
		want = steadyJobs()
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		n, err := s.completed(ctx, q)
		if err != nil {
			return result{}, err
		}
		if n-base >= int64(want) {
			break
		}
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("%d of %d jobs completed after 10 minutes", n-base, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	r := result{system: s.name(), workload: wl, jobs: want, elapsed: time.Since(start)}
	ops1, cmds1 := s.counters()
	if cmds1 > cmds0 {
		r.opsPerCommand = (ops1 - ops0) / (cmds1 - cmds0)
		r.jobsPerCommand = float64(r.jobs) / (cmds1 - cmds0)
	}
	// The server may count a completion a moment before this process sees
	// it (River: before the completer's event reaches the subscriber).
	for wait := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		seen := len(done)
		mu.Unlock()
		if seen >= r.jobs || time.Now().After(wait) {
			break
		}
	}
	mu.Lock()
	r.started, r.done = slices.Clone(started), slices.Clone(done)
	mu.Unlock()
	r.unseen = max(0, r.jobs-len(r.done))
	return r, nil
}

// steadyJobs is the number of jobs of the steady workload: 10 s of -rate.
func steadyJobs() int { return 10 * *flagRate }

// steady pushes -rate jobs a second for 10 s, open loop: every 10 ms a
// batch of -rate/100 jobs, each push in its own goroutine, so that a slow
// push does not delay the next ones.
func steady(ctx context.Context, s system, q string) error {
	per := max(1, *flagRate/100)
	var wg sync.WaitGroup
	var firstErr error
	var mu sync.Mutex
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for pushed := 0; pushed < steadyJobs(); pushed += per {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.push(ctx, q, per, false); err != nil {
				mu.Lock()
				firstErr = cmp.Or(firstErr, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// synodSys is a 3-node Synod cluster.
type synodSys struct {
	cli     *client.Client
	metrics []string // the members' /metrics URLs, the first member's first

	mu sync.Mutex
	// finished receives, per queue, the IDs of the jobs whose finish its
	// worker's claim stream saw acknowledged without error, and when.
	finished map[string]func(id uint64, at int64)
}

// intercept wraps the Claim streams of the client's connection so that the
// bench sees the answers to the Worker's finishes (the Worker SDK offers no
// hook for them).
func (s *synodSys) intercept(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil || method != queuepb.Queue_Claim_FullMethodName {
		return cs, err
	}
	return &claimStream{ClientStream: cs, s: s}, nil
}

// claimStream is a Claim stream whose acknowledged finishes are reported
// to the queue's synodSys.finished.
type claimStream struct {
	grpc.ClientStream
	s     *synodSys
	queue atomic.Pointer[string] // from the stream's first request
}

func (c *claimStream) SendMsg(m any) error {
	if r, ok := m.(*queuepb.ClaimRequest); ok && r.Queue != "" && c.queue.Load() == nil {
		c.queue.Store(&r.Queue)
	}
	return c.ClientStream.SendMsg(m)
}

func (c *claimStream) RecvMsg(m any) error {
	err := c.ClientStream.RecvMsg(m)
	if r, ok := m.(*queuepb.ClaimResponse); ok && err == nil && len(r.Finished) > 0 {
		at := time.Now().UnixNano()
		var f func(uint64, int64)
		if q := c.queue.Load(); q != nil {
			c.s.mu.Lock()
			f = c.s.finished[*q]
			c.s.mu.Unlock()
		}
		for _, fr := range r.Finished {
			if f != nil && fr.Code == 0 {
				f(fr.Id, at)
			}
		}
	}
	return err
}

func (s *synodSys) name() string { return "Synod (3 nodes)" }

func startSynod(ctx context.Context, dir string) (*synodSys, func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	bin := filepath.Join(dir, "synodmember")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/synod-io/synod/bench/synodmember").CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("build synodmember (run from the bench directory): %w\n%s", err, out)
	}
	addrs, err := freeAddrs(4 * 3)
	if err != nil {
		return nil, nil, err
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	var initial, endpoints []string
	for i := range 3 {
		initial = append(initial, fmt.Sprintf("n%d=%s", i+1, addrs[4*i+1]))
		endpoints = append(endpoints, addrs[4*i])
	}
	var cmds []*exec.Cmd
	stop := func() {
		for _, c := range cmds {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
		for _, c := range cmds {
			_ = c.Wait()
		}
	}
	for i := range 3 {
		a := member.Args{
			Name: fmt.Sprintf("n%d", i+1), DataDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			ClientAddr: addrs[4*i], PeerAddr: addrs[4*i+1], PprofAddr: addrs[4*i+2], MetricsAddr: addrs[4*i+3],
			InitialCluster: strings.Join(initial, ","), PeerSecret: hex.EncodeToString(secret),
		}
		log, err := os.Create(filepath.Join(dir, a.Name+".log"))
		if err != nil {
			stop()
			return nil, nil, err
		}
		c := exec.Command(bin, a.Flags()...)
		c.Stdout, c.Stderr = log, log
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			stop()
			return nil, nil, err
		}
		cmds = append(cmds, c)
	}
	// client.New with a stream interceptor (see intercept).
	s := &synodSys{finished: map[string]func(uint64, int64){}}
	ecli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 30 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainStreamInterceptor(s.intercept)}})
	if err != nil {
		stop()
		return nil, nil, err
	}
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	err = client.WaitReady(dctx, ecli)
	dcancel()
	if err != nil {
		_ = ecli.Close()
		stop()
		return nil, nil, err
	}
	cli := client.FromEtcd(ecli)
	s.cli = cli
	for i := range 3 {
		s.metrics = append(s.metrics, "http://"+addrs[4*i+3]+"/metrics")
	}
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := cli.Queue("probe").Stats(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			stop()
			return nil, nil, fmt.Errorf("cluster not ready: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return s, func() { _ = cli.Close(); stop() }, nil
}

func (s *synodSys) start(ctx context.Context, queue string, obs observer) (func(), error) {
	sess, err := s.cli.NewSession(ctx, client.WithTTL(10))
	if err != nil {
		return nil, err
	}
	// The push times of the jobs handled, until their finish is answered.
	var mu sync.Mutex
	running := map[uint64]int64{}
	s.mu.Lock()
	s.finished[queue] = func(id uint64, at int64) {
		mu.Lock()
		pushed, ok := running[id]
		delete(running, id)
		mu.Unlock()
		if ok {
			obs.completed(pushed, at)
		}
	}
	s.mu.Unlock()
	w := s.cli.Queue(queue).NewWorker(sess, func(ctx context.Context, j *client.Job) ([]byte, error) {
		at := time.Now().UnixNano()
		pushed := int64(binary.BigEndian.Uint64(j.Payload))
		mu.Lock()
		running[j.ID] = pushed
		mu.Unlock()
		obs.started(pushed, at)
		return nil, nil
	}, client.WithConcurrency(*flagWorkers))
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	return func() {
		cancel()
		<-done
		_ = sess.Close(ctx)
		s.mu.Lock()
		delete(s.finished, queue)
		s.mu.Unlock()
	}, nil
}

func (s *synodSys) push(ctx context.Context, queue string, n int, scheduled bool) error {
	specs := make([]client.Spec, n)
	now := time.Now()
	p := payload(now.UnixNano())
	for i := range specs {
		specs[i].Payload = p
		if scheduled {
			specs[i].RunAt = now.Add(24 * time.Hour)
		}
	}
	_, err := s.cli.Queue(queue).PushMany(ctx, specs...)
	return err
}

func (s *synodSys) completed(ctx context.Context, queue string) (int64, error) {
	st, err := s.cli.Queue(queue).Stats(ctx)
	if err != nil {
		return 0, err
	}
	return st.Completed, nil
}

func (s *synodSys) counters() (ops, cmds float64) {
	m, err := scrape(s.metrics[0])
	if err != nil {
		return 0, 0
	}
	return m["synod_queue_operations_applied_total"], m["synod_queue_commands_applied_total"]
}

// scrape reads the unlabelled samples of a /metrics page.
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		out[f[0]] = v
	}
	return out, sc.Err()
}

// settle waits -settle, then (with -settle-quiet) until no member has a
// flush or compaction running, 5 s in a row.
func (s *synodSys) settle(ctx context.Context) error {
	time.Sleep(*flagSettle)
	if !*flagQuiet {
		return nil
	}
	deadline := time.Now().Add(*flagSettleMax - *flagSettle)
	var quietSince time.Time
	for {
		busy := ""
		for i, u := range s.metrics {
			m, err := scrape(u)
			if err != nil {
				return err
			}
			if _, ok := m["synod_storage_compactions_in_progress"]; !ok {
				return fmt.Errorf("member %d exports no synod_storage_compactions_in_progress", i+1)
			}
			for _, k := range []string{"synod_storage_compactions_in_progress", "synod_storage_flushes_in_progress"} {
				if m[k] > 0 {
					busy = fmt.Sprintf("member %d: %s %v", i+1, k, m[k])
				}
			}
		}
		now := time.Now()
		switch {
		case busy != "":
			quietSince = time.Time{}
		case quietSince.IsZero():
			quietSince = now
		case now.Sub(quietSince) >= 5*time.Second:
			return nil
		}
		if now.After(deadline) {
			return fmt.Errorf("not quiet after %v: %s", *flagSettleMax, busy)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// riverSys is River on one PostgreSQL server.
type riverSys struct {
	// cooldown, when set, replaces River's FetchCooldown (100ms by
	// default, which caps a client at MaxWorkers jobs per 100ms), and
	// FetchPollInterval becomes 10x it.
	cooldown time.Duration
	pool     *pgxpool.Pool
	ins      *river.Client[pgx.Tx]
}

func (r *riverSys) name() string {
	if r.cooldown > 0 {
		return fmt.Sprintf("River (PostgreSQL, FetchCooldown %v)", r.cooldown)
	}
	return "River (PostgreSQL, defaults)"
}

type noopArgs struct {
	T int64 `json:"t"`
}

func (noopArgs) Kind() string { return "noop" }

type noopWorker struct {
	river.WorkerDefaults[noopArgs]
	obs observer
}

func (w *noopWorker) Work(ctx context.Context, j *river.Job[noopArgs]) error {
	w.obs.started(j.Args.T, time.Now().UnixNano())
	return nil
}

func startRiver(ctx context.Context, dir string) (*riverSys, func(), error) {
	pg, err := user.Lookup("postgres")
	if err != nil {
		return nil, nil, fmt.Errorf("the postgres user (apt-get install postgresql): %w", err)
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	if err := os.Chown(filepath.Dir(dir), uid, gid); err != nil {
		return nil, nil, err
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, nil, err
	}
	asPG := func(name string, args ...string) *exec.Cmd {
		c := exec.CommandContext(ctx, filepath.Join(*flagPgBin, name), args...)
		if os.Geteuid() == 0 {
			c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		}
		return c
	}
	data := filepath.Join(dir, "data")
	if out, err := asPG("initdb", "-D", data, "-U", "postgres", "-A", "trust").CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	addrs, err := freeAddrs(1)
	if err != nil {
		return nil, nil, err
	}
	_, port, _ := net.SplitHostPort(addrs[0])
	opts := fmt.Sprintf("-p %s -k %s -c listen_addresses=127.0.0.1 -c max_connections=200", port, dir)
	if out, err := asPG("pg_ctl", "-D", data, "-l", filepath.Join(dir, "log"), "-o", opts, "-w", "start").CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("pg_ctl start: %w\n%s", err, out)
	}
	pgStop := func() { _ = asPG("pg_ctl", "-D", data, "-m", "fast", "-w", "stop").Run() }
	pool, err := pgxpool.New(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%s/postgres?pool_max_conns=%d", port, *flagPoolConns))
	if err != nil {
		pgStop()
		return nil, nil, err
	}
	m, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err == nil {
		_, err = m.Migrate(ctx, rivermigrate.DirectionUp, nil)
	}
	if err != nil {
		pool.Close()
		pgStop()
		return nil, nil, fmt.Errorf("migrate river: %w", err)
	}
	// An insert-only client (no queues, no workers), as a producer has.
	ins, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	if err != nil {
		pool.Close()
		pgStop()
		return nil, nil, err
	}
	r := &riverSys{pool: pool, ins: ins}
	return r, func() { pool.Close(); pgStop() }, nil
}

func (r *riverSys) start(ctx context.Context, queue string, obs observer) (func(), error) {
	workers := river.NewWorkers()
	river.AddWorker(workers, &noopWorker{obs: obs})
	c, err := river.NewClient(riverpgxv5.New(r.pool), &river.Config{
		Queues:            map[string]river.QueueConfig{queue: {MaxWorkers: *flagWorkers}},
		Workers:           workers,
		FetchCooldown:     r.cooldown,
		FetchPollInterval: 10 * r.cooldown,
	})
	if err != nil {
		return nil, err
	}
	// JobCompleted events come after the completer's UPDATE returned. River
	// drops the events that do not fit in the channel: make room for every
	// job of a workload.
	events, unsubscribe := c.SubscribeConfig(&river.SubscribeConfig{
		Kinds:    []river.EventKind{river.EventKindJobCompleted},
		ChanSize: 2*max(*flagJobs, steadyJobs(), *flagIdle) + 1000,
	})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for ev := range events {
			at := time.Now().UnixNano()
			var a noopArgs
			if ev.Job.Kind != a.Kind() || json.Unmarshal(ev.Job.EncodedArgs, &a) != nil {
				continue
			}
			obs.completed(a.T, at)
		}
	}()
	if err := c.Start(ctx); err != nil {
		unsubscribe()
		return nil, err
	}
	return func() {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_ = c.Stop(sctx)
		unsubscribe() // closes events unless Stop did
		<-drained
	}, nil
}

func (r *riverSys) push(ctx context.Context, queue string, n int, scheduled bool) error {
	now := time.Now()
	params := make([]river.InsertManyParams, n)
	for i := range params {
		params[i] = river.InsertManyParams{Args: noopArgs{T: now.UnixNano()}, InsertOpts: &river.InsertOpts{Queue: queue}}
		if scheduled {
			params[i].InsertOpts.ScheduledAt = now.Add(24 * time.Hour)
		}
	}
	if n == 1 {
		_, err := r.ins.Insert(ctx, params[0].Args, params[0].InsertOpts)
		return err
	}
	if scheduled {
		_, err := r.ins.InsertManyFast(ctx, params)
		return err
	}
	_, err := r.ins.InsertMany(ctx, params)
	return err
}

func (r *riverSys) completed(ctx context.Context, queue string) (int64, error) {
	var n int64
	err := r.pool.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE queue = $1 AND state = 'completed'", queue).Scan(&n)
	return n, err
}

func (r *riverSys) counters() (float64, float64) { return 0, 0 }

func (r *riverSys) settle(context.Context) error {
	time.Sleep(*flagSettle)
	return nil
}

func freeAddrs(n int) ([]string, error) {
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

func report(rs []result) {
	host, _ := os.Hostname()
	model := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	fmt.Printf("Machine: %s, %d CPUs (%s), %s/%s, %s. Command: `cd bench && go run ./queuebench %s`.\n\n",
		host, runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH, runtime.Version(), strings.Join(os.Args[1:], " "))
	fmt.Println("| workload | system | jobs | jobs/s | push to completion p50 | p99 | push to handler start p50 | p99 | queue ops per Raft command | jobs per Raft command |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rs {
		rate := fmt.Sprintf("%.0f", r.perSecond())
		if r.workload == "idle" {
			rate = "-"
		}
		opc, jpc := "-", "-"
		if r.opsPerCommand > 0 {
			opc = fmt.Sprintf("%.1f", r.opsPerCommand)
			jpc = fmt.Sprintf("%.1f", r.jobsPerCommand)
		}
		round := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
		fmt.Printf("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", r.workload, r.system, r.jobs, rate,
			round(pct(r.done, 0.5)), round(pct(r.done, 0.99)), round(pct(r.started, 0.5)), round(pct(r.started, 0.99)), opc, jpc)
	}
	for _, r := range rs {
		if r.unseen > 0 {
			fmt.Printf("\n%s, %s: %d completions not observed; its completion latencies cover the %d observed.\n", r.workload, r.system, r.unseen, len(r.done))
		}
	}
}
