package main

import (
	"context"
	"fmt"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// env is what workloads run against: one cluster and its connections.
type env struct {
	opts    *options
	cluster *cluster
	// conns are -conns clients; connection i goes to member i%3, as etcd's
	// benchmark tool spreads its connections.
	conns []*clientv3.Client
	// leader is one connection to the member that led when the run began.
	leader *clientv3.Client
	value  []byte
	// preloaded is set once the keys of the get workloads are written.
	preloaded bool
	// extraKeys counts keys written outside measured write workloads
	// (preloading, watched puts).
	extraKeys atomic.Int64
}

func (e *env) conn(i int) *clientv3.Client { return e.conns[i%len(e.conns)] }

// instance is a workload prepared on one cluster.
type instance struct {
	// run drives the load until ctx ends, recording into rec. It returns
	// nil when stopped by ctx, or the error that stopped it.
	run func(ctx context.Context, rec *recorder) error
	// close releases what the setup created.
	close func()
}

// workload is one row of the results table.
type workload struct {
	name  string
	title string
	// keysPerOp is the number of new keys one operation writes (0: not a
	// write workload).
	keysPerOp int
	setup     func(ctx context.Context, e *env) (*instance, error)
}

func workloads() []workload {
	return []workload{
		{name: "put-1", title: "put, 1 client", keysPerOp: 1, setup: setupPut1},
		{name: "put-1000", title: "put, 1,000 clients", keysPerOp: 1, setup: setupPutMany},
		{name: "get-linearizable", title: "get, linearizable", setup: setupGet(false)},
		{name: "get-serializable", title: "get, serializable", setup: setupGet(true)},
		{name: "txn-4-puts", title: "txn of 4 puts", keysPerOp: 4, setup: setupTxn},
		{name: "txn-2-keys", title: "txn of 2 puts, one range", keysPerOp: 2, setup: setupTxn2Keys},
		{name: "txn-2-ranges", title: "txn of 2 puts, 2 ranges", keysPerOp: 2, setup: setupTxn2Ranges},
		{name: "watch", title: "watch latency", setup: setupWatch},
		{name: "lease-keepalive", title: "lease keepalive", setup: setupLeaseKeepAlive},
		{name: "lock", title: "lock under contention", setup: setupLock},
		{name: "lock-rpc", title: "lock service under contention", setup: setupLockRPC},
		{name: "election", title: "election under contention", setup: setupElection},
	}
}

// opFunc is one operation of a closed-loop worker; wrote reports a successful
// write.
type opFunc func(ctx context.Context, worker int, rng *rand.Rand) (wrote bool, err error)

// closedLoop runs workers that each issue op back to back. The run stops with
// an error at once if the server does not implement op.
func closedLoop(workers int, op opFunc) *instance {
	return &instance{
		run: func(ctx context.Context, rec *recorder) error {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			var fatal atomic.Pointer[error]
			var wg sync.WaitGroup
			for i := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					w := rec.worker()
					rng := rand.New(rand.NewPCG(uint64(i), 7))
					for ctx.Err() == nil {
						start := rec.now()
						wrote, err := op(ctx, i, rng)
						rec.done(w, start, rec.now(), err)
						if wrote && err == nil {
							rec.writes.Add(1)
						}
						if err != nil && ctx.Err() == nil {
							if notImplemented(err) {
								fatal.CompareAndSwap(nil, &err)
								cancel()
								return
							}
							// Do not spin on a failing server.
							select {
							case <-ctx.Done():
							case <-time.After(10 * time.Millisecond):
							}
						}
					}
				}()
			}
			wg.Wait()
			if err := fatal.Load(); err != nil {
				return *err
			}
			return nil
		},
		close: func() {},
	}
}

// putKey is the key of the seq-th write of a workload, in the shard of seq
// (ranges.go).
func putKey(prefix string, seq int64) string {
	return shardKey(shardOf(seq), seqName(prefix, seq))
}

func setupPut1(_ context.Context, e *env) (*instance, error) {
	var seq atomic.Int64
	return closedLoop(1, func(ctx context.Context, _ int, _ *rand.Rand) (bool, error) {
		_, err := e.leader.Put(ctx, putKey("put-1/", seq.Add(1)), string(e.value))
		return true, err
	}), nil
}

func setupPutMany(_ context.Context, e *env) (*instance, error) {
	var seq atomic.Int64
	return closedLoop(e.opts.clients, func(ctx context.Context, w int, _ *rand.Rand) (bool, error) {
		_, err := e.conn(w).Put(ctx, putKey("put-many/", seq.Add(1)), string(e.value))
		return true, err
	}), nil
}

// getKey is the key of the i-th preloaded key, in shard i mod shards.
func getKey(i int) string { return shardKey(i%shards, fmt.Sprintf("get/%06d", i)) }

// preload writes the keys the get workloads read, up to 100 per txn, the
// keys of a txn all in one shard (so in one data range).
func (e *env) preload(ctx context.Context) error {
	if e.preloaded {
		return nil
	}
	const perTxn = 100
	n := e.opts.getKeys
	// batches[j] are the indexes of the keys txn j writes.
	var batches [][]int
	for s := range shards {
		var batch []int
		for i := s; i < n; i += shards {
			batch = append(batch, i)
			if len(batch) == perTxn {
				batches = append(batches, batch)
				batch = nil
			}
		}
		if len(batch) > 0 {
			batches = append(batches, batch)
		}
	}
	err := parallel(ctx, len(batches), 16, func(ctx context.Context, j int) error {
		var ops []clientv3.Op
		for _, i := range batches[j] {
			ops = append(ops, clientv3.OpPut(getKey(i), string(e.value)))
		}
		if _, err := e.conn(j).Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("preload keys for gets: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	e.extraKeys.Add(int64(n))
	e.preloaded = true
	return nil
}

func setupGet(serializable bool) func(ctx context.Context, e *env) (*instance, error) {
	return func(ctx context.Context, e *env) (*instance, error) {
		if err := e.preload(ctx); err != nil {
			return nil, err
		}
		var opts []clientv3.OpOption
		if serializable {
			opts = append(opts, clientv3.WithSerializable())
		}
		n := e.opts.getKeys
		return closedLoop(e.opts.clients, func(ctx context.Context, w int, rng *rand.Rand) (bool, error) {
			key := getKey(rng.IntN(n))
			resp, err := e.conn(w).Get(ctx, key, opts...)
			if err == nil && len(resp.Kvs) != 1 {
				err = fmt.Errorf("get %s: %d keys", key, len(resp.Kvs))
			}
			return false, err
		}), nil
	}
}

func setupTxn(_ context.Context, e *env) (*instance, error) {
	var seq atomic.Int64
	return closedLoop(e.opts.clients, func(ctx context.Context, w int, _ *rand.Rand) (bool, error) {
		base := putKey("txn/", seq.Add(1)) + "/"
		_, err := e.conn(w).Txn(ctx).Then(
			clientv3.OpPut(base+"0", string(e.value)),
			clientv3.OpPut(base+"1", string(e.value)),
			clientv3.OpPut(base+"2", string(e.value)),
			clientv3.OpPut(base+"3", string(e.value)),
		).Commit()
		return true, err
	}), nil
}

// setupTxn2Keys runs transactions of two puts of new keys in one shard, so
// in one data range: Synod's single-range fast path on a split store.
func setupTxn2Keys(_ context.Context, e *env) (*instance, error) {
	var seq atomic.Int64
	return closedLoop(e.opts.clients, func(ctx context.Context, w int, _ *rand.Rand) (bool, error) {
		base := putKey("txn-2-keys/", seq.Add(1)) + "/"
		_, err := e.conn(w).Txn(ctx).Then(
			clientv3.OpPut(base+"0", string(e.value)),
			clientv3.OpPut(base+"1", string(e.value)),
		).Commit()
		return true, err
	}), nil
}

// setupTxn2Ranges runs transactions of two puts of new keys in two different
// data ranges of -data-ranges (crossRangeShards): on Synod a transaction
// across ranges (a two-phase commit). With one range, or on etcd, it is an
// ordinary txn of two puts: the baseline.
func setupTxn2Ranges(_ context.Context, e *env) (*instance, error) {
	var seq atomic.Int64
	n := e.opts.dataRanges
	return closedLoop(e.opts.clients, func(ctx context.Context, w int, _ *rand.Rand) (bool, error) {
		s := seq.Add(1)
		a, b := crossRangeShards(s, n)
		name := seqName("txn-2-ranges/", s)
		_, err := e.conn(w).Txn(ctx).Then(
			clientv3.OpPut(shardKey(a, name+"/0"), string(e.value)),
			clientv3.OpPut(shardKey(b, name+"/1"), string(e.value)),
		).Commit()
		return true, err
	}), nil
}

// setupWatch opens the watchers and waits until the server confirmed each.
func setupWatch(ctx context.Context, e *env) (*instance, error) {
	const prefix = "watch/"
	wctx, cancelWatches := context.WithCancel(context.Background())
	chans := make([]clientv3.WatchChan, e.opts.watchers)
	for i := range chans {
		chans[i] = e.conn(i).Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	}
	fail := func(err error) (*instance, error) {
		cancelWatches()
		for _, ch := range chans {
			for range ch { // drain until the client closes it
			}
		}
		return nil, err
	}
	for i, ch := range chans {
		select {
		case resp, ok := <-ch:
			if !ok {
				return fail(fmt.Errorf("watcher %d closed before it was created", i))
			}
			if err := resp.Err(); err != nil {
				return fail(fmt.Errorf("create watcher %d: %w", i, err))
			}
			if !resp.Created {
				return fail(fmt.Errorf("watcher %d: first response is not the creation", i))
			}
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(30 * time.Second):
			return fail(fmt.Errorf("watcher %d not created after 30s", i))
		}
	}
	rate := e.opts.watchPutRate
	// starts[i] is the offset at which put i began; the capacity covers the
	// longest run (warmup, window and a margin) at the put rate.
	maxPuts := int((e.opts.warmup+e.opts.duration+time.Minute).Seconds()*rate) + 1
	starts := make([]atomic.Int64, maxPuts)

	inst := &instance{close: cancelWatches}
	inst.run = func(ctx context.Context, rec *recorder) error {
		var wg sync.WaitGroup
		for _, ch := range chans {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w := rec.worker()
				for resp := range ch {
					now := rec.now()
					if err := resp.Err(); err != nil {
						rec.done(w, now, now, err)
						continue
					}
					for _, ev := range resp.Events {
						i, err := strconv.Atoi(string(ev.Kv.Key[len(prefix):]))
						if err != nil || i >= len(starts) {
							rec.done(w, now, now, fmt.Errorf("unexpected watch event on %q", ev.Kv.Key))
							continue
						}
						rec.done(w, starts[i].Load(), now, nil)
					}
				}
			}()
		}
		putErr := e.putAtRate(ctx, prefix, rate, starts, rec)
		cancelWatches() // closes the channels: the watchers return
		wg.Wait()
		return putErr
	}
	return inst, nil
}

// putAtRate writes prefix+i at the given rate per second until ctx ends,
// noting in starts[i] when put i began.
func (e *env) putAtRate(ctx context.Context, prefix string, rate float64, starts []atomic.Int64, rec *recorder) error {
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	for i := 0; i < len(starts); i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		starts[i].Store(rec.now())
		if _, err := e.leader.Put(ctx, prefix+strconv.Itoa(i), ""); err != nil {
			if ctx.Err() == nil {
				return fmt.Errorf("watched put: %w", err)
			}
		} else {
			e.extraKeys.Add(1)
		}
	}
	<-ctx.Done()
	return nil
}

// setupLeaseKeepAlive grants one lease per client and opens a raw keep-alive
// stream for each, as etcd's benchmark tool does.
func setupLeaseKeepAlive(ctx context.Context, e *env) (*instance, error) {
	n := e.opts.clients
	ids := make([]clientv3.LeaseID, n)
	if err := parallel(ctx, n, 50, func(ctx context.Context, i int) error {
		resp, err := e.conn(i).Grant(ctx, 600)
		if err != nil {
			return fmt.Errorf("grant lease: %w", err)
		}
		ids[i] = resp.ID
		return nil
	}); err != nil {
		return nil, err
	}
	revoke := func() {
		_ = parallel(context.Background(), n, 50, func(ctx context.Context, i int) error {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, _ = e.conn(i).Revoke(ctx, ids[i])
			return nil
		})
	}
	inst := &instance{close: revoke}
	inst.run = func(ctx context.Context, rec *recorder) error {
		streams := make([]pb.Lease_LeaseKeepAliveClient, n)
		for i := range streams {
			s, err := pb.NewLeaseClient(e.conn(i).ActiveConnection()).LeaseKeepAlive(ctx)
			if err != nil {
				return fmt.Errorf("open keep-alive stream: %w", err)
			}
			streams[i] = s
		}
		return closedLoop(n, func(ctx context.Context, w int, _ *rand.Rand) (bool, error) {
			s := streams[w]
			if err := s.Send(&pb.LeaseKeepAliveRequest{ID: int64(ids[w])}); err != nil {
				return false, fmt.Errorf("send keep-alive: %w", err)
			}
			resp, err := s.Recv()
			if err != nil {
				return false, fmt.Errorf("receive keep-alive: %w", err)
			}
			if resp.TTL <= 0 {
				return false, fmt.Errorf("lease %x expired", ids[w])
			}
			return false, nil
		}).run(ctx, rec)
	}
	return inst, nil
}

// setupLock opens one session per contender; they all take the same mutex.
func setupLock(ctx context.Context, e *env) (*instance, error) {
	sessions, closeAll, err := openSessions(ctx, e, e.opts.lockClients)
	if err != nil {
		return nil, err
	}
	n := len(sessions)
	mutexes := make([]*concurrency.Mutex, n)
	for i, s := range sessions {
		mutexes[i] = concurrency.NewMutex(s, "lock/bench")
	}
	inst := closedLoop(n, func(ctx context.Context, w int, _ *rand.Rand) (bool, error) {
		m := mutexes[w]
		if err := m.Lock(ctx); err != nil {
			return false, fmt.Errorf("lock: %w", err)
		}
		// Unlock even when the window is closing, so that no contender waits
		// on a holder that stopped.
		uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Unlock(uctx); err != nil {
			return false, fmt.Errorf("unlock: %w", err)
		}
		return false, nil
	})
	inst.close = closeAll
	return inst, nil
}

// openSessions opens one session per contender and returns them with a
// function that closes them all.
func openSessions(ctx context.Context, e *env, n int) ([]*concurrency.Session, func(), error) {
	sessions := make([]*concurrency.Session, n)
	closeAll := func() {
		var wg sync.WaitGroup
		for _, s := range sessions {
			if s == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = s.Close()
			}()
		}
		wg.Wait()
	}
	err := parallel(ctx, n, 50, func(ctx context.Context, i int) error {
		s, err := concurrency.NewSession(e.conn(i), concurrency.WithTTL(30), concurrency.WithContext(context.Background()))
		if err != nil {
			return fmt.Errorf("open session: %w", err)
		}
		sessions[i] = s
		return nil
	})
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return sessions, closeAll, nil
}

// setupLockRPC has the contenders take one lock through the server-side
// lock service (v3lock: Lock, then Unlock of the returned key), which both
// systems implement; the server does the waiting.
func setupLockRPC(ctx context.Context, e *env) (*instance, error) {
	sessions, closeAll, err := openSessions(ctx, e, e.opts.lockClients)
	if err != nil {
		return nil, err
	}
	clients := make([]v3lockpb.LockClient, len(sessions))
	for i, s := range sessions {
		clients[i] = v3lockpb.NewLockClient(s.Client().ActiveConnection())
	}
	inst := closedLoop(len(sessions), func(ctx context.Context, w int, _ *rand.Rand) (bool, error) {
		resp, err := clients[w].Lock(ctx, &v3lockpb.LockRequest{Name: []byte("lock-rpc/bench"), Lease: int64(sessions[w].Lease())})
		if err != nil {
			return false, fmt.Errorf("lock: %w", err)
		}
		uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := clients[w].Unlock(uctx, &v3lockpb.UnlockRequest{Key: resp.Key}); err != nil {
			return false, fmt.Errorf("unlock: %w", err)
		}
		return false, nil
	})
	inst.close = closeAll
	return inst, nil
}

// setupElection has the contenders campaign in one election with etcd's
// concurrency package; each leader resigns at once, so an operation is one
// term of leadership.
func setupElection(ctx context.Context, e *env) (*instance, error) {
	sessions, closeAll, err := openSessions(ctx, e, e.opts.lockClients)
	if err != nil {
		return nil, err
	}
	elections := make([]*concurrency.Election, len(sessions))
	for i, s := range sessions {
		elections[i] = concurrency.NewElection(s, "election/bench")
	}
	inst := closedLoop(len(sessions), func(ctx context.Context, w int, _ *rand.Rand) (bool, error) {
		el := elections[w]
		if err := el.Campaign(ctx, "candidate"); err != nil {
			return false, fmt.Errorf("campaign: %w", err)
		}
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := el.Resign(rctx); err != nil {
			return false, fmt.Errorf("resign: %w", err)
		}
		return false, nil
	})
	inst.close = closeAll
	return inst, nil
}

// parallel runs fn(i) for i in [0, n) with at most width at once and returns
// the first error.
func parallel(parent context.Context, n, width int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	sem := make(chan struct{}, width)
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(ctx, i); err != nil {
				once.Do(func() {
					first = err
					cancel()
				})
			}
		}()
	}
	wg.Wait()
	if first == nil {
		return parent.Err()
	}
	return first
}
