package machine

import (
	"fmt"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/queue/queuewire"
)

// Cold jobs.
//
// A queue may hold millions of jobs scheduled far ahead. Kept as job
// objects, they would cost every replica's garbage collector a million
// objects to mark at each cycle, for jobs that wait for hours. So a
// pending job without a group and without dependencies whose run time is
// after its queue's horizon (queue.hotUntil) is cold: the machine keeps
// only its run time and ID, in a pointer-free heap and map that the
// collector does not scan, and reads the rest from the job's spec and
// state records when it promotes the job, once the horizon passes it.
//
// The horizon is state: it is advanced by commands (to the command's time
// plus Machine.horizonMs once it is less than seven eighths of that
// ahead, so that it costs a write every 15 s or so) and stored in the
// queue's horizon key, so that whether a job is cold depends only on the
// applied state and Load rebuilds the same split. Every command that
// touches a queue with cold jobs, and every placement of a job that would
// be cold, advances the horizon first if it fell behind, so no cold job is
// due at the command's time and claims choose among hot jobs only, as
// before; the leader's Due lists the queues whose horizon is to move, so
// that jobs are promoted before they are due.

const (
	// defaultHorizonMs is how far ahead of the time of the latest command
	// a pending job is kept in memory. Two minutes: jobs due sooner (short
	// delays and retries) would be promoted again at once, the leader
	// promotes the others a minute or more before they are due, and the
	// scheduled jobs in memory are only those due in the next two minutes.
	defaultHorizonMs = 2 * 60 * 1000
	// defaultPromoteBudget bounds the jobs a command promotes ahead of
	// their time; the leader's next tick promotes the next ones. Jobs due
	// at the command's time, and jobs due at the same time as the last one
	// promoted, are promoted whatever the budget.
	defaultPromoteBudget = 4096
)

// coldRef is a cold job's place in its queue's cold heap.
type coldRef struct {
	runAt int64
	id    uint64
}

func (a coldRef) less(b coldRef) bool {
	if a.runAt != b.runAt {
		return a.runAt < b.runAt
	}
	return a.id < b.id
}

// coldSet is a queue's cold jobs. at holds them (ID to run time); heap
// orders them by run time and ID, and may hold stale entries: an entry
// whose job is no longer in at with that run time. A cold job leaves out
// of order only when it is cancelled, and a cancelled job never becomes
// pending again, so no job has two entries that are not stale.
type coldSet struct {
	heap  []coldRef
	at    map[uint64]int64
	stale int
	// deps are the pending jobs that wait for a cold job (its dependents,
	// which are never cold themselves: they have dependencies).
	deps map[uint64][]*job
}

func (c *coldSet) len() int { return len(c.at) }

func (c *coldSet) has(id uint64) bool {
	_, ok := c.at[id]
	return ok
}

func (c *coldSet) valid(r coldRef) bool {
	at, ok := c.at[r.id]
	return ok && at == r.runAt
}

// addDependent notes that pending job d waits for cold job id.
func (c *coldSet) addDependent(id uint64, d *job) {
	if c.deps == nil {
		c.deps = map[uint64][]*job{}
	}
	c.deps[id] = append(c.deps[id], d)
}

func (c *coldSet) add(id uint64, runAt int64) {
	if c.at == nil {
		c.at = map[uint64]int64{}
	}
	c.at[id] = runAt
	c.heap = append(c.heap, coldRef{runAt: runAt, id: id})
	c.up(len(c.heap) - 1)
}

// top returns the first cold job by run time and ID, dropping the stale
// entries above it.
func (c *coldSet) top() (coldRef, bool) {
	for len(c.heap) > 0 {
		r := c.heap[0]
		if c.valid(r) {
			return r, true
		}
		c.popTop()
		c.stale--
	}
	return coldRef{}, false
}

// take removes the cold job id and returns its waiting dependents. Its
// heap entry goes stale unless it is the top.
func (c *coldSet) take(id uint64) []*job {
	if len(c.heap) > 0 && c.heap[0].id == id && c.valid(c.heap[0]) {
		c.popTop()
	} else {
		c.stale++
	}
	delete(c.at, id)
	deps := c.deps[id]
	delete(c.deps, id)
	if c.stale > 1024 && c.stale > len(c.heap)/2 {
		c.compact()
	}
	return deps
}

func (c *coldSet) popTop() {
	last := len(c.heap) - 1
	c.heap[0] = c.heap[last]
	c.heap = c.heap[:last]
	if last > 0 {
		c.down(0)
	}
}

// compact drops the stale entries and orders the heap again.
func (c *coldSet) compact() {
	h := c.heap[:0]
	for _, r := range c.heap {
		if c.valid(r) {
			h = append(h, r)
		}
	}
	clear(c.heap[len(h):])
	c.heap, c.stale = h, 0
	for i := len(h)/2 - 1; i >= 0; i-- {
		c.down(i)
	}
}

func (c *coldSet) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !c.heap[i].less(c.heap[p]) {
			return
		}
		c.heap[i], c.heap[p] = c.heap[p], c.heap[i]
		i = p
	}
}

func (c *coldSet) down(i int) {
	n := len(c.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && c.heap[r].less(c.heap[l]) {
			m = r
		}
		if !c.heap[m].less(c.heap[i]) {
			return
		}
		c.heap[i], c.heap[m] = c.heap[m], c.heap[i]
		i = m
	}
}

// dueAt counts the cold jobs due at now and returns the earliest run time
// among them (0: none), visiting only the entries due at now. It changes
// nothing: the queries call it.
func (c *coldSet) dueAt(now int64) (n, oldest int64) {
	stack := []int{0}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if i >= len(c.heap) || c.heap[i].runAt > now {
			continue
		}
		if r := c.heap[i]; c.valid(r) {
			n++
			if oldest == 0 || r.runAt < oldest {
				oldest = r.runAt
			}
		}
		stack = append(stack, 2*i+1, 2*i+2)
	}
	return n, oldest
}

// mayBeCold reports whether pending job j is of the kind kept cold when
// it is due after its queue's horizon: no group (a group offers its jobs
// in push order, one object each) and no dependencies (it waits for
// others, which hold it).
func mayBeCold(j *job) bool { return j.grp == nil && len(j.deps) == 0 }

// horizonFresh reports whether q's horizon is far enough ahead of now.
func (m *Machine) horizonFresh(q *queue, now int64) bool {
	return q.hotUntil >= now+m.horizonMs-m.horizonMs/8
}

// advance moves q's horizon ahead of the command's time if it fell
// behind, promoting the cold jobs it passes: every one due at the
// command's time, and the others up to the command's budget (then the
// horizon stops after the last one promoted, and the leader's next look
// finds it behind again).
func (a *applier) advance(q *queue) error {
	if a.now == 0 || a.m.horizonFresh(q, a.now) {
		return nil
	}
	target := a.now + a.m.horizonMs
	until := target
	last, some := int64(0), false
	for {
		r, ok := q.cold.top()
		if !ok || r.runAt > target {
			break
		}
		if r.runAt > a.now && a.promoted >= a.m.promoteBudget && !(some && r.runAt == last) {
			until = max(q.hotUntil, a.now)
			if some {
				until = max(until, last)
			}
			break
		}
		if err := a.promote(q, r.id); err != nil {
			return err
		}
		last, some = r.runAt, true
	}
	if until <= q.hotUntil {
		return nil
	}
	q.hotUntil = until
	a.w.putRaw(horizonKey(q.name), strconv.AppendInt(nil, until, 10), 0)
	return nil
}

// promote makes cold job id a job object again, and a candidate of
// claims.
func (a *applier) promote(q *queue, id uint64) error {
	j, err := a.thaw(q, id)
	if err != nil {
		return err
	}
	a.promoted++
	q.insertCand(j, noTime)
	return nil
}

// thaw reads cold job id from its records and makes it a job object of q
// again (not a candidate yet).
func (a *applier) thaw(q *queue, id uint64) (*job, error) {
	j := newJob(q, id)
	sv, err := a.w.get(JobKey(q.name, id))
	if err != nil {
		return nil, err
	}
	stv, err := a.w.get(StateKey(q.name, id))
	if err != nil {
		return nil, err
	}
	if sv == nil || stv == nil {
		return nil, fmt.Errorf("cold job %d of queue %s has no spec or no state", id, q.name)
	}
	var rec queuewire.SpecRecord
	if err := proto.Unmarshal(sv, &rec); err != nil {
		return nil, fmt.Errorf("decode spec of job %d: %w", id, err)
	}
	var st queuewire.StateRecord
	if err := proto.Unmarshal(stv, &st); err != nil {
		return nil, fmt.Errorf("decode state of job %d: %w", id, err)
	}
	setSpec(j, rec.Spec, rec.CreatedAtMs)
	setState(j, &st)
	if j.state != queuepb.State_PENDING || rec.Spec.GetGroup() != "" || len(j.deps) > 0 {
		return nil, fmt.Errorf("cold job %d of queue %s is %s, group %q, with %d dependencies", id, q.name, j.state, rec.Spec.GetGroup(), len(j.deps))
	}
	j.dependents = q.cold.take(id)
	q.jobs[id] = j
	return j, nil
}

// freeze makes pending job j, due after its queue's horizon, cold.
func (q *queue) freeze(j *job) {
	var deps []*job
	for _, d := range j.dependents {
		if d.state == queuepb.State_PENDING && d.unmet > 0 {
			deps = append(deps, d)
		}
	}
	for _, d := range deps {
		q.cold.addDependent(j.id, d)
	}
	delete(q.jobs, j.id)
	q.cold.add(j.id, j.runAt)
}

// coldState reads the state record of cold job id.
func (a *applier) coldState(q *queue, id uint64) (*queuewire.StateRecord, error) {
	v, err := a.w.get(StateKey(q.name, id))
	if err != nil {
		return nil, err
	}
	var st queuewire.StateRecord
	if err := proto.Unmarshal(v, &st); err != nil {
		return nil, fmt.Errorf("decode state of job %d: %w", id, err)
	}
	return &st, nil
}

// setSpec sets what j keeps of its spec.
func setSpec(j *job, s *queuepb.JobSpec, createdAt int64) {
	j.createdAt = createdAt
	if s == nil {
		return
	}
	j.prio, j.maxAttempts, j.retry, j.timeoutMs, j.idem, j.deps = s.Priority, s.MaxAttempts, s.Retry, s.TimeoutMs, s.IdempotencyKey, s.DependsOn
}

// setState sets j's state from its record.
func setState(j *job, st *queuewire.StateRecord) {
	j.state, j.runAt, j.attempt, j.failures, j.lost = st.State, st.RunAtMs, st.Attempt, st.Failures, st.Lost
	j.token, j.lease, j.worker, j.claimedAt, j.deadline = st.Token, st.Lease, st.Worker, st.ClaimedAtMs, st.DeadlineMs
	j.finishedAt, j.cancelReq, j.hasOut, j.availAt = st.FinishedAtMs, st.CancelRequested, st.HasOutput, st.AvailableAtMs
}
