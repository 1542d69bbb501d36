package chaos

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/client"
	"github.com/synod-io/synod/internal/lincheck"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// The queue workload: producers push jobs (a third of them in one of three
// group keys) with idempotency keys, retrying a push whose outcome is
// unknown; workers, each on its own session, run them and complete each
// with CompleteTxn, which also puts a key naming the job and the claim's
// token (so the store itself records every completion it accepted); one
// worker, the staller, stops renewing its session while it holds a job and
// completes it only after its lease's TTL has passed, as a process paused
// past its lease does. A cron schedule fires every second into another
// queue. Meanwhile the nemesis crashes, partitions, isolates and (for
// processes) pauses nodes. After the faults every node is crashed and
// restarted, and the model checks that:
//
//   - every acknowledged push's job exists and completes (at least once);
//   - the store accepted exactly one completion per job, and it carried the
//     job's last claim's token (no completion with a stale token accepted);
//   - two jobs of one group never ran at once, except when the first one's
//     claim ended by its lease (its completion was not accepted);
//   - every firing of the schedule pushed one job (no firing time twice).

const (
	queueName = "chaos-jobs"
	cronQueue = "chaos-cron"
	// doneKeys (+ job ID + "/" + token) sort below "/", so that on a
	// pre-split store they lie in the first data range with the queues,
	// as a completion's puts must (the PresplitKeys start at "/").
	doneKeys       = "+chaos/q/done/"
	queueTTL       = 3 // seconds, the workers' sessions
	queueWorkers   = 3
	queueProducers = 4
	minAcked       = 40
	maxStalls      = 10
	// maxQueueRun bounds the run under faults when it waits for a refused
	// stale completion.
	maxQueueRun = 45 * time.Second
)

// queueScenario is one run of the queue workload.
type queueScenario struct {
	process  bool
	nodes    int
	faults   []string
	duration time.Duration
	seed     int64
}

// execution is one run of a handler.
type execution struct {
	id        uint64
	token     int64
	group     string
	start     time.Time // the handler started
	finish    time.Time // the handler called CompleteTxn
	accepted  bool      // CompleteTxn succeeded
	staleSeen bool      // CompleteTxn was refused: stale token
	staller   bool
}

type queueModel struct {
	mu     sync.Mutex
	acked  map[uint64]string // job ID -> idempotency key
	execs  []execution
	pushes atomic.Int64
	unknownPushes, staleRefused, staleAccepted,
	stalls, completeErrors atomic.Int64
}

func (m *queueModel) ack(id uint64, key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.acked[id] = key
}

func (m *queueModel) record(e execution) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.execs = append(m.execs, e)
}

var queueScenarios = []struct {
	name string
	queueScenario
}{
	{"three-nodes", queueScenario{nodes: 3, faults: []string{"crash-leader", "partition", "isolate-leader", "flaky", "crash-all"}, duration: 10 * time.Second, seed: 11}},
	{"five-nodes", queueScenario{nodes: 5, faults: []string{"crash-leader", "partition", "oneway-leader-out", "crash"}, duration: 9 * time.Second, seed: 12}},
	{"processes", queueScenario{process: true, nodes: 3, faults: []string{"crash-leader", "pause-leader", "partition", "crash-all"}, duration: 10 * time.Second, seed: 13}},
}

// TestQueueChaos's scenarios run in parallel with TestChaos (see there)
// and the package's other parallel tests.
func TestQueueChaos(t *testing.T) {
	t.Parallel()
	for _, sc := range queueScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			if *seedFlag != 0 {
				sc.seed = *seedFlag
			}
			t.Logf("replay: go test ./test/chaos -run 'TestQueueChaos/^%s$' -v -args -seed %d", sc.name, sc.seed)
			runQueueScenario(t, sc.queueScenario)
		})
	}
}

func runQueueScenario(t *testing.T, sc queueScenario) {
	var c cluster
	if sc.process {
		c = startProcesses(t, sc.nodes)
	} else {
		takeInProcessTurn(t)
		tc := newInProcess(t, testcluster.Options{
			Nodes: sc.nodes, Rand: stream(sc.seed, streamNetwork),
			Configure: func(_ int, cfg *server.Config) { cfg.LogTruncateStep = 50 },
		})
		tc.WaitLeader()
		c = inProcess{tc}
	}
	var eps []string
	for i := range c.size() {
		eps = append(eps, c.endpoint(i))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	admin, err := client.New(ctx, client.Config{Endpoints: eps, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	cronStart := time.Now()
	if _, err := admin.Queue(cronQueue).PutSchedule(ctx, "tick", "@every 1s", client.Spec{Payload: []byte("tick")}); err != nil {
		t.Fatalf("put schedule: %v", err)
	}

	var kinds []faultKind
	for _, name := range sc.faults {
		k, ok := faultKindNamed(name)
		if !ok || (sc.process && !k.process) || (!sc.process && !k.inProcess) {
			t.Fatalf("fault %q is not available for this cluster", name)
		}
		kinds = append(kinds, k)
	}
	nem := &nemesis{
		c: c, kinds: kinds, rng: stream(sc.seed, streamNemesis), rec: lincheck.NewRecorder(),
		hold:      [2]time.Duration{300 * time.Millisecond, 1500 * time.Millisecond},
		quiet:     [2]time.Duration{200 * time.Millisecond, 800 * time.Millisecond},
		logf:      t.Logf,
		roundDone: make(chan struct{}),
	}
	m := &queueModel{acked: map[uint64]string{}}

	// Workers run until the end of the checks; producers and the nemesis
	// only for the duration.
	wctx, stopWorkers := context.WithCancel(ctx)
	var workers sync.WaitGroup
	for i := range queueWorkers {
		workers.Go(func() { runQueueWorker(wctx, eps, i, i == 0, m, t.Logf) })
	}
	defer func() {
		stopWorkers()
		workers.Wait()
	}()
	fctx, stopFaults := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range queueProducers {
		wg.Go(func() { produce(fctx, ctx, eps, i, m) })
	}
	var nemErr error
	nemDone := make(chan struct{})
	wg.Go(func() {
		defer close(nemDone)
		nemErr = nem.run(fctx)
	})
	start := time.Now()
	sleep(fctx, sc.duration)
	select {
	case <-nem.roundDone:
	case <-nemDone:
	case <-ctx.Done():
	}
	// A slow machine gives the staller fewer jobs: run on until one of its
	// late completions was refused, so that the run shows what it claims.
	for m.staleRefused.Load() < 1 && time.Since(start) < maxQueueRun && sleep(fctx, 100*time.Millisecond) {
	}
	stopFaults()
	wg.Wait()
	if nemErr != nil {
		t.Fatalf("nemesis: %v", nemErr)
	}
	t.Logf("fault schedule:\n  %s", schedule(nem.rec.Events()))
	if err := restartAll(t, c); err != nil {
		t.Fatalf("restart every node: %v", err)
	}
	cronEnd := time.Now()

	// Every acknowledged job completes.
	m.mu.Lock()
	acked := make(map[uint64]string, len(m.acked))
	for id, k := range m.acked {
		acked[id] = k
	}
	m.mu.Unlock()
	q := admin.Queue(queueName)
	final := map[uint64]*queuepb.Job{}
	deadline := time.Now().Add(90 * time.Second)
	for id := range acked {
		for {
			j, err := q.Get(ctx, id)
			if err == nil && j.State == queuepb.State_COMPLETED {
				final[id] = j
				break
			}
			if time.Now().After(deadline) {
				state := "missing: " + fmt.Sprint(err)
				if j != nil {
					state = j.State.String() + " (last error " + j.LastError + ")"
				}
				t.Errorf("acknowledged job %d (%s): got %s, want COMPLETED", id, acked[id], state)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	stopWorkers()
	workers.Wait()

	// The completions the store accepted: one per job, with its last token.
	resp, err := admin.Get(ctx, doneKeys, clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("read the completion keys: %v", err)
	}
	accepted := map[uint64][]int64{}
	for _, kv := range resp.Kvs {
		f := strings.Split(strings.TrimPrefix(string(kv.Key), doneKeys), "/")
		id, _ := strconv.ParseUint(f[0], 10, 64)
		tok, _ := strconv.ParseInt(f[1], 10, 64)
		accepted[id] = append(accepted[id], tok)
	}
	for id, j := range final {
		toks := accepted[id]
		if len(toks) != 1 || toks[0] != j.Token {
			t.Errorf("job %d: accepted completions with tokens %v, want exactly one with the last claim's token %d", id, toks, j.Token)
		}
	}
	for id, toks := range accepted {
		if len(toks) > 1 {
			if _, ok := final[id]; !ok {
				t.Errorf("job %d: %d completions accepted (tokens %v), want at most one", id, len(toks), toks)
			}
		}
	}

	// No two jobs of a group ran at once, but across a lease's end.
	m.mu.Lock()
	execs := slices.Clone(m.execs)
	m.mu.Unlock()
	byGroup := map[string][]execution{}
	for _, e := range execs {
		if e.group != "" {
			byGroup[e.group] = append(byGroup[e.group], e)
		}
	}
	overlaps := 0
	for g, es := range byGroup {
		slices.SortFunc(es, func(a, b execution) int { return a.start.Compare(b.start) })
		for i, a := range es {
			if !a.accepted {
				continue
			}
			for _, b := range es[i+1:] {
				if !b.start.Before(a.finish) {
					break
				}
				if b.id != a.id {
					overlaps++
					t.Errorf("group %s: job %d (token %d) ran %s..%s and its completion was accepted, but job %d (token %d) started at %s",
						g, a.id, a.token, a.start.Format("15:04:05.000"), a.finish.Format("15:04:05.000"), b.id, b.token, b.start.Format("15:04:05.000"))
				}
			}
		}
	}

	// Each firing of the schedule pushed one job.
	cronEnd = time.Now()
	jobs, err := listAll(ctx, admin.Queue(cronQueue))
	if err != nil {
		t.Fatalf("list %s: %v", cronQueue, err)
	}
	seen := map[string]uint64{}
	for _, j := range jobs {
		if prev, dup := seen[j.IdempotencyKey]; dup {
			t.Errorf("firing %q pushed jobs %d and %d, want one", j.IdempotencyKey, prev, j.Id)
		}
		seen[j.IdempotencyKey] = j.Id
	}
	span := cronEnd.Sub(cronStart)
	if min := int(span.Seconds() / 2); len(seen) < min {
		t.Errorf("firings of an @every 1s schedule over %s: got %d, want at least %d", span.Round(time.Second), len(seen), min)
	}

	t.Logf("queue workload: %d pushes acknowledged (%d retried after an unknown outcome), %d executions, %d completions refused otherwise; staller: %d stalls, stale completions refused %d, accepted %d (its lease had not ended yet); %d groups checked, %d overlaps; %d firings in %s",
		len(acked), m.unknownPushes.Load(), len(execs), m.completeErrors.Load(), m.stalls.Load(), m.staleRefused.Load(), m.staleAccepted.Load(), len(byGroup), overlaps, len(seen), span.Round(time.Second))
	if len(acked) < minAcked {
		t.Errorf("acknowledged pushes: got %d, want at least %d", len(acked), minAcked)
	}
	if m.staleRefused.Load() < 1 {
		t.Errorf("completions of the staller refused as stale: got %d, want at least 1", m.staleRefused.Load())
	}
}

// listAll returns every job of q.
func listAll(ctx context.Context, q *client.Queue) ([]*queuepb.Job, error) {
	var all []*queuepb.Job
	var after uint64
	for {
		jobs, more, err := q.List(ctx, 0, after, 500, false)
		if err != nil {
			return nil, err
		}
		all = append(all, jobs...)
		if !more || len(jobs) == 0 {
			return all, nil
		}
		after = jobs[len(jobs)-1].Id
	}
}

// produce pushes jobs until ctx ends; a push whose outcome is unknown is
// retried with the same idempotency key (under outer) until acknowledged.
func produce(ctx, outer context.Context, eps []string, id int, m *queueModel) {
	cli, err := client.New(outer, client.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		return
	}
	defer cli.Close()
	q := cli.Queue(queueName)
	for n := 0; ctx.Err() == nil; n++ {
		key := fmt.Sprintf("p%d-%d", id, n)
		opts := []client.PushOption{client.WithIdempotencyKey(key), client.WithMaxAttempts(1000),
			client.WithRetry(client.RetryPolicy{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond})}
		if n%3 == 0 {
			opts = append(opts, client.WithGroup(fmt.Sprintf("g%d", (n/3)%3)))
		}
		for try := 0; ; try++ {
			pctx, cancel := context.WithTimeout(outer, 2*time.Second)
			jid, err := q.Push(pctx, []byte(key), opts...)
			cancel()
			if err == nil {
				m.ack(jid, key)
				break
			}
			if try == 0 {
				m.unknownPushes.Add(1)
			}
			if ctx.Err() != nil && try > 20 || outer.Err() != nil {
				return // the outcome stays unknown: the job may or may not exist
			}
			sleep(outer, 50*time.Millisecond)
		}
		sleep(ctx, 50*time.Millisecond) // think: the group keys' queues must drain
	}
}

// runQueueWorker runs a worker, on a new session each time the previous one
// ends, until ctx ends. The staller stalls past its lease on its second
// job and every third one after, maxStalls times.
func runQueueWorker(ctx context.Context, eps []string, id int, staller bool, m *queueModel, logf func(string, ...any)) {
	cli, err := client.New(ctx, client.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		return
	}
	defer cli.Close()
	var got atomic.Int64
	for ctx.Err() == nil {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		s, err := cli.NewSession(sctx, client.WithTTL(queueTTL))
		cancel()
		if err != nil {
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		conc := 4
		if staller {
			conc = 1
		}
		w := cli.Queue(queueName).NewWorker(s, func(jctx context.Context, j *client.Job) ([]byte, error) {
			e := execution{id: j.ID, token: j.Token, group: j.Group, start: time.Now(), staller: staller}
			// Each stall holds up a group's later jobs for the TTL and
			// more: a few are enough.
			stall := staller && got.Add(1)%3 == 2 && m.stalls.Load() < maxStalls
			if stall {
				m.stalls.Add(1)
				s.Orphan()
				sleep(ctx, (queueTTL+2)*time.Second)
			} else if j.Attempt > 1 {
				// Hold a job that ran before (the staller's, say) long
				// enough for its earlier claim's late completion to
				// meet it running under this claim's token.
				sleep(jctx, 4*time.Second)
			} else {
				sleep(jctx, 10*time.Millisecond)
			}
			tok := strconv.FormatInt(j.Token, 10)
			complete := func() error {
				e.finish = time.Now()
				cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				return j.CompleteTxn(cctx, []byte(tok), nil, client.KVPut{Key: doneKeys + strconv.FormatUint(j.ID, 10) + "/" + tok, Value: "1"})
			}
			err := complete()
			// The staller's late completion is what the run must show
			// refused, and its member may be down (the processes scenario
			// crashes them): it tries again for a while, as long as the
			// member refused the connection (the completion was not sent).
			for stalled := time.Now(); stall && err != nil && strings.Contains(err.Error(), "connection refused") &&
				time.Since(stalled) < 10*time.Second && sleep(ctx, 200*time.Millisecond); {
				err = complete()
			}
			e.accepted = err == nil
			e.staleSeen = errors.Is(err, client.ErrStaleToken)
			m.record(e)
			switch {
			case stall && err == nil:
				m.staleAccepted.Add(1)
			case stall && e.staleSeen:
				m.staleRefused.Add(1)
			case stall:
				logf("staller: completion of job %d after its stall: %v", j.ID, err)
				m.completeErrors.Add(1)
			case err != nil:
				m.completeErrors.Add(1)
			}
			return nil, err
		}, client.WithConcurrency(conc), client.WithWorkerID(fmt.Sprintf("w%d", id)))
		err = w.Run(ctx)
		if err != nil && ctx.Err() == nil {
			logf("worker %d: %v (new session)", id, err)
		}
		closeSession(context.Background(), s)
	}
}
