package machine

import (
	"cmp"
	"math"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/queue/queuewire"
)

// What the node's queue service reads of the applied state. Each method
// takes the lock, so it sees the state between two applied commands.

// Stats is a queue's counts as applied on this node.
type Stats struct {
	Available, Scheduled, Waiting, Running, Completed, Dead, Cancelled int64
	// OldestAvailable is the run time of the oldest available job (0:
	// none).
	OldestAvailable int64
	// Workers attached with capacity, and their total capacity.
	Workers, Capacity int64
	Config            *queuepb.QueueConfig
	Schedules         int64
}

// Stats returns queue name's counts at time now.
func (m *Machine) Stats(name string, now int64) Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	q := m.mu.queues[name]
	if q == nil {
		return Stats{Config: &queuepb.QueueConfig{}}
	}
	s := Stats{
		Waiting: q.waiting, Running: q.running, Completed: q.completed, Dead: q.dead, Cancelled: q.cancelled,
		Config: proto.Clone(q.config()).(*queuepb.QueueConfig), Schedules: int64(len(q.schedules)),
	}
	// Scheduled: candidates not due yet (jobs behind a group's candidate
	// count as available). Both heaps are ordered by run time: sched's due
	// jobs are counted by visiting only them (few: claims move them to
	// ready), its oldest due job is its top; age holds jobs not due only
	// if a clock went back, which ageMaxRunAt rules out without a walk.
	// Stats runs under the machine's lock, which apply takes: a walk of a
	// backlog of a million jobs per call held apply back.
	s.Scheduled = int64(q.sched.Len()) - q.sched.countAtMost(now)
	if t := q.sched.top(); t != nil && t.runAt <= now {
		s.OldestAvailable = t.runAt
	}
	if q.ageMaxRunAt > now {
		for _, j := range q.age.items {
			if j.runAt > now {
				s.Scheduled++
			}
		}
	}
	if t := q.age.top(); t != nil && t.runAt <= now && (s.OldestAvailable == 0 || t.runAt < s.OldestAvailable) {
		s.OldestAvailable = t.runAt
	}
	// Cold jobs are all due after the horizon, which the latest command
	// on the queue put ahead of its time: they are walked only if now
	// passed it (the queue was left alone since).
	if n := int64(q.cold.len()); n > 0 {
		var due, oldest int64
		if now > q.hotUntil {
			due, oldest = q.cold.dueAt(now)
		}
		s.Scheduled += n - due
		if oldest != 0 && (s.OldestAvailable == 0 || oldest < s.OldestAvailable) {
			s.OldestAvailable = oldest
		}
	}
	s.Available = q.pending - q.waiting - s.Scheduled
	for _, w := range q.workers {
		if w.capacity > 0 {
			s.Workers++
			s.Capacity += int64(w.capacity)
		}
	}
	return s
}

// Queues returns the names of the queues with state, sorted.
func (m *Machine) Queues() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedKeys(m.mu.queues)
}

// Claimed returns the jobs running for worker on lease in queue name, by
// ID: what its claim stream must deliver when it (re)connects.
func (m *Machine) Claimed(name, worker string, lease int64) []Claim {
	m.mu.Lock()
	defer m.mu.Unlock()
	q := m.mu.queues[name]
	if q == nil {
		return nil
	}
	var out []Claim
	for j := range m.mu.leaseJobs[lease] {
		if j.q == q && j.worker == worker && j.state == queuepb.State_RUNNING {
			out = append(out, Claim{Queue: name, Worker: worker, Lease: lease, ID: j.id, Token: j.token, Attempt: j.attempt,
				AvailableAt: j.availAt, ClaimedAt: j.claimedAt, Deadline: j.deadline})
		}
	}
	slices.SortFunc(out, func(a, b Claim) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// CancelRequested returns the running jobs of worker on lease whose cancel
// was asked, so that a reconnecting stream tells the worker again.
func (m *Machine) CancelRequested(name, worker string, lease int64) []Revocation {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Revocation
	for j := range m.mu.leaseJobs[lease] {
		if j.q.name == name && j.worker == worker && j.state == queuepb.State_RUNNING && j.cancelReq {
			out = append(out, Revocation{Queue: name, Worker: worker, Lease: lease, ID: j.id, Token: j.token, Reason: "cancelled"})
		}
	}
	return out
}

// Waiting reports whether job id of queue name waits for dependencies.
func (m *Machine) Waiting(name string, id uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if q := m.mu.queues[name]; q != nil {
		if j := q.jobs[id]; j != nil {
			return j.state == queuepb.State_PENDING && j.unmet > 0
		}
	}
	return false
}

// ScheduleInfo is a schedule as the leader needs it to fire it.
type ScheduleInfo struct {
	Queue    string
	Schedule *queuepb.Schedule
}

// Due is the time-driven work due at some time, for the range leader.
type Due struct {
	// Dispatch are the queues with available jobs and workers with room,
	// and those whose horizon is to be advanced (see cold.go).
	Dispatch []string
	// Expire are running attempts past their deadline; Sweep finished jobs
	// past their retention.
	Expire, Sweep []*queuewire.JobRef
	// Schedules are every schedule (the leader computes their firings).
	Schedules []ScheduleInfo
	// Next is when the next of these comes due (math.MaxInt64: none known),
	// not counting schedules.
	Next int64
}

// Due returns the work due at now, at most limit expiries and sweeps.
func (m *Machine) Due(now int64, limit int) Due {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := Due{Next: math.MaxInt64}
	for _, name := range sortedKeys(m.mu.queues) {
		q := m.mu.queues[name]
		due := false
		if q.cold.len() > 0 {
			// Its horizon is to be advanced (by a command that touches
			// the queue) before its cold jobs come near.
			if at := q.hotUntil - m.horizonMs + m.horizonMs/8; now > at {
				due = true
			} else {
				d.Next = min(d.Next, at+1)
			}
		}
		if q.roomy.Len() > 0 && !q.paused() && (q.maxRunning() == 0 || q.running < q.maxRunning()) {
			if t := q.age.top(); t != nil && t.runAt <= now {
				due = true
			}
			if t := q.sched.top(); t != nil {
				if t.runAt <= now {
					due = true
				} else {
					d.Next = min(d.Next, t.runAt)
				}
			}
		}
		if due {
			d.Dispatch = append(d.Dispatch, name)
		}
		// The heaps are in heap order, not sorted: take from the top by
		// walking the part of the tree that is due.
		collect := func(h *jobHeap, at func(*job) int64, out *[]*queuewire.JobRef) {
			var walk func(i int)
			walk = func(i int) {
				if i >= len(h.items) || len(*out) >= limit {
					return
				}
				j := h.items[i]
				if at(j) > now {
					d.Next = min(d.Next, at(j))
					return
				}
				*out = append(*out, &queuewire.JobRef{Queue: name, Id: j.id, Token: j.token})
				walk(2*i + 1)
				walk(2*i + 2)
			}
			walk(0)
		}
		collect(&q.deadlines, func(j *job) int64 { return j.deadline }, &d.Expire)
		collect(&q.done, q.expireAt, &d.Sweep)
		collect(&q.gone, q.expireAt, &d.Sweep)
		for _, sn := range sortedKeys(q.schedules) {
			d.Schedules = append(d.Schedules, ScheduleInfo{Queue: name, Schedule: proto.Clone(q.schedules[sn].rec).(*queuepb.Schedule)})
		}
	}
	return d
}

// Schedules returns queue name's schedules, by name.
func (m *Machine) Schedules(name string) []*queuepb.Schedule {
	m.mu.Lock()
	defer m.mu.Unlock()
	q := m.mu.queues[name]
	if q == nil {
		return nil
	}
	var out []*queuepb.Schedule
	for _, sn := range sortedKeys(q.schedules) {
		out = append(out, proto.Clone(q.schedules[sn].rec).(*queuepb.Schedule))
	}
	return out
}
