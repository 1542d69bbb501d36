package machine

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/synod-io/synod/api/queuepb"
)

// BenchmarkBacklogHeap measures what a backlog of 1,000,000 jobs scheduled
// a day ahead costs a replica's Go heap, as bench/queuebench's backlog
// workload pushes it (calls of 5,000 jobs, one command each):
//
//	go test -run '^$' -bench BacklogHeap -benchtime 1x ./internal/queue/machine
//
// It reports the live heap (objects and MB after a collection) of the
// whole process (the machine, the store's in-memory files and key index)
// and the machine's own share (the difference once its state is dropped),
// and how long a forced collection takes with the backlog in the heap:
// the garbage collector marks every live object, so that time is what
// the backlog adds to each of the collector's cycles.
func BenchmarkBacklogHeap(b *testing.B) {
	const (
		backlog = 1_000_000
		chunk   = 5000
	)
	for range b.N {
		r := newRep(b)
		now := int64(1_800_000_000_000)
		spec := &queuepb.JobSpec{Payload: []byte("0123456789abcdef"), RunAtMs: now + 24*60*60*1000}
		specs := make([]*queuepb.JobSpec, chunk)
		for i := range specs {
			specs[i] = spec
		}
		for n := 0; n < backlog; n += chunk {
			now++
			r.pushIDs(now, "q", specs...)
		}
		if s := r.ext.Stats("q", now); s.Scheduled != backlog {
			b.Fatalf("scheduled: got %d, want %d", s.Scheduled, backlog)
		}
		// All of the store in its last level, so that no compaction
		// frees memory between two readings.
		if err := r.db.Flush(); err != nil {
			b.Fatal(err)
		}
		if err := r.db.Compact(context.Background(), []byte{0}, []byte{0xff}, false); err != nil {
			b.Fatal(err)
		}
		objs, bytes, gc := heapNow()
		r.ext.mu.Lock()
		r.ext.resetLocked()
		r.ext.mu.Unlock()
		objs0, bytes0, _ := heapNow()
		b.ReportMetric(float64(objs), "heap-objects")
		b.ReportMetric(float64(bytes)/(1<<20), "heap-MB")
		b.ReportMetric(float64(objs-objs0), "machine-objects")
		b.ReportMetric(float64(bytes-bytes0)/(1<<20), "machine-MB")
		b.ReportMetric(float64(gc.Microseconds())/1000, "gc-ms")
		// The same from the store, as a restarted replica holds it.
		f := &rep{t: b, db: r.db, st: r.st, index: r.index}
		t0 := time.Now()
		f.reload()
		b.ReportMetric(time.Since(t0).Seconds(), "reload-s")
		objs, bytes, gc = heapNow()
		if s := f.ext.Stats("q", now); s.Scheduled != backlog {
			b.Fatalf("scheduled after a restart: got %d, want %d", s.Scheduled, backlog)
		}
		f.ext.mu.Lock()
		f.ext.resetLocked()
		f.ext.mu.Unlock()
		objs0, bytes0, _ = heapNow()
		b.ReportMetric(float64(objs-objs0), "loaded-machine-objects")
		b.ReportMetric(float64(bytes-bytes0)/(1<<20), "loaded-machine-MB")
		b.ReportMetric(float64(gc.Microseconds())/1000, "loaded-gc-ms")
		// Both replicas' stores and key indexes are live throughout: only
		// the machines' state is dropped between two readings.
		runtime.KeepAlive(r)
		runtime.KeepAlive(f)
	}
}

// heapNow collects garbage and returns the live heap's objects and bytes,
// and how long the best of three forced collections took.
func heapNow() (objects, bytes uint64, gc time.Duration) {
	for i := range 3 {
		t0 := time.Now()
		runtime.GC()
		if d := time.Since(t0); i == 0 || d < gc {
			gc = d
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapObjects, ms.HeapAlloc, gc
}
