package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/internal/lincheck"
)

// watchPrefix is the range the watchers watch: every key of the workload.
const watchPrefix = "k"

// watcher watches the workload's keys through one node for the whole run,
// through faults and restarts.
type watcher struct {
	cli   *clientv3.Client
	mu    sync.Mutex
	seen  lincheck.Watcher
	last  int64
	fails []string
}

func newWatcher(name string, cli *clientv3.Client, start int64) *watcher {
	return &watcher{cli: cli, seen: lincheck.Watcher{Name: name, Start: start}}
}

// run watches until ctx ends. If the watch channel closes (clientv3 itself
// resumes after a broken stream), it watches again from the revision after
// the last event.
func (w *watcher) run(ctx context.Context) {
	next := w.seen.Start
	for ctx.Err() == nil {
		for resp := range w.cli.Watch(ctx, watchPrefix, clientv3.WithPrefix(), clientv3.WithRev(next), clientv3.WithPrevKV()) {
			if err := resp.Err(); err != nil {
				w.mu.Lock()
				if len(w.fails) < 5 {
					w.fails = append(w.fails, fmt.Sprintf("watcher %s: %v", w.seen.Name, err))
				}
				w.mu.Unlock()
				break
			}
			w.mu.Lock()
			for _, ev := range resp.Events {
				e := watchEvent(ev)
				w.seen.Events = append(w.seen.Events, e)
				w.last = max(w.last, e.Revision)
				next = e.Revision + 1
			}
			w.mu.Unlock()
		}
		if ctx.Err() != nil {
			return
		}
		w.mu.Lock()
		w.seen.Restarts++
		w.mu.Unlock()
		sleep(ctx, 50*time.Millisecond) // back off before watching again
	}
}

func (w *watcher) lastRevision() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

func (w *watcher) result() (lincheck.Watcher, []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := w.seen
	seen.Events = append([]lincheck.WatchEvent(nil), w.seen.Events...)
	return seen, append([]string(nil), w.fails...)
}

// watchEvent records an event of a watch with prev_kv.
func watchEvent(ev *clientv3.Event) lincheck.WatchEvent {
	e := lincheck.WatchEvent{Revision: ev.Kv.ModRevision, Key: string(ev.Kv.Key), Delete: ev.Type == mvccpb.DELETE}
	if !e.Delete {
		e.Value = string(ev.Kv.Value)
	}
	if p := ev.PrevKv; p != nil {
		e.PrevRevision, e.PrevValue = p.ModRevision, string(p.Value)
	}
	return e
}

// eventLog reads every event of the watched range from revision 1 through
// until, with a fresh watch on the given endpoint.
func eventLog(ctx context.Context, endpoint string, until int64) ([]lincheck.WatchEvent, error) {
	cli, err := newClient(endpoint)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var log []lincheck.WatchEvent
	for resp := range cli.Watch(ctx, watchPrefix, clientv3.WithPrefix(), clientv3.WithRev(1), clientv3.WithPrevKV()) {
		if err := resp.Err(); err != nil {
			return log, fmt.Errorf("read the event log: %w", err)
		}
		for _, ev := range resp.Events {
			e := watchEvent(ev)
			log = append(log, e)
			if e.Revision >= until {
				return log, nil
			}
		}
	}
	return log, fmt.Errorf("read the event log up to revision %d: %w", until, ctx.Err())
}

// leaseWorker grants leases, attaches a key to each, renews some of them a
// few times, reads the key, and then abandons the lease.
type leaseWorker struct {
	id     int
	cli    *clientv3.Client
	rng    *rand.Rand
	rec    *lincheck.Recorder
	leases []lincheck.Lease
}

const leaseTTL = 2 // seconds

func (lw *leaseWorker) run(ctx context.Context) {
	op := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, opTimeout) }
	for n := 0; ctx.Err() == nil; n++ {
		renewals := lw.rng.IntN(4)
		call := lw.rec.Now()
		octx, cancel := op()
		g, err := lw.cli.Grant(octx, leaseTTL)
		cancel()
		if err != nil {
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		l := lincheck.Lease{ID: int64(g.ID), Key: fmt.Sprintf("lease/%d-%d", lw.id, n), AliveUntil: call + g.TTL*int64(time.Second)}
		octx, cancel = op()
		_, err = lw.cli.Put(octx, l.Key, "held", clientv3.WithLease(g.ID))
		cancel()
		if err == nil {
			l.Attached = lw.rec.Now()
		}
		for i := 0; i < renewals+3 && ctx.Err() == nil; i++ {
			sleep(ctx, time.Duration(300+lw.rng.IntN(400))*time.Millisecond)
			if i < renewals {
				call := lw.rec.Now()
				octx, cancel := op()
				ka, err := lw.cli.KeepAliveOnce(octx, g.ID)
				cancel()
				if err == nil && ka.TTL > 0 {
					l.AliveUntil = max(l.AliveUntil, call+ka.TTL*int64(time.Second))
				}
			}
			call := lw.rec.Now()
			octx, cancel := op()
			resp, err := lw.cli.Get(octx, l.Key)
			cancel()
			if err == nil {
				l.Reads = append(l.Reads, lincheck.LeaseRead{Call: call, Return: lw.rec.Now(), Exists: len(resp.Kvs) > 0})
			}
		}
		lw.leases = append(lw.leases, l)
	}
}

// leaseKeysGone waits until no key of an abandoned lease is left: every
// lease expires once nobody renews it.
func leaseKeysGone(ctx context.Context, endpoint string) error {
	cli, err := newClient(endpoint)
	if err != nil {
		return err
	}
	defer cli.Close()
	// After a restart the leader gives every lease its full TTL again.
	ctx, cancel := context.WithTimeout(ctx, 10*leaseTTL*time.Second)
	defer cancel()
	var left []string
	for {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		resp, err := cli.Get(rctx, "lease/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		rcancel()
		if err == nil {
			if len(resp.Kvs) == 0 {
				return nil
			}
			left = left[:0]
			for _, kv := range resp.Kvs {
				left = append(left, string(kv.Key))
			}
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return fmt.Errorf("keys of abandoned leases still there after %ds: %v", 10*leaseTTL, left)
		}
	}
}
