package machine

import (
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/queue/queuewire"
)

const (
	t0   = int64(1_800_000_000_000)
	hour = int64(60 * 60 * 1000)
	day  = 24 * hour
)

// coldOf returns the IDs of queue q's cold jobs, sorted.
func (r *rep) coldOf(q string) []uint64 {
	r.ext.mu.Lock()
	defer r.ext.mu.Unlock()
	var ids []uint64
	if qq := r.ext.mu.queues[q]; qq != nil {
		for id := range qq.cold.at {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// hotOf returns whether job id of queue q is a job object.
func (r *rep) hot(q string, id uint64) bool {
	r.ext.mu.Lock()
	defer r.ext.mu.Unlock()
	qq := r.ext.mu.queues[q]
	return qq != nil && qq.jobs[id] != nil
}

// checkLoad checks that a machine loaded from r's store holds what r's
// machine built by applying.
func (r *rep) checkLoad() {
	r.t.Helper()
	f := &rep{t: r.t, db: r.db, st: r.st, index: r.index, horizon: r.horizon, budget: r.budget}
	f.reload()
	if sa, sf := r.ext.state(), f.ext.state(); sa != sf {
		r.t.Fatalf("applied state and state loaded from the store differ:\n%s", diff(sa, sf))
	}
}

// lead runs the leader's loop from time from to time to, as
// internal/queue's leaderLoop does: it proposes the work due, looks again
// at once, and otherwise sleeps until the next due time.
func (r *rep) lead(from, to int64) (ticks int, effs []*Effect) {
	r.t.Helper()
	for now := from; now <= to; {
		d := r.ext.Due(now, 1000)
		if len(d.Dispatch)+len(d.Expire)+len(d.Sweep) > 0 {
			_, e := r.apply(tickCmd(&queuewire.Tick{NowMs: now, Dispatch: d.Dispatch, Expire: d.Expire, Sweep: d.Sweep}))
			effs = append(effs, e...)
			if ticks++; ticks > 100_000 {
				r.t.Fatalf("the leader ticks without end at %d: %+v", now, d)
			}
			continue
		}
		if d.Next == math.MaxInt64 {
			break
		}
		now = max(now+1, d.Next)
	}
	return ticks, effs
}

func TestColdJobsArePromotedAheadAndClaimedWhenDue(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7))
	ids := r.pushIDs(t0, "q",
		&queuepb.JobSpec{RunAtMs: t0 + day, Payload: []byte("a day"), TimeoutMs: 2 * day},
		&queuepb.JobSpec{RunAtMs: t0 + hour, Priority: 1, TimeoutMs: 2 * day},
		&queuepb.JobSpec{DelayMs: 1000, TimeoutMs: 2 * day},
	)
	if got, want := r.coldOf("q"), ids[:2]; !slices.Equal(got, want) {
		t.Fatalf("cold after the push: got %v, want %v (the job due in a second stays in memory)", got, want)
	}
	if st := r.jobState("q", ids[0]); st.State != queuepb.State_PENDING || st.RunAtMs != t0+day {
		t.Fatalf("stored state of a cold job: got %v", st)
	}
	_, effs := r.apply(batch(t0, attachOp("q", "w", 7, 5)))
	if cs := claims(effs); len(cs) != 0 {
		t.Fatalf("claimed at once: %v", cs)
	}
	if s := r.ext.Stats("q", t0); s.Scheduled != 3 || s.Available != 0 {
		t.Fatalf("stats: got %+v, want 3 scheduled", s)
	}
	r.checkLoad()

	// The leader moves the horizon ahead every few seconds; the job due
	// in an hour is promoted before its time, not claimed before it.
	ticks, effs := r.lead(t0, t0+hour-1)
	if got := claimIDs(claims(effs)); !slices.Equal(got, ids[2:]) {
		t.Fatalf("claimed in the hour: got %v, want %v", got, ids[2:])
	}
	if !r.hot("q", ids[1]) || !slices.Equal(r.coldOf("q"), ids[:1]) {
		t.Fatalf("a minute before its time: job %d hot %v, cold %v, want it hot", ids[1], r.hot("q", ids[1]), r.coldOf("q"))
	}
	if maxTicks := int(hour / (defaultHorizonMs / 8)); ticks > maxTicks+2 {
		t.Fatalf("ticks in an hour: got %d, want at most %d", ticks, maxTicks+2)
	}
	r.checkLoad()
	_, effs = r.lead(t0+hour, t0+hour)
	if cs := claims(effs); len(cs) != 1 || cs[0].ID != ids[1] || cs[0].ClaimedAt != t0+hour {
		t.Fatalf("claims at its time: got %+v, want job %d", cs, ids[1])
	}

	// A day later, after no command for hours, the command that finds it
	// due promotes it and claims it.
	if s := r.ext.Stats("q", t0+day); s.Scheduled != 0 || s.Available != 1 || s.OldestAvailable != t0+day {
		t.Fatalf("stats a day later: got %+v, want the cold job available since %d", s, t0+day)
	}
	d := r.ext.Due(t0+day, 100)
	if !slices.Equal(d.Dispatch, []string{"q"}) {
		t.Fatalf("due a day later: got %v, want q", d.Dispatch)
	}
	_, effs = r.apply(tickCmd(&queuewire.Tick{NowMs: t0 + day, Dispatch: d.Dispatch}))
	if cs := claims(effs); len(cs) != 1 || cs[0].ID != ids[0] {
		t.Fatalf("claims a day later: got %+v, want job %d", cs, ids[0])
	}
	if got := r.coldOf("q"); len(got) != 0 {
		t.Fatalf("cold after all were claimed: %v", got)
	}
	r.checkLoad()
}

func TestPromotionIsSpreadAndDueJobsAllPromoted(t *testing.T) {
	r := newRep(t)
	r.budget = 500
	r.reload()
	r.apply(grant(7))
	// 1,200 jobs due one millisecond apart an hour ahead, the last of
	// them first in priority.
	base := t0 + hour
	var specs []*queuepb.JobSpec
	for i := range 1200 {
		specs = append(specs, &queuepb.JobSpec{RunAtMs: base + int64(i)})
	}
	specs[len(specs)-1].Priority = 5
	ids := r.pushIDs(t0, "q", specs...)
	if n := len(r.coldOf("q")); n != 1200 {
		t.Fatalf("cold: got %d, want 1200", n)
	}
	// The leader promotes them ahead of their time, at most the budget
	// a command.
	at := base - defaultHorizonMs/2
	ticks := 0
	for cold := 1200; cold > 0; ticks++ {
		d := r.ext.Due(at, 100)
		if !slices.Equal(d.Dispatch, []string{"q"}) {
			t.Fatalf("due with %d cold jobs: got %v, want q", cold, d.Dispatch)
		}
		r.apply(tickCmd(&queuewire.Tick{NowMs: at, Dispatch: d.Dispatch}))
		n := len(r.coldOf("q"))
		if cold-n > r.budget || n == cold {
			t.Fatalf("promoted in one tick: got %d, want 1 to %d", cold-n, r.budget)
		}
		cold = n
	}
	if ticks != 3 {
		t.Fatalf("ticks to promote 1,200 jobs: got %d, want 3", ticks)
	}
	if d := r.ext.Due(at, 100); len(d.Dispatch) != 0 {
		t.Fatalf("due once promoted: got %v, want nothing", d.Dispatch)
	}
	r.checkLoad()
	_, effs := r.apply(batch(base+1200, attachOp("q", "w", 7, 1)))
	if cs := claims(effs); len(cs) != 1 || cs[0].ID != ids[len(ids)-1] {
		t.Fatalf("first claim: got %+v, want the job of priority 5 (%d)", cs, ids[len(ids)-1])
	}

	// Without a leader, a command that finds 600 cold jobs due promotes
	// them all, whatever the budget: the claim chooses among all of them.
	// And jobs due at the same time go together.
	base = t0 + day
	specs = specs[:0]
	for i := range 600 {
		specs = append(specs, &queuepb.JobSpec{RunAtMs: base + int64(i)})
	}
	specs[len(specs)-1].Priority = 9
	for range 600 {
		specs = append(specs, &queuepb.JobSpec{RunAtMs: base + 2*hour})
	}
	ids = r.pushIDs(t0+hour, "q", specs...)
	r.apply(batch(base+600, attachOp("q", "w2", 7, 1)))
	if n := len(r.coldOf("q")); n != 600 {
		t.Fatalf("cold after a command at their time: got %d, want the 600 due later", n)
	}
	if cs := r.ext.Claimed("q", "w2", 7); len(cs) != 1 || cs[0].ID != ids[599] {
		t.Fatalf("claim of w2: got %+v, want the job of priority 9 (%d)", cs, ids[599])
	}
	r.checkLoad()
	at = base + 2*hour - defaultHorizonMs/2
	d := r.ext.Due(at, 100)
	r.apply(tickCmd(&queuewire.Tick{NowMs: at, Dispatch: d.Dispatch}))
	if n := len(r.coldOf("q")); n != 0 {
		t.Fatalf("cold after a tick with 600 jobs due at one time: got %d, want 0", n)
	}
	r.checkLoad()
}

func TestCancelColdJobAndItsRetention(t *testing.T) {
	r := newRep(t)
	ids := r.pushIDs(t0, "q", &queuepb.JobSpec{RunAtMs: t0 + day}, &queuepb.JobSpec{RunAtMs: t0 + day})
	res, effs := r.apply(batch(t0+1, cancelOp("q", ids[0])))
	if cr, ok := results(t, res[0])[0].Resp.(*queuepb.CancelResponse); !ok || cr.State != queuepb.State_CANCELLED {
		t.Fatalf("cancel of a cold job: got %+v", results(t, res[0])[0])
	}
	if f := effs[0].Finished; len(f) != 1 || f[0].ID != ids[0] || f[0].State != queuepb.State_CANCELLED {
		t.Fatalf("finished: got %+v", f)
	}
	if st := r.jobState("q", ids[0]); st.State != queuepb.State_CANCELLED || st.FinishedAtMs != t0+1 || !st.HasOutput {
		t.Fatalf("stored state: got %v", st)
	}
	if got := r.coldOf("q"); !slices.Equal(got, ids[1:]) {
		t.Fatalf("cold: got %v, want %v", got, ids[1:])
	}
	if s := r.ext.Stats("q", t0+1); s.Cancelled != 1 || s.Scheduled != 1 || s.Available != 0 {
		t.Fatalf("stats: got %+v, want 1 cancelled and 1 scheduled", s)
	}
	res, _ = r.apply(batch(t0+2, cancelOp("q", ids[0])))
	if err := results(t, res[0])[0].Err; status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("second cancel: got %v, want FailedPrecondition", err)
	}
	r.checkLoad()
	// Kept for the retention of completed jobs, then swept.
	if d := r.ext.Due(t0+DefaultCompletedRetention, 100); len(d.Sweep) != 0 {
		t.Fatalf("swept before its retention: %v", d.Sweep)
	}
	d := r.ext.Due(t0+1+DefaultCompletedRetention, 100)
	if len(d.Sweep) != 1 || d.Sweep[0].Id != ids[0] {
		t.Fatalf("sweep after its retention: got %v, want job %d", d.Sweep, ids[0])
	}
	r.apply(tickCmd(&queuewire.Tick{NowMs: t0 + 1 + DefaultCompletedRetention, Sweep: d.Sweep}))
	if st := r.jobState("q", ids[0]); st != nil {
		t.Fatalf("swept job's state: got %v", st)
	}
	// The other job was due meanwhile: still counted, available.
	if s := r.ext.Stats("q", t0+1+DefaultCompletedRetention); s.Available != 1 || s.Scheduled != 0 || s.Cancelled != 0 {
		t.Fatalf("stats after the sweep: got %+v", s)
	}
	r.checkLoad()
}

func TestQueueWithOnlyColdJobsIsForgottenWithItsHorizon(t *testing.T) {
	r := newRep(t)
	ids := r.pushIDs(t0, "q", &queuepb.JobSpec{RunAtMs: t0 + day})
	if !slices.Equal(r.ext.Queues(), []string{"q"}) {
		t.Fatalf("queues: got %v, want [q] (a queue with a cold job is not empty)", r.ext.Queues())
	}
	r.apply(batch(t0+1, cancelOp("q", ids[0])))
	d := r.ext.Due(t0+1+DefaultCompletedRetention, 100)
	r.apply(tickCmd(&queuewire.Tick{NowMs: t0 + 1 + DefaultCompletedRetention, Sweep: d.Sweep}))
	if got := r.ext.Queues(); len(got) != 0 {
		t.Fatalf("queues after its last job: got %v, want none", got)
	}
	kv, err := mvcc.Get(r.db, horizonKey("q"), math.MaxInt64)
	if err != nil || kv != nil {
		t.Fatalf("horizon key of a forgotten queue: got %v, %v, want none", kv, err)
	}
	r.checkLoad()
}

func TestPushDependingOnColdJob(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7))
	cold := r.pushIDs(t0, "q", &queuepb.JobSpec{RunAtMs: t0 + day}, &queuepb.JobSpec{RunAtMs: t0 + day})
	deps := r.pushIDs(t0, "q", &queuepb.JobSpec{DependsOn: cold[:1]}, &queuepb.JobSpec{DependsOn: cold[1:]})
	if !slices.Equal(r.coldOf("q"), cold) || !r.ext.Waiting("q", deps[0]) || !r.ext.Waiting("q", deps[1]) {
		t.Fatalf("cold %v, dependents waiting %v %v: want both cold, both waiting", r.coldOf("q"), r.ext.Waiting("q", deps[0]), r.ext.Waiting("q", deps[1]))
	}
	if s := r.ext.Stats("q", t0); s.Waiting != 2 || s.Scheduled != 2 {
		t.Fatalf("stats: got %+v, want 2 waiting and 2 scheduled", s)
	}
	r.checkLoad()
	// A restarted replica links the dependents to the cold jobs alike.
	r.reload()
	// Cancelling a cold job cancels its dependent.
	_, effs := r.apply(batch(t0+1, cancelOp("q", cold[1])))
	var fin []uint64
	for _, f := range effs[0].Finished {
		fin = append(fin, f.ID)
	}
	if want := []uint64{cold[1], deps[1]}; !slices.Equal(fin, want) {
		t.Fatalf("finished: got %v, want %v", fin, want)
	}
	r.checkLoad()
	// The other runs when due; its completion frees its dependent.
	r.apply(batch(t0+2, attachOp("q", "w", 7, 5)))
	_, effs = r.lead(t0+day, t0+day)
	cs := claims(effs)
	if len(cs) != 1 || cs[0].ID != cold[0] {
		t.Fatalf("claims when due: got %+v, want job %d", cs, cold[0])
	}
	_, effs = r.apply(batch(t0+day+1, completeOp("q", cs[0].ID, cs[0].Token, "")))
	if got := claimIDs(claims(effs)); !slices.Equal(got, deps[:1]) {
		t.Fatalf("claimed after the completion: got %v, want %v", got, deps[:1])
	}
	r.checkLoad()
	// A push naming a cold job that is pending is accepted, one naming
	// none refused as before.
	more := r.pushIDs(t0+day+2, "q", &queuepb.JobSpec{RunAtMs: t0 + 2*day})
	res, _ := r.apply(batch(t0+day+3, pushOp("q", &queuepb.JobSpec{DependsOn: []uint64{more[0] + 1}})))
	if err := results(t, res[0])[0].Err; status.Code(err) != codes.NotFound {
		t.Fatalf("push depending on no job: got %v, want NotFound", err)
	}
}

func TestColdJobKeepsItsIdempotencyKey(t *testing.T) {
	r := newRep(t)
	ids := r.pushIDs(t0, "q", &queuepb.JobSpec{RunAtMs: t0 + day, IdempotencyKey: "k"})
	if !slices.Equal(r.coldOf("q"), ids) {
		t.Fatalf("cold: got %v, want %v", r.coldOf("q"), ids)
	}
	for range 2 {
		res, _ := r.apply(batch(t0+1, pushOp("q", &queuepb.JobSpec{IdempotencyKey: "k"})))
		pr := results(t, res[0])[0].Resp.(*queuepb.PushResponse)
		if pr.Ids[0] != ids[0] || !pr.Duplicate[0] {
			t.Fatalf("second push with key k: got %v, want the cold job %d, duplicate", pr, ids[0])
		}
		r.checkLoad()
		r.reload()
	}
}

func TestGroupedAndDependentJobsStayHot(t *testing.T) {
	r := newRep(t)
	first := r.pushIDs(t0, "q", &queuepb.JobSpec{})
	ids := r.pushIDs(t0, "q", &queuepb.JobSpec{RunAtMs: t0 + day, Group: "g"}, &queuepb.JobSpec{RunAtMs: t0 + day, DependsOn: first})
	if got := r.coldOf("q"); len(got) != 0 || !r.hot("q", ids[0]) || !r.hot("q", ids[1]) {
		t.Fatalf("cold: got %v, want none", got)
	}
	r.checkLoad()
}

func TestRetriedJobGoesColdWithItsDependents(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7))
	ids := r.pushIDs(t0, "q", &queuepb.JobSpec{})
	_, effs := r.apply(batch(t0, attachOp("q", "w", 7, 1)))
	c := claims(effs)[0]
	dep := r.pushIDs(t0+1, "q", &queuepb.JobSpec{DependsOn: ids})
	// Its failure retries it in an hour: it goes cold, its dependent still
	// waiting for it.
	res, _ := r.apply(batch(t0+2, &queuewire.Op{Queue: "q", Op: &queuewire.Op_Finish{Finish: &queuepb.Finish{Id: c.ID, Token: c.Token, Error: "later", RetryAfterMs: hour}}}))
	if fr := results(t, res[0])[0].Resp.(*queuepb.FailResponse); fr.State != queuepb.State_PENDING || fr.RunAtMs != t0+2+hour {
		t.Fatalf("failure: got %v, want PENDING at %d", fr, t0+2+hour)
	}
	if !slices.Equal(r.coldOf("q"), ids) || !r.ext.Waiting("q", dep[0]) {
		t.Fatalf("cold %v, dependent waiting %v: want %v cold and its dependent waiting", r.coldOf("q"), r.ext.Waiting("q", dep[0]), ids)
	}
	r.checkLoad()
	// Its old token is refused as for a job in memory.
	res, _ = r.apply(batch(t0+3, completeOp("q", c.ID, c.Token, "")))
	if err := results(t, res[0])[0].Err; !IsStaleToken(err) || !strings.Contains(err.Error(), "is not running (it is PENDING)") {
		t.Fatalf("completion with the old token: got %v, want a stale token error saying it is PENDING", err)
	}
	res, _ = r.apply(batch(t0+3, completeOp("q", c.ID, c.Token+1, "")))
	if err := results(t, res[0])[0].Err; !IsStaleToken(err) || !strings.Contains(err.Error(), "claimed again since") {
		t.Fatalf("completion with another token: got %v, want a stale token error", err)
	}
	res, _ = r.apply(batch(t0+3, &queuewire.Op{Queue: "q", Op: &queuewire.Op_Purge{Purge: &queuepb.PurgeRequest{Ids: ids}}}))
	if err := results(t, res[0])[0].Err; status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "is PENDING") {
		t.Fatalf("purge of a cold job: got %v, want FailedPrecondition, PENDING", err)
	}
	// Its worker detaches and its lease ends; another worker runs it when
	// due, then its dependent.
	r.apply(batch(t0+4, detachOp("q", "w")))
	r.apply(revoke(7))
	r.apply(grant(8))
	r.apply(batch(t0+5, attachOp("q", "w2", 8, 1)))
	if s := r.ext.Stats("q", t0+5); s.Workers != 1 || s.Running != 0 || s.Scheduled != 1 || s.Waiting != 1 {
		t.Fatalf("stats: got %+v", s)
	}
	r.checkLoad()
	_, effs = r.lead(t0+5, t0+2+hour)
	cs := claims(effs)
	if len(cs) != 1 || cs[0].ID != ids[0] || cs[0].Attempt != 2 || cs[0].Worker != "w2" || cs[0].ClaimedAt != t0+2+hour {
		t.Fatalf("claims: got %+v, want job %d's second attempt at its time", cs, ids[0])
	}
	_, effs = r.apply(batch(t0+3+hour, completeOp("q", cs[0].ID, cs[0].Token, "")))
	if got := claimIDs(claims(effs)); !slices.Equal(got, dep) {
		t.Fatalf("claimed after the completion: got %v, want %v", got, dep)
	}
	r.checkLoad()
}

// TestScheduledBacklogStaysOutOfTheHeap checks what the cold jobs are
// for: a backlog of jobs scheduled far ahead costs the garbage collector
// no object per job (BenchmarkBacklogHeap measures a million).
func TestScheduledBacklogStaysOutOfTheHeap(t *testing.T) {
	n := 40000
	if raceEnabled {
		n = 2000 // the race detector makes Pebble slow
	}
	r := newRep(t)
	spec := &queuepb.JobSpec{Payload: []byte("p"), RunAtMs: t0 + day}
	specs := make([]*queuepb.JobSpec, min(n, 5000))
	for i := range specs {
		specs[i] = spec
	}
	for i := 0; i < n; i += len(specs) {
		r.pushIDs(t0+int64(i), "q", specs...)
	}
	for _, m := range []*rep{r, newRepOn(t, r)} {
		if s := m.ext.Stats("q", t0+int64(n)); s.Scheduled != int64(n) {
			t.Fatalf("scheduled: got %d, want %d", s.Scheduled, n)
		}
		objs, _, _ := heapNow()
		m.ext.mu.Lock()
		delete(m.ext.mu.queues, "q")
		m.ext.mu.Unlock()
		objs0, _, _ := heapNow()
		d := int64(objs) - int64(objs0)
		t.Logf("heap objects of the queue: %d", d)
		if d > int64(n/10) {
			t.Fatalf("heap objects of a queue of %d jobs scheduled a day ahead: got %d, want under %d", n, d, n/10)
		}
	}
}
