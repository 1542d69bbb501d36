package machine

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/queue/queuewire"
)

// loadChunk is how many keys Load reads at a time.
const loadChunk = 4096

// loadLocked builds the in-memory state from the queue keys in r (the
// newest version of each: r holds exactly the applied state).
func (m *Machine) loadLocked(r pebble.Reader) error {
	start := []byte(keys.QueuesPrefix)
	end := keys.PrefixEnd(start)
	l := &loader{specs: map[*queue]map[uint64]loadSpec{}, groups: map[*job]string{}}
	for {
		res, err := mvcc.Range(r, start, end, math.MaxInt64, mvcc.RangeOptions{Limit: loadChunk, Uncounted: true})
		if err != nil {
			return fmt.Errorf("read queue keys: %w", err)
		}
		for _, kv := range res.KVs {
			if err := m.loadKeyLocked(kv.Key, kv.Value, l); err != nil {
				return err
			}
		}
		if len(res.KVs) < loadChunk {
			break
		}
		start = append(append([]byte(nil), res.KVs[len(res.KVs)-1].Key...), 0)
	}
	for q, specs := range l.specs {
		for id := range specs {
			return fmt.Errorf("queue %s: job %d has a spec but no state", q.name, id)
		}
	}
	for _, q := range m.mu.queues {
		if err := m.linkLocked(q, l.groups); err != nil {
			return fmt.Errorf("queue %s: %w", q.name, err)
		}
	}
	return nil
}

// loader is what Load keeps of the keys read so far.
type loader struct {
	// specs are the specs of the jobs whose state is not read yet (a
	// queue's specs come before its states in key order), as little of
	// them as the jobs need: most jobs of a backlog stay cold.
	specs map[*queue]map[uint64]loadSpec
	// groups are the group names of the jobs in a group.
	groups map[*job]string
}

// loadSpec is what Load keeps of a job's spec until it reads its state.
// Most specs have no retry policy, idempotency key, group or dependencies:
// they keep no pointer (full is nil).
type loadSpec struct {
	createdAt, timeoutMs int64
	prio, maxAttempts    int32
	full                 *queuepb.JobSpec
}

func (m *Machine) loadKeyLocked(key, value []byte, l *loader) error {
	pk, err := parseKey(key)
	if err != nil {
		return err
	}
	q := m.queueLocked(pk.queue)
	bad := func(err error) error { return fmt.Errorf("decode %q: %w", key, err) }
	switch pk.kind {
	case kindConfig:
		c := &queuepb.QueueConfig{}
		if err := proto.Unmarshal(value, c); err != nil {
			return bad(err)
		}
		q.cfg = c
	case kindHorizon:
		t, err := strconv.ParseInt(string(value), 10, 64)
		if err != nil {
			return bad(err)
		}
		q.hotUntil = t
	case kindJob:
		id, err := parseID(pk.rest)
		if err != nil {
			return bad(err)
		}
		var rec queuewire.SpecRecord
		if err := proto.Unmarshal(value, &rec); err != nil {
			return bad(err)
		}
		s := rec.Spec
		if s == nil {
			s = &queuepb.JobSpec{}
		}
		ls := loadSpec{createdAt: rec.CreatedAtMs, timeoutMs: s.TimeoutMs, prio: s.Priority, maxAttempts: s.MaxAttempts}
		if s.Retry != nil || s.IdempotencyKey != "" || s.Group != "" || len(s.DependsOn) > 0 {
			s.Payload = nil
			ls.full = s
		}
		if s.IdempotencyKey != "" {
			q.idem[s.IdempotencyKey] = id
		}
		if l.specs[q] == nil {
			l.specs[q] = map[uint64]loadSpec{}
		}
		l.specs[q][id] = ls
	case kindState:
		id, err := parseID(pk.rest)
		if err != nil {
			return bad(err)
		}
		ls, ok := l.specs[q][id]
		if !ok {
			return fmt.Errorf("queue %s: job %d has a state but no spec", q.name, id)
		}
		delete(l.specs[q], id)
		var st queuewire.StateRecord
		if err := proto.Unmarshal(value, &st); err != nil {
			return bad(err)
		}
		if st.State == queuepb.State_STATE_UNSPECIFIED {
			return fmt.Errorf("queue %s: job %d has a state without a state", q.name, id)
		}
		group := ls.full.GetGroup()
		if st.State == queuepb.State_PENDING && group == "" && len(ls.full.GetDependsOn()) == 0 && st.RunAtMs > q.hotUntil {
			q.cold.add(id, st.RunAtMs)
			q.count(nil, queuepb.State_STATE_UNSPECIFIED, queuepb.State_PENDING)
			return nil
		}
		j := newJob(q, id)
		if ls.full != nil {
			setSpec(j, ls.full, ls.createdAt)
		} else {
			j.createdAt, j.timeoutMs, j.prio, j.maxAttempts = ls.createdAt, ls.timeoutMs, ls.prio, ls.maxAttempts
		}
		setState(j, &st)
		q.jobs[id] = j
		if group != "" {
			l.groups[j] = group
		}
	case kindOut, kindIdem:
		// Outputs are read when needed; idempotency keys are in the specs.
	case kindGroup:
		var g queuewire.GroupRecord
		if err := proto.Unmarshal(value, &g); err != nil {
			return bad(err)
		}
		q.groupFor(pk.rest).lastServed = g.LastServedMs
	case kindWorker:
		var w queuewire.WorkerRecord
		if err := proto.Unmarshal(value, &w); err != nil {
			return bad(err)
		}
		q.workers[pk.rest] = &worker{name: pk.rest, lease: w.Lease, capacity: w.Capacity, stream: w.Stream, idx: -1}
	case kindCron:
		var s queuewire.ScheduleRecord
		if err := proto.Unmarshal(value, &s); err != nil {
			return bad(err)
		}
		if s.Schedule != nil {
			q.schedules[pk.rest] = &schedule{rec: s.Schedule}
		}
	default:
		return fmt.Errorf("queue key %q of unknown kind", key)
	}
	return nil
}

// linkLocked derives what the records imply: counts, groups, dependencies,
// workers' loads, leases and heaps.
func (m *Machine) linkLocked(q *queue, groups map[*job]string) error {
	ids := make([]uint64, 0, len(q.jobs))
	for id := range q.jobs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		j := q.jobs[id]
		gname := groups[j]
		q.count(j, queuepb.State_STATE_UNSPECIFIED, j.state)
		if j.terminal() {
			if gname != "" {
				// Its group is forgotten once it has no job left to run;
				// a redrive takes it up again by name.
				j.grp = &group{name: gname}
			}
			q.finished(j).push(j)
			continue
		}
		if gname != "" {
			j.grp = q.groupFor(gname)
			j.grp.jobs = append(j.grp.jobs, j) // in ID order
		}
		if j.state == queuepb.State_RUNNING {
			q.deadlines.push(j)
			m.leaseAddLocked(j)
			if j.grp != nil {
				j.grp.running++
			}
			if w := q.workers[j.worker]; w != nil && w.lease == j.lease {
				w.running++
			}
			continue
		}
		// Pending: its dependencies that are not completed. One that is
		// gone was completed and swept (one that ended otherwise cancelled
		// its dependents).
		for _, d := range j.deps {
			dj := q.jobs[d]
			if dj == nil {
				if q.cold.has(d) {
					j.unmet++
					q.cold.addDependent(d, j)
				}
				continue
			}
			if dj.state == queuepb.State_COMPLETED {
				continue
			}
			j.unmet++
			dj.dependents = append(dj.dependents, j)
		}
		if j.unmet > 0 {
			q.waiting++
		} else if j.grp == nil {
			q.insertCand(j, noTime)
		}
	}
	for _, g := range q.groups {
		if len(g.jobs) == 0 {
			continue // a record left by a group whose last job just ended
		}
		if g.running < q.groupLimit() {
			for _, j := range g.jobs {
				if j.state != queuepb.State_PENDING {
					continue
				}
				if j.unmet == 0 {
					g.cand = j
					q.insertCand(j, noTime)
				}
				break
			}
		}
	}
	for _, w := range q.workers {
		m.leaseWorkerAddLocked(q, w)
		if w.hasRoom() {
			q.roomy.push(w)
		}
	}
	for _, j := range q.jobs {
		slices.SortFunc(j.dependents, func(x, y *job) int { return cmp.Compare(x.id, y.id) })
	}
	return nil
}

// parseIdem reads the job ID an idempotency key names.
func parseIdem(v []byte) (uint64, error) { return strconv.ParseUint(string(v), 10, 64) }
