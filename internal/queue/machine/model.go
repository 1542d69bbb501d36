package machine

import (
	"math"

	"github.com/synod-io/synod/api/queuepb"
)

// Defaults of a queue's settings (queuepb.QueueConfig).
const (
	DefaultMaxAttempts        = 25
	DefaultTimeoutMs          = 5 * 60 * 1000
	DefaultCompletedRetention = 24 * 60 * 60 * 1000
	DefaultDeadRetention      = 30 * 24 * 60 * 60 * 1000
	DefaultMaxLost            = 10
	DefaultInitialBackoffMs   = 1000
	DefaultMaxBackoffMs       = 60 * 60 * 1000
	DefaultMultiplier         = 2.0
	DefaultJitter             = 0.2
)

// job is what a replica keeps in memory of a job: everything that decides
// what the queue does with it. The payload, result, progress and errors
// stay in storage.
type job struct {
	id        uint64
	q         *queue
	state     queuepb.State
	prio      int32
	runAt     int64
	availAt   int64
	createdAt int64
	grp       *group
	deps      []uint64
	// unmet counts the dependencies not completed yet; dependents are the
	// pending jobs that wait for this one.
	unmet      int32
	dependents []*job

	maxAttempts int32
	retry       *queuepb.RetryPolicy
	timeoutMs   int64
	idem        string

	attempt, failures, lost int32
	token                   int64
	lease                   int64
	worker                  string
	claimedAt, deadline     int64
	finishedAt              int64
	cancelReq               bool
	hasOut                  bool

	// Positions in the queue's heaps (-1: not in it).
	readyIdx, schedIdx, ageIdx, dlIdx, finIdx int
}

func newJob(q *queue, id uint64) *job {
	return &job{id: id, q: q, readyIdx: -1, schedIdx: -1, ageIdx: -1, dlIdx: -1, finIdx: -1}
}

func (j *job) terminal() bool {
	switch j.state {
	case queuepb.State_COMPLETED, queuepb.State_DEAD, queuepb.State_CANCELLED:
		return true
	}
	return false
}

// vt is the job's place in the round-robin among groups: a group's next
// job queues behind everything that became available before the group was
// last served.
func (j *job) vt() int64 {
	if j.grp != nil && j.grp.lastServed > j.runAt {
		return j.grp.lastServed
	}
	return j.runAt
}

// readyLess orders the candidates of a claim: highest priority, then the
// earliest vt, then the lowest ID (push order).
func readyLess(a, b *job) bool {
	if a.prio != b.prio {
		return a.prio > b.prio
	}
	if va, vb := a.vt(), b.vt(); va != vb {
		return va < vb
	}
	return a.id < b.id
}

func runAtLess(a, b *job) bool {
	if a.runAt != b.runAt {
		return a.runAt < b.runAt
	}
	return a.id < b.id
}

func deadlineLess(a, b *job) bool {
	if a.deadline != b.deadline {
		return a.deadline < b.deadline
	}
	return a.id < b.id
}

func finishedLess(a, b *job) bool {
	if a.finishedAt != b.finishedAt {
		return a.finishedAt < b.finishedAt
	}
	return a.id < b.id
}

// group is the jobs of one group key that are not finished, in ID order.
type group struct {
	name    string
	jobs    []*job
	running int32
	// lastServed is when one of its jobs was last claimed (persisted in its
	// group record while the group has jobs).
	lastServed int64
	// cand is the job the group offers to claims (in ready or sched).
	cand *job
}

// worker is an attached worker.
type worker struct {
	name     string
	lease    int64
	capacity int32
	stream   string
	// running counts its running jobs on its current lease.
	running int32
	idx     int
}

func (w *worker) hasRoom() bool { return w.running < w.capacity }

// schedule is a cron schedule.
type schedule struct {
	rec *queuepb.Schedule
}

// queue is one queue's state.
type queue struct {
	name string
	cfg  *queuepb.QueueConfig // as stored; nil: defaults
	jobs map[uint64]*job
	idem map[string]uint64
	// ready holds the candidates of claims (jobs without a group that are
	// pending and not waiting, and each group's candidate) that were due at
	// some claim's time; sched the others, by run time. A claim at time now
	// first moves what is due from sched to ready, then takes from ready,
	// setting aside what is not due at now (a clock behind an earlier
	// claim's): the choice depends only on the set of candidates and now,
	// not on the history of the heaps, so every replica makes it alike.
	ready, sched jobHeap
	// age orders ready by run time (the oldest available job).
	age jobHeap
	// ageMaxRunAt is at least the run time of every job in age (it is
	// never lowered): Stats counts the jobs of age not due yet only when
	// it is above now, instead of walking a backlog of due jobs.
	ageMaxRunAt int64
	// deadlines orders running jobs by deadline; done (completed and
	// cancelled) and gone (dead) finished jobs by when they finished: each
	// is kept for its queue's retention of its kind, as it is configured
	// now.
	deadlines, done, gone jobHeap
	groups                map[string]*group
	workers               map[string]*worker
	roomy                 workerHeap
	schedules             map[string]*schedule
	// cold are the pending jobs without a group or dependencies due after
	// hotUntil, the queue's horizon (see cold.go); every other job is in
	// jobs. hotUntil is stored in the queue's horizon key (0: none).
	cold     coldSet
	hotUntil int64

	pending, waiting, running, completed, dead, cancelled int64
}

func newQueue(name string) *queue {
	q := &queue{
		name: name, jobs: map[uint64]*job{}, idem: map[string]uint64{},
		groups: map[string]*group{}, workers: map[string]*worker{}, schedules: map[string]*schedule{},
	}
	q.ready = jobHeap{less: readyLess, pos: func(j *job) *int { return &j.readyIdx }}
	q.sched = jobHeap{less: runAtLess, pos: func(j *job) *int { return &j.schedIdx }}
	q.age = jobHeap{less: runAtLess, pos: func(j *job) *int { return &j.ageIdx }}
	q.deadlines = jobHeap{less: deadlineLess, pos: func(j *job) *int { return &j.dlIdx }}
	q.done = jobHeap{less: finishedLess, pos: func(j *job) *int { return &j.finIdx }}
	q.gone = jobHeap{less: finishedLess, pos: func(j *job) *int { return &j.finIdx }}
	return q
}

// empty reports whether the queue holds nothing: it can be forgotten.
func (q *queue) empty() bool {
	return q.cfg == nil && len(q.jobs) == 0 && q.cold.len() == 0 && len(q.workers) == 0 && len(q.schedules) == 0 && len(q.groups) == 0
}

func (q *queue) config() *queuepb.QueueConfig {
	if q.cfg == nil {
		return &queuepb.QueueConfig{}
	}
	return q.cfg
}

func (q *queue) paused() bool { return q.cfg != nil && q.cfg.Paused }

func (q *queue) maxRunning() int64 {
	if q.cfg == nil {
		return 0
	}
	return int64(q.cfg.MaxRunning)
}

func (q *queue) groupLimit() int32 {
	if q.cfg == nil || q.cfg.GroupMaxRunning <= 0 {
		return 1
	}
	return q.cfg.GroupMaxRunning
}

func (q *queue) maxLost() int32 {
	if q.cfg == nil || q.cfg.MaxLost <= 0 {
		return DefaultMaxLost
	}
	return q.cfg.MaxLost
}

// retention is how long a job finished in state st is kept (negative:
// not at all).
func (q *queue) retention(st queuepb.State) int64 {
	c := q.config()
	if st == queuepb.State_DEAD {
		if c.DeadRetentionMs == 0 {
			return DefaultDeadRetention
		}
		return c.DeadRetentionMs
	}
	if c.CompletedRetentionMs == 0 {
		return DefaultCompletedRetention
	}
	return c.CompletedRetentionMs
}

// finished returns the heap of finished jobs j belongs in.
func (q *queue) finished(j *job) *jobHeap {
	if j.state == queuepb.State_DEAD {
		return &q.gone
	}
	return &q.done
}

// expireAt is when finished job j's retention ends.
func (q *queue) expireAt(j *job) int64 {
	at := j.finishedAt + q.retention(j.state)
	if at < j.finishedAt && q.retention(j.state) > 0 {
		return math.MaxInt64
	}
	return at
}

// count moves a job from one state to another in the queue's counts.
func (q *queue) count(j *job, from, to queuepb.State) {
	for i, st := range []queuepb.State{from, to} {
		d := int64(1)
		if i == 0 {
			d = -1
		}
		switch st {
		case queuepb.State_PENDING:
			q.pending += d
		case queuepb.State_RUNNING:
			q.running += d
		case queuepb.State_COMPLETED:
			q.completed += d
		case queuepb.State_DEAD:
			q.dead += d
		case queuepb.State_CANCELLED:
			q.cancelled += d
		}
	}
}

// backoff is how long a job waits after its n-th failure: exponential with
// deterministic jitter (a hash of the job and the failure), so that every
// replica computes the same time.
func backoff(p *queuepb.RetryPolicy, id uint64, n int32) int64 {
	initial, maxB, mult, jitter := int64(DefaultInitialBackoffMs), int64(DefaultMaxBackoffMs), DefaultMultiplier, DefaultJitter
	if p != nil {
		if p.InitialBackoffMs > 0 {
			initial = p.InitialBackoffMs
		}
		if p.MaxBackoffMs > 0 {
			maxB = p.MaxBackoffMs
		}
		if p.Multiplier >= 1 {
			mult = p.Multiplier
		}
		if p.Jitter != 0 {
			jitter = p.Jitter
		}
	}
	d := float64(initial) * math.Pow(mult, float64(max(n-1, 0)))
	if d > float64(maxB) || math.IsInf(d, 0) || math.IsNaN(d) {
		d = float64(maxB)
	}
	if jitter > 0 {
		jitter = min(jitter, 1)
		// A fraction in [-1, 1) from the job and the failure count.
		h := mix(id ^ uint64(n)*0x9e3779b97f4a7c15)
		f := float64(h>>11)/float64(1<<53)*2 - 1
		d *= 1 + jitter*f
	}
	return max(int64(d), 0)
}

// mix is splitmix64's finalizer.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
