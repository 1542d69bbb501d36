package machine

import (
	"cmp"
	"fmt"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/queue/queuewire"
	"github.com/synod-io/synod/internal/raftcmd"
)

// The job queues' command kinds (raftcmd's block 100-149).
const (
	// KindBatch is a batch of client operations (queuewire.Batch).
	KindBatch = raftcmd.KindQueueFirst
	// KindTick is the leader's time-driven work (queuewire.Tick), fenced to
	// its term.
	KindTick = raftcmd.KindQueueFirst + 1
)

// Claim is a job claimed for a worker: the node that serves the worker's
// claim stream sends it.
type Claim struct {
	Queue, Worker string
	Lease         int64
	ID            uint64
	Token         int64
	Attempt       int32
	// AvailableAt and ClaimedAt give the time it waited (0: unknown).
	AvailableAt, ClaimedAt int64
	Deadline               int64
}

// Revocation is a job that is no longer its worker's.
type Revocation struct {
	Queue, Worker string
	Lease         int64
	ID            uint64
	Token         int64
	Reason        string
}

// Finished is a job that reached a final state.
type Finished struct {
	Queue string
	ID    uint64
	State queuepb.State
}

// Outcome counts what happened to a queue's jobs in one command.
type Outcome struct {
	Queue                                    string
	Pushed, Completed, Failed, Dead, Cancels int
	Claimed                                  int
}

// Effect is what one applied command (or lease revocation) asks of the
// queue service of every node, in rangesm.Effects.Extensions.
type Effect struct {
	Claimed  []Claim
	Revoked  []Revocation
	Finished []Finished
	Outcomes []Outcome
	// Dispatch: jobs were released without a time to dispatch them at
	// (a lease ended): the leader should dispatch.
	Dispatch bool
	// Ops is the number of operations the command carried.
	Ops int
}

func (e *Effect) empty() bool {
	return len(e.Claimed) == 0 && len(e.Revoked) == 0 && len(e.Finished) == 0 && len(e.Outcomes) == 0 && !e.Dispatch && e.Ops == 0
}

func (e *Effect) outcome(q string) *Outcome {
	for i := range e.Outcomes {
		if e.Outcomes[i].Queue == q {
			return &e.Outcomes[i]
		}
	}
	e.Outcomes = append(e.Outcomes, Outcome{Queue: q})
	return &e.Outcomes[len(e.Outcomes)-1]
}

// Machine applies the job queues' commands in a data range: it is the
// range's datarange.Extension. It keeps in memory what decides claims (the
// pending jobs by priority and time, groups, workers, leases) and writes
// every change as MVCC keys under keys.QueuesPrefix through the range's KV
// applier. The replica's goroutine applies; the node's queue service reads
// through the query methods; mu guards everything.
type Machine struct {
	// horizonMs is how far ahead of a command's time pending jobs are kept
	// as job objects, and promoteBudget how many a command promotes ahead
	// of their time (defaultHorizonMs and defaultPromoteBudget; tests
	// lower them). See cold.go.
	horizonMs     int64
	promoteBudget int
	mu            struct {
		sync.Mutex
		queues map[string]*queue
		// leaseJobs are the running jobs claimed on each lease;
		// leaseWorkers the workers attached on it.
		leaseJobs    map[int64]map[*job]struct{}
		leaseWorkers map[int64]map[*worker]*queue
	}
}

var _ datarange.Extension = (*Machine)(nil)

// New returns an empty Machine; Load gives it its range's state.
func New() *Machine {
	m := &Machine{horizonMs: defaultHorizonMs, promoteBudget: defaultPromoteBudget}
	m.resetLocked()
	return m
}

func (m *Machine) resetLocked() {
	m.mu.queues = map[string]*queue{}
	m.mu.leaseJobs = map[int64]map[*job]struct{}{}
	m.mu.leaseWorkers = map[int64]map[*worker]*queue{}
}

// Name implements datarange.Extension.
func (m *Machine) Name() string { return "queue" }

// Kinds implements datarange.Extension.
func (m *Machine) Kinds() []raftcmd.Kind { return []raftcmd.Kind{KindBatch, KindTick} }

// Committed implements datarange.Extension: the in-memory state moves as
// commands apply.
func (m *Machine) Committed() {}

// BatchResult is the response of a KindBatch command: one result per
// operation, in order.
type BatchResult struct {
	Results []OpResult
}

// OpResult is the outcome of one operation: Err (a gRPC status error), or
// Resp (the operation's response message, if it has one).
type OpResult struct {
	Err  error
	Resp proto.Message
}

// Apply implements datarange.Extension.
func (m *Machine) Apply(env *datarange.Env, cmd raftcmd.Command) (datarange.Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch cmd.Kind {
	case KindBatch:
		var b queuewire.Batch
		if err := proto.Unmarshal(cmd.Payload, &b); err != nil {
			return datarange.Result{Err: fmt.Errorf("decode queue batch: %w", err)}, nil
		}
		a := m.newApplier(env, b.NowMs)
		res := &BatchResult{Results: make([]OpResult, len(b.Ops))}
		for i, op := range b.Ops {
			r, err := a.op(op)
			if err != nil {
				return datarange.Result{}, err
			}
			res.Results[i] = r
		}
		a.eff.Ops = len(b.Ops)
		if err := a.finish(); err != nil {
			return datarange.Result{}, err
		}
		return datarange.Result{Resp: res}, nil
	case KindTick:
		var t queuewire.Tick
		if err := proto.Unmarshal(cmd.Payload, &t); err != nil {
			return datarange.Result{Err: fmt.Errorf("decode queue tick: %w", err)}, nil
		}
		a := m.newApplier(env, t.NowMs)
		if err := a.tick(&t); err != nil {
			return datarange.Result{}, err
		}
		if err := a.finish(); err != nil {
			return datarange.Result{}, err
		}
		return datarange.Result{}, nil
	}
	return datarange.Result{Err: fmt.Errorf("queue: unknown command kind %s", cmd.Kind)}, nil
}

// LeaseRevoked implements datarange.Extension: the jobs claimed on the
// lease are released (available again at once, the attempt counted as
// lost) and the workers attached on it detached.
func (m *Machine) LeaseRevoked(env *datarange.Env, id int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	jobs, workers := m.mu.leaseJobs[id], m.mu.leaseWorkers[id]
	if len(jobs) == 0 && len(workers) == 0 {
		return nil
	}
	a := m.newApplier(env, 0)
	// Map order is random: release in a fixed order, so that every
	// replica writes alike.
	js := make([]*job, 0, len(jobs))
	for j := range jobs {
		js = append(js, j)
	}
	slices.SortFunc(js, func(x, y *job) int {
		return cmp.Or(cmp.Compare(x.q.name, y.q.name), cmp.Compare(x.id, y.id))
	})
	for _, j := range js {
		if err := a.release(j); err != nil {
			return err
		}
	}
	type qw struct {
		q *queue
		w *worker
	}
	ws := make([]qw, 0, len(workers))
	for w, q := range workers {
		ws = append(ws, qw{q, w})
	}
	slices.SortFunc(ws, func(x, y qw) int {
		return cmp.Or(cmp.Compare(x.q.name, y.q.name), cmp.Compare(x.w.name, y.w.name))
	})
	for _, x := range ws {
		if x.w.lease == id {
			a.dropWorker(x.q, x.w)
		}
	}
	delete(m.mu.leaseWorkers, id)
	return a.finish()
}

func (m *Machine) queueLocked(name string) *queue {
	q := m.mu.queues[name]
	if q == nil {
		q = newQueue(name)
		m.mu.queues[name] = q
	}
	return q
}

func (m *Machine) leaseAddLocked(j *job) {
	s := m.mu.leaseJobs[j.lease]
	if s == nil {
		s = map[*job]struct{}{}
		m.mu.leaseJobs[j.lease] = s
	}
	s[j] = struct{}{}
}

func (m *Machine) leaseRemoveLocked(j *job) {
	if s := m.mu.leaseJobs[j.lease]; s != nil {
		delete(s, j)
		if len(s) == 0 {
			delete(m.mu.leaseJobs, j.lease)
		}
	}
}

func (m *Machine) leaseWorkerAddLocked(q *queue, w *worker) {
	s := m.mu.leaseWorkers[w.lease]
	if s == nil {
		s = map[*worker]*queue{}
		m.mu.leaseWorkers[w.lease] = s
	}
	s[w] = q
}

func (m *Machine) leaseWorkerRemoveLocked(w *worker) {
	if s := m.mu.leaseWorkers[w.lease]; s != nil {
		delete(s, w)
		if len(s) == 0 {
			delete(m.mu.leaseWorkers, w.lease)
		}
	}
}

// Load implements datarange.Extension: it rebuilds the in-memory state
// from the queue keys in r.
func (m *Machine) Load(r pebble.Reader) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.resetLocked()
	return m.loadLocked(r)
}
