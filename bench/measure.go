package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// recorder collects latencies of operations that start and end inside the
// measurement window, from many goroutines.
type recorder struct {
	base    time.Time
	startNs atomic.Int64 // offset from base where the window opened; 0: not yet
	endNs   atomic.Int64 // offset from base where it closed; 0: still open

	mu      sync.Mutex
	workers []*workerRec
	// writes counts successful writing operations over the whole run,
	// warmup included: they all leave keys on disk.
	writes atomic.Int64
}

// workerRec is one goroutine's share of a recorder; only it appends.
type workerRec struct {
	lat    []time.Duration
	errors int64
	first  error
}

func newRecorder() *recorder { return &recorder{base: time.Now()} }

// worker returns a new per-goroutine record.
func (r *recorder) worker() *workerRec {
	w := &workerRec{lat: make([]time.Duration, 0, 1024)}
	r.mu.Lock()
	r.workers = append(r.workers, w)
	r.mu.Unlock()
	return w
}

// now is the monotonic offset from the recorder's base.
func (r *recorder) now() int64 { return int64(time.Since(r.base)) }

// inWindow reports whether an operation from start to end (offsets) counts.
func (r *recorder) inWindow(start, end int64) bool {
	s := r.startNs.Load()
	if s == 0 || start < s {
		return false
	}
	e := r.endNs.Load()
	return e == 0 || end <= e
}

// done records one operation. Errors count only inside the window (the ones
// after it are cancellations by the harness).
func (r *recorder) done(w *workerRec, start, end int64, err error) {
	if !r.inWindow(start, end) {
		return
	}
	if err != nil {
		w.errors++
		if w.first == nil {
			w.first = err
		}
		return
	}
	w.lat = append(w.lat, time.Duration(end-start))
}

// result is one workload's measurement on one system.
type result struct {
	na        string // why the workload could not run; empty when it ran
	ops       int64
	errors    int64
	firstErr  error
	window    time.Duration
	lat       []time.Duration // sorted
	serverCPU time.Duration
	clientCPU time.Duration
	peakRSS   uint64 // sum of members' peaks, bytes
	diskDelta int64  // mean growth of a member's data dir, bytes
	keys      int64  // keys written during the run (warmup included)
	// oracle is the increase of the revision oracle's counters over the
	// window, summed over the members (oracle.go); nil when not read.
	oracle oracleCounters
}

func (r *result) throughput() float64 {
	if r.window <= 0 {
		return 0
	}
	return float64(r.ops) / r.window.Seconds()
}

func (r *result) percentile(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(float64(len(r.lat))*p/100+0.5) - 1
	return r.lat[min(max(i, 0), len(r.lat)-1)]
}

// cpuPerKOps is server CPU seconds per 1,000 operations.
func (r *result) cpuPerKOps() float64 {
	if r.ops == 0 {
		return 0
	}
	return r.serverCPU.Seconds() * 1000 / float64(r.ops)
}

func (r *result) clientCPUPerKOps() float64 {
	if r.ops == 0 {
		return 0
	}
	return r.clientCPU.Seconds() * 1000 / float64(r.ops)
}

// bytesPerKey is the disk growth per key written, or 0 when nothing was.
func (r *result) bytesPerKey() float64 {
	if r.keys == 0 {
		return 0
	}
	return float64(r.diskDelta) / float64(r.keys)
}

// errNotImplemented marks a workload the system does not serve yet.
var errNotImplemented = errors.New("not implemented yet")

// notImplemented reports whether err says the server lacks the service.
func notImplemented(err error) bool {
	if errors.Is(err, errNotImplemented) {
		return true
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if s, ok := status.FromError(e); ok && s.Code() == codes.Unimplemented {
			return true
		}
	}
	return status.Code(err) == codes.Unimplemented
}

// window runs the measurement of one workload instance on a cluster: it
// starts the instance, waits for the warmup, measures for the duration and
// stops the instance.
type window struct {
	cluster  *cluster
	warmup   time.Duration
	duration time.Duration
	// during, if set, runs concurrently with the measured window (profiling).
	during func(ctx context.Context, d time.Duration)
	// started and ended, if set, are called as the window opens and closes.
	started, ended func()
}

func (w window) measure(ctx context.Context, inst *instance, keysPerOp int) (*result, error) {
	rec := newRecorder()
	diskBefore, err := w.cluster.diskUsage()
	if err != nil {
		return nil, err
	}
	runCtx, stopRun := context.WithCancel(ctx)
	run := &runState{done: make(chan struct{})}
	go func() {
		run.err = inst.run(runCtx, rec)
		close(run.done)
	}()
	stop := func() error {
		stopRun()
		<-run.done
		return run.err
	}
	defer func() { _ = stop() }()

	if err := sleep(ctx, w.warmup, run); err != nil {
		return nil, fmt.Errorf("warmup: %w", err)
	}
	if err := w.cluster.resetPeakRSS(); err != nil {
		return nil, err
	}
	oracleBefore := readOracle(ctx, w.cluster)
	before, err := w.cluster.stats()
	if err != nil {
		return nil, err
	}
	clientBefore := selfCPU()
	rec.startNs.Store(rec.now())
	if w.started != nil {
		w.started()
	}
	var profWG sync.WaitGroup
	if w.during != nil {
		profWG.Add(1)
		go func() {
			defer profWG.Done()
			w.during(ctx, w.duration)
		}()
	}
	measureErr := sleep(ctx, w.duration, run)
	rec.endNs.Store(rec.now())
	if w.ended != nil {
		w.ended()
	}
	after, err := w.cluster.stats()
	if err != nil {
		return nil, err
	}
	clientAfter := selfCPU()
	oracleAfter := readOracle(ctx, w.cluster)
	peak, err := w.cluster.peakRSS()
	if err != nil {
		return nil, err
	}
	profWG.Wait()
	if measureErr != nil {
		return nil, fmt.Errorf("measure: %w", measureErr)
	}
	if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
		return nil, err
	}
	if err := w.cluster.checkAlive(); err != nil {
		return nil, err
	}
	diskAfter, err := w.cluster.diskUsage()
	if err != nil {
		return nil, err
	}

	res := &result{
		window:    time.Duration(rec.endNs.Load() - rec.startNs.Load()),
		serverCPU: after.cpu - before.cpu,
		clientCPU: clientAfter - clientBefore,
		peakRSS:   peak,
		diskDelta: diskAfter - diskBefore,
		keys:      rec.writes.Load() * int64(keysPerOp),
		oracle:    oracleAfter.since(oracleBefore),
	}
	for _, wr := range rec.workers {
		res.ops += int64(len(wr.lat))
		res.errors += wr.errors
		if res.firstErr == nil {
			res.firstErr = wr.first
		}
		res.lat = append(res.lat, wr.lat...)
	}
	slices.Sort(res.lat)
	return res, nil
}

// runState is the outcome of an instance's run; err is set before done is
// closed.
type runState struct {
	done chan struct{}
	err  error
}

// sleep waits for d, failing early if ctx ends or the run ends on its own
// (which means it failed).
func sleep(ctx context.Context, d time.Duration, run *runState) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-run.done:
		if run.err == nil {
			return errors.New("workload stopped before the window ended")
		}
		return run.err
	}
}

// selfCPU is the user+system time of this (the load generator's) process.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
