package machine

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/queue/queuewire"
	"github.com/synod-io/synod/internal/raftcmd"
)

// state is the in-memory state as text, for comparing a machine that
// applied commands with one loaded from the same store.
func (m *Machine) state() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	for _, qn := range sortedKeys(m.mu.queues) {
		q := m.mu.queues[qn]
		fmt.Fprintf(&b, "queue %s cfg=%v p=%d w=%d r=%d c=%d d=%d x=%d\n", qn, q.cfg, q.pending, q.waiting, q.running, q.completed, q.dead, q.cancelled)
		ids := make([]uint64, 0, len(q.jobs))
		for id := range q.jobs {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			j := q.jobs[id]
			var deps []uint64
			for _, d := range j.dependents {
				if d.state == queuepb.State_PENDING && d.unmet > 0 {
					deps = append(deps, d.id)
				}
			}
			grp := ""
			if j.grp != nil {
				grp = j.grp.name
			}
			fmt.Fprintf(&b, " job %d %v prio=%d run=%d g=%q unmet=%d deps=%v att=%d f=%d l=%d tok=%d lease=%d w=%s dl=%d fin=%d exp=%d cr=%v out=%v cand=%v\n",
				id, j.state, j.prio, j.runAt, grp, j.unmet, deps, j.attempt, j.failures, j.lost, j.token, j.lease, j.worker,
				j.deadline, j.finishedAt, q.expireAt(j), j.cancelReq, j.hasOut, j.readyIdx >= 0 || j.schedIdx >= 0)
		}
		// Cold jobs, by ID, with the jobs that wait for them.
		fmt.Fprintf(&b, " horizon %d cold %d\n", q.hotUntil, q.cold.len())
		cold := make([]uint64, 0, q.cold.len())
		for id := range q.cold.at {
			cold = append(cold, id)
		}
		slices.Sort(cold)
		for _, id := range cold {
			var deps []uint64
			for _, d := range q.cold.deps[id] {
				if d.state == queuepb.State_PENDING && d.unmet > 0 {
					deps = append(deps, d.id)
				}
			}
			fmt.Fprintf(&b, " cold %d run=%d deps=%v\n", id, q.cold.at[id], deps)
		}
		for _, gn := range sortedKeys(q.groups) {
			g := q.groups[gn]
			var js []uint64
			for _, j := range g.jobs {
				js = append(js, j.id)
			}
			cand := uint64(0)
			if g.cand != nil {
				cand = g.cand.id
			}
			fmt.Fprintf(&b, " group %q jobs=%v running=%d served=%d cand=%d\n", gn, js, g.running, g.lastServed, cand)
		}
		for _, wn := range sortedKeys(q.workers) {
			w := q.workers[wn]
			fmt.Fprintf(&b, " worker %s lease=%d cap=%d stream=%s running=%d roomy=%v\n", wn, w.lease, w.capacity, w.stream, w.running, q.roomy.contains(w))
		}
		for _, sn := range sortedKeys(q.schedules) {
			fmt.Fprintf(&b, " schedule %s %v\n", sn, q.schedules[sn].rec)
		}
		for _, k := range sortedKeys(q.idem) {
			fmt.Fprintf(&b, " idem %s=%d\n", k, q.idem[k])
		}
	}
	for _, l := range sortedLeases(m.mu.leaseJobs) {
		var js []uint64
		for j := range m.mu.leaseJobs[l] {
			js = append(js, j.id)
		}
		slices.Sort(js)
		fmt.Fprintf(&b, "lease %d jobs=%v\n", l, js)
	}
	return b.String()
}

// coldIDs returns the cold jobs, by queue and ID.
func (m *Machine) coldIDs() map[[2]string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[[2]string]bool{}
	for qn, q := range m.mu.queues {
		for id := range q.cold.at {
			out[[2]string{qn, fmt.Sprint(id)}] = true
		}
	}
	return out
}

func sortedLeases(m map[int64]map[*job]struct{}) []int64 {
	var ls []int64
	for l := range m {
		ls = append(ls, l)
	}
	slices.Sort(ls)
	return ls
}

// workload draws random commands, tracking claims from the effects.
type workload struct {
	rng     *rand.Rand
	now     int64
	leases  []int64
	nextL   int64
	running map[[2]string]Claim // by queue and ID
	ids     map[string][]uint64
}

var queues = []string{"a", "b"}

func (w *workload) pick(s []string) string { return s[w.rng.IntN(len(s))] }

func (w *workload) spec(q string) *queuepb.JobSpec {
	s := &queuepb.JobSpec{Priority: int32(w.rng.IntN(3)), Payload: []byte("p")}
	if w.rng.IntN(3) == 0 {
		s.Group = w.pick([]string{"g1", "g2", "g3"})
	}
	switch w.rng.IntN(10) {
	case 0, 1:
		s.DelayMs = int64(w.rng.IntN(300))
	case 2, 3:
		// After the horizon (testHorizonMs): cold for a while.
		s.DelayMs = int64(w.rng.IntN(3000))
	}
	if w.rng.IntN(5) == 0 {
		s.IdempotencyKey = fmt.Sprint("k", w.rng.IntN(10))
	}
	if ids := w.ids[q]; len(ids) > 0 && w.rng.IntN(6) == 0 {
		s.DependsOn = []uint64{ids[w.rng.IntN(len(ids))]}
	}
	s.MaxAttempts = int32(1 + w.rng.IntN(3))
	s.Retry = &queuepb.RetryPolicy{InitialBackoffMs: int64(1 + w.rng.IntN(100))}
	if w.rng.IntN(4) == 0 {
		s.Retry = &queuepb.RetryPolicy{InitialBackoffMs: int64(1 + w.rng.IntN(2000))}
	}
	s.TimeoutMs = int64(50 + w.rng.IntN(400))
	return s
}

func (w *workload) someRunning(q string) (Claim, bool) {
	var cs []Claim
	for k, c := range w.running {
		if k[0] == q {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		return Claim{}, false
	}
	slices.SortFunc(cs, func(a, b Claim) int { return int(a.ID) - int(b.ID) })
	return cs[w.rng.IntN(len(cs))], true
}

func (w *workload) op() *queuewire.Op {
	q := w.pick(queues)
	switch n := w.rng.IntN(20); {
	case n < 5:
		var specs []*queuepb.JobSpec
		for range 1 + w.rng.IntN(3) {
			specs = append(specs, w.spec(q))
		}
		return pushOp(q, specs...)
	case n < 7 && len(w.leases) > 0:
		l := w.leases[w.rng.IntN(len(w.leases))]
		return attachOp(q, fmt.Sprint("w", w.rng.IntN(4)), l, int32(w.rng.IntN(4)))
	case n < 8:
		return detachOp(q, fmt.Sprint("w", w.rng.IntN(4)))
	case n < 14:
		c, ok := w.someRunning(q)
		if !ok {
			return pushOp(q, w.spec(q))
		}
		tok := c.Token
		if w.rng.IntN(8) == 0 {
			tok-- // stale
		}
		if w.rng.IntN(3) == 0 {
			return failOp(q, c.ID, tok, "boom", w.rng.IntN(4) == 0)
		}
		return completeOp(q, c.ID, tok, strings.Repeat("r", w.rng.IntN(3)))
	case n < 15:
		if ids := w.ids[q]; len(ids) > 0 {
			return cancelOp(q, ids[w.rng.IntN(len(ids))])
		}
	case n < 16:
		c := &queuepb.ConfigureRequest{}
		switch w.rng.IntN(4) {
		case 0:
			c.Paused = proto.Bool(w.rng.IntN(3) == 0)
		case 1:
			c.MaxRunning = proto.Int32(int32(w.rng.IntN(4)))
		case 2:
			c.GroupMaxRunning = proto.Int32(int32(w.rng.IntN(3)))
		case 3:
			c.CompletedRetentionMs = proto.Int64(int64(w.rng.IntN(500)) - 50)
		}
		return configureOp(q, c)
	case n < 17:
		return &queuewire.Op{Queue: q, Op: &queuewire.Op_Redrive{Redrive: &queuepb.RedriveRequest{Rate: int32(1 + w.rng.IntN(3))}}}
	case n < 18:
		return &queuewire.Op{Queue: q, Op: &queuewire.Op_Purge{Purge: &queuepb.PurgeRequest{}}}
	case n < 19:
		if c, ok := w.someRunning(q); ok {
			return &queuewire.Op{Queue: q, Op: &queuewire.Op_Extend{Extend: &queuepb.ExtendRequest{Id: c.ID, Token: c.Token, TimeoutMs: int64(w.rng.IntN(300))}}}
		}
	default:
		return &queuewire.Op{Queue: q, Op: &queuewire.Op_PutSchedule{PutSchedule: &queuepb.Schedule{Name: "s", Cron: "@every 1s", Job: w.spec(q)}}}
	}
	return pushOp(q, w.spec(q))
}

// next draws the next command, stepping the clock (sometimes back, as a
// node with a slower clock would).
func (w *workload) next(m *Machine) raftcmd.Command {
	w.now += int64(w.rng.IntN(60)) - 10
	switch n := w.rng.IntN(30); {
	case n == 0:
		w.nextL++
		w.leases = append(w.leases, w.nextL)
		return grant(w.nextL)
	case n == 1 && len(w.leases) > 0:
		i := w.rng.IntN(len(w.leases))
		l := w.leases[i]
		w.leases = slices.Delete(w.leases, i, i+1)
		return revoke(l)
	case n < 8:
		d := m.Due(w.now, 5)
		t := &queuewire.Tick{NowMs: w.now, Dispatch: d.Dispatch, Expire: d.Expire, Sweep: d.Sweep}
		for _, s := range d.Schedules {
			if w.rng.IntN(2) == 0 {
				t.Fire = append(t.Fire, &queuewire.Firing{Queue: s.Queue, Schedule: s.Schedule.Name, TimesMs: []int64{s.Schedule.LastFiredMs + 1000}})
			}
		}
		return tickCmd(t)
	}
	var ops []*queuewire.Op
	for range 1 + w.rng.IntN(4) {
		ops = append(ops, w.op())
	}
	return batch(w.now, ops...)
}

// observe tracks claims and pushed IDs from a command's effects and
// results.
func (w *workload) observe(res []OpResultsOrNil, effs []*Effect) {
	for _, e := range effs {
		for _, c := range e.Claimed {
			w.running[[2]string{c.Queue, fmt.Sprint(c.ID)}] = c
		}
		for _, f := range e.Finished {
			delete(w.running, [2]string{f.Queue, fmt.Sprint(f.ID)})
		}
		for _, r := range e.Revoked {
			if r.Reason != "cancelled" {
				delete(w.running, [2]string{r.Queue, fmt.Sprint(r.ID)})
			}
		}
	}
	for _, rs := range res {
		for _, r := range rs.results {
			if p, ok := r.Resp.(*queuepb.PushResponse); ok {
				w.ids[rs.queue[0]] = append(w.ids[rs.queue[0]], p.Ids...)
			}
		}
	}
}

// OpResultsOrNil pairs a batch's results with its queues (test only).
type OpResultsOrNil struct {
	results []OpResult
	queue   []string
}

func TestReplicasThatRestartDecideAlike(t *testing.T) {
	seeds, steps := uint64(8), 1200
	if raceEnabled {
		seeds, steps = 2, 800
	}
	for seed := uint64(1); seed <= seeds; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, seed))
			a, b := newRep(t), newRep(t)
			a.horizon, b.horizon = testHorizonMs, testHorizonMs
			a.reload()
			b.reload()
			w := &workload{rng: rng, now: 100000, running: map[[2]string]Claim{}, ids: map[string][]uint64{}}
			stats := map[string]int{}
			cold := map[[2]string]bool{}
			for step := 0; step < steps; step++ {
				cmd := w.next(a.ext)
				resA, effs := a.apply(cmd)
				resB, _ := b.apply(cmd)
				var rs []OpResultsOrNil
				if cmd.Kind == KindBatch && resA[0].Err == nil {
					var bt queuewire.Batch
					_ = proto.Unmarshal(cmd.Payload, &bt)
					for i, r := range resA[0].Resp.(*BatchResult).Results {
						rs = append(rs, OpResultsOrNil{results: []OpResult{r}, queue: []string{bt.Ops[i].Queue}})
						if r.Err != nil {
							stats["refused"]++
						} else {
							stats[fmt.Sprintf("%T", bt.Ops[i].Op)]++
						}
					}
					if fmt.Sprint(resA[0].Resp) != fmt.Sprint(resB[0].Resp) {
						t.Fatalf("step %d: results differ:\n%v\n%v", step, resA[0].Resp, resB[0].Resp)
					}
				}
				for _, e := range effs {
					stats["claimed"] += len(e.Claimed)
					stats["revoked"] += len(e.Revoked)
				}
				w.observe(rs, effs)
				// Jobs that went cold, and came back (promoted or cancelled).
				now := a.ext.coldIDs()
				for id := range now {
					if !cold[id] {
						stats["frozen"]++
					}
				}
				for id := range cold {
					if !now[id] {
						stats["thawed"]++
					}
				}
				cold = now
				if rng.IntN(40) == 0 {
					b.reload()
				}
				if step%200 == 199 {
					if da, db := a.dump(), b.dump(); da != db {
						t.Fatalf("step %d: stores differ", step)
					}
					fresh := newRepOn(t, a)
					if sa, sf := a.ext.state(), fresh.ext.state(); sa != sf {
						t.Fatalf("step %d: applied state and state loaded from the store differ:\n%s", step, diff(sa, sf))
					}
					for _, q := range queues {
						if sa, sf := a.ext.Stats(q, w.now), fresh.ext.Stats(q, w.now); fmt.Sprint(sa) != fmt.Sprint(sf) {
							t.Fatalf("step %d: stats of %s differ: applied %+v, loaded %+v", step, q, sa, sf)
						}
					}
					// (Which expiries and sweeps a limited Due returns
					// depends on the heaps' layout: the leader proposes them.)
					if da, df := a.ext.Due(w.now, 5), fresh.ext.Due(w.now, 5); !slices.Equal(da.Dispatch, df.Dispatch) || da.Next != df.Next {
						t.Fatalf("step %d: due work differs: applied %v next %d, loaded %v next %d", step, da.Dispatch, da.Next, df.Dispatch, df.Next)
					}
				}
			}
			if stats["claimed"] < 50 || stats["revoked"] < 5 || stats["refused"] < 10 || stats["thawed"] < 20 {
				t.Fatalf("the workload did too little: %v", stats)
			}
			t.Logf("%v", stats)
		})
	}
}

// testHorizonMs is the horizon of the randomized tests: the workload's
// clock moves about 25 ms a command, so that jobs go cold and come back.
const testHorizonMs = 400

// newRepOn loads a replica's store into a fresh machine.
func newRepOn(t *testing.T, r *rep) *rep {
	f := &rep{t: t, db: r.db, st: r.st, index: r.index, horizon: r.horizon, budget: r.budget}
	f.reload()
	return f
}

func diff(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for i := 0; i < max(len(la), len(lb)); i++ {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			out = append(out, "- "+x, "+ "+y)
			if len(out) > 20 {
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
