package machine

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/queue/queuewire"
)

func TestPushClaimComplete(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7))
	ids := r.pushIDs(1000, "q", &queuepb.JobSpec{Payload: []byte("a")}, &queuepb.JobSpec{Payload: []byte("b")})
	if len(ids) != 2 || ids[0] >= ids[1] {
		t.Fatalf("ids: got %v, want two increasing", ids)
	}
	// A worker with room for one gets the first job at once.
	res, effs := r.apply(batch(1001, attachOp("q", "w1", 7, 1)))
	if err := results(t, res[0])[0].Err; err != nil {
		t.Fatal(err)
	}
	cs := claims(effs)
	if got := claimIDs(cs); !slices.Equal(got, ids[:1]) {
		t.Fatalf("claimed: got %v, want %v", got, ids[:1])
	}
	c := cs[0]
	if c.Worker != "w1" || c.Lease != 7 || c.Attempt != 1 || c.Token <= 0 {
		t.Fatalf("claim: got %+v", c)
	}
	// Its token is the revision of the claim's writes.
	if st := r.jobState("q", c.ID); st.State != queuepb.State_RUNNING || st.Token != c.Token || st.Token != r.st.KV.Revision {
		t.Fatalf("state: got %v token %d, want RUNNING with token %d = revision %d", st.State, st.Token, c.Token, r.st.KV.Revision)
	}
	// A completion with a stale token is refused; the right one completes
	// the job and the worker gets the next one in the same command.
	res, _ = r.apply(batch(1002, completeOp("q", c.ID, c.Token-1, "")))
	if err := results(t, res[0])[0].Err; !IsStaleToken(err) {
		t.Fatalf("stale completion: got %v, want a stale token error", err)
	}
	res, effs = r.apply(batch(1003, completeOp("q", c.ID, c.Token, "done")))
	if err := results(t, res[0])[0].Err; err != nil {
		t.Fatal(err)
	}
	if got := claimIDs(claims(effs)); !slices.Equal(got, ids[1:]) {
		t.Fatalf("claimed after completion: got %v, want %v", got, ids[1:])
	}
	if st := r.jobState("q", ids[0]); st.State != queuepb.State_COMPLETED || st.FinishedAtMs != 1003 || !st.HasOutput {
		t.Fatalf("completed state: got %v", st)
	}
	// A second completion of the finished job is refused.
	res, _ = r.apply(batch(1004, completeOp("q", c.ID, c.Token, "")))
	if err := results(t, res[0])[0].Err; !IsStaleToken(err) {
		t.Fatalf("second completion: got %v, want a stale token error", err)
	}
	s := r.ext.Stats("q", 1004)
	if s.Completed != 1 || s.Running != 1 || s.Available != 0 {
		t.Fatalf("stats: got %+v", s)
	}
}

func TestTokensIncreaseWithEveryClaim(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7))
	id := r.pushIDs(1000, "q", &queuepb.JobSpec{Retry: &queuepb.RetryPolicy{InitialBackoffMs: 1, Jitter: -1}})[0]
	var last int64
	now := int64(1001)
	_, effs := r.apply(batch(now, attachOp("q", "w", 7, 1)))
	for i := 0; i < 3; i++ {
		cs := claims(effs)
		if len(cs) != 1 || cs[0].ID != id {
			t.Fatalf("attempt %d: claimed %v, want job %d", i+1, cs, id)
		}
		if cs[0].Token <= last || cs[0].Attempt != int32(i+1) {
			t.Fatalf("attempt %d: token %d attempt %d, want a token above %d", i+1, cs[0].Token, cs[0].Attempt, last)
		}
		last = cs[0].Token
		now += 10
		r.apply(batch(now, failOp("q", id, cs[0].Token, "boom", false)))
		now += 10
		_, effs = r.apply(tickCmd(&queuewire.Tick{NowMs: now, Dispatch: []string{"q"}}))
	}
}

func TestPriorityThenAge(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7))
	ids := r.pushIDs(1000, "q",
		&queuepb.JobSpec{Priority: 0},
		&queuepb.JobSpec{Priority: 5},
		&queuepb.JobSpec{Priority: 0, RunAtMs: 900}, // older
		&queuepb.JobSpec{Priority: 5},
	)
	_, effs := r.apply(batch(1001, attachOp("q", "w", 7, 10)))
	want := []uint64{ids[1], ids[3], ids[2], ids[0]}
	if got := claimIDs(claims(effs)); !slices.Equal(got, want) {
		t.Fatalf("claim order: got %v, want %v", got, want)
	}
}

func TestScheduledJobsWaitForTheirTime(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7))
	r.apply(batch(1000, attachOp("q", "w", 7, 10)))
	ids := r.pushIDs(1000, "q", &queuepb.JobSpec{DelayMs: 500})
	if s := r.ext.Stats("q", 1000); s.Scheduled != 1 || s.Available != 0 {
		t.Fatalf("stats: got %+v, want one scheduled", s)
	}
	d := r.ext.Due(1000, 100)
	if len(d.Dispatch) != 0 || d.Next != 1500 {
		t.Fatalf("due at 1000: got %+v, want nothing until 1500", d)
	}
	_, effs := r.apply(tickCmd(&queuewire.Tick{NowMs: 1499, Dispatch: []string{"q"}}))
	if len(claims(effs)) != 0 {
		t.Fatalf("claimed before its time: %v", claims(effs))
	}
	if d := r.ext.Due(1500, 100); !slices.Equal(d.Dispatch, []string{"q"}) {
		t.Fatalf("due at 1500: got %v, want q", d.Dispatch)
	}
	_, effs = r.apply(tickCmd(&queuewire.Tick{NowMs: 1500, Dispatch: []string{"q"}}))
	if got := claimIDs(claims(effs)); !slices.Equal(got, ids) {
		t.Fatalf("claimed at 1500: got %v, want %v", got, ids)
	}
}

func TestClockBehindAnEarlierClaimDecidesAlike(t *testing.T) {
	// A claim at time 2000 promotes a job due at 1500; a later command from
	// a node whose clock says 1200 must not claim it, on a replica that
	// promoted it as on one that restarted since.
	r := newRep(t)
	r.apply(grant(7))
	r.pushIDs(1000, "q", &queuepb.JobSpec{RunAtMs: 1500}, &queuepb.JobSpec{RunAtMs: 1800})
	r.apply(batch(2000, attachOp("q", "w0", 7, 0))) // promotes nothing: no room
	r.apply(tickCmd(&queuewire.Tick{NowMs: 1700, Dispatch: []string{"q"}}))
	_, effs := r.apply(batch(1200, attachOp("q", "w", 7, 1)))
	if cs := claims(effs); len(cs) != 0 {
		t.Fatalf("claimed at 1200: %v", cs)
	}
	_, effs = r.apply(tickCmd(&queuewire.Tick{NowMs: 1600, Dispatch: []string{"q"}}))
	if cs := claims(effs); len(cs) != 1 || cs[0].ClaimedAt != 1600 {
		t.Fatalf("claimed at 1600: got %v, want the job due at 1500", cs)
	}
}

func TestGroupRunsOneAtATimeInPushOrder(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7))
	a := r.pushIDs(1000, "q", &queuepb.JobSpec{Group: "a"}, &queuepb.JobSpec{Group: "a", Priority: 9}, &queuepb.JobSpec{Group: "a"})
	_, effs := r.apply(batch(1001, attachOp("q", "w", 7, 10)))
	cs := claims(effs)
	if got := claimIDs(cs); !slices.Equal(got, a[:1]) {
		t.Fatalf("group a claimed: got %v, want only its first job %v", got, a[:1])
	}
	// A failed job is retried before the later ones, which wait.
	r.apply(batch(1002, failOp("q", cs[0].ID, cs[0].Token, "x", false)))
	_, effs = r.apply(tickCmd(&queuewire.Tick{NowMs: 1003, Dispatch: []string{"q"}}))
	if cs := claims(effs); len(cs) != 0 {
		t.Fatalf("claimed while the group's first job waits for its retry: %v", claimIDs(cs))
	}
	_, effs = r.apply(tickCmd(&queuewire.Tick{NowMs: 100000, Dispatch: []string{"q"}}))
	cs = claims(effs)
	if got := claimIDs(cs); !slices.Equal(got, a[:1]) {
		t.Fatalf("after the backoff: got %v, want the retried job %v", got, a[:1])
	}
	for i := 1; i < 3; i++ {
		_, effs = r.apply(batch(100001+int64(i), completeOp("q", cs[0].ID, cs[0].Token, "")))
		cs = claims(effs)
		if got := claimIDs(cs); !slices.Equal(got, a[i:i+1]) {
			t.Fatalf("after job %d: got %v, want %v", i, got, a[i:i+1])
		}
	}
}

func TestGroupsAreServedRoundRobin(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7))
	r.apply(batch(999, configureOp("q", &queuepb.ConfigureRequest{GroupMaxRunning: proto.Int32(100)})))
	// Tenant a has a backlog of 6 jobs pushed first; b and c have 2 each.
	var specs []*queuepb.JobSpec
	for range 6 {
		specs = append(specs, &queuepb.JobSpec{Group: "a"})
	}
	a := r.pushIDs(1000, "q", specs...)
	b := r.pushIDs(1001, "q", &queuepb.JobSpec{Group: "b"}, &queuepb.JobSpec{Group: "b"})
	c := r.pushIDs(1002, "q", &queuepb.JobSpec{Group: "c"}, &queuepb.JobSpec{Group: "c"})
	// One slot at a time: the claims alternate among the groups.
	_, effs := r.apply(batch(2000, attachOp("q", "w", 7, 1)))
	var order []uint64
	now := int64(2000)
	for range 10 {
		cs := claims(effs)
		if len(cs) != 1 {
			t.Fatalf("claimed %d jobs, want 1 (order so far %v)", len(cs), order)
		}
		order = append(order, cs[0].ID)
		now++
		_, effs = r.apply(batch(now, completeOp("q", cs[0].ID, cs[0].Token, "")))
	}
	want := []uint64{a[0], b[0], c[0], a[1], b[1], c[1], a[2], a[3], a[4], a[5]}
	if !slices.Equal(order, want) {
		t.Fatalf("order: got %v, want %v", order, want)
	}
}

func TestQueueConcurrencyLimitAndPause(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7))
	r.apply(batch(999, configureOp("q", &queuepb.ConfigureRequest{MaxRunning: proto.Int32(2)})))
	r.pushIDs(1000, "q", &queuepb.JobSpec{}, &queuepb.JobSpec{}, &queuepb.JobSpec{})
	_, effs := r.apply(batch(1001, attachOp("q", "w", 7, 10)))
	cs := claims(effs)
	if len(cs) != 2 {
		t.Fatalf("claimed %d with a limit of 2", len(cs))
	}
	r.apply(batch(1002, configureOp("q", &queuepb.ConfigureRequest{Paused: proto.Bool(true)})))
	_, effs = r.apply(batch(1003, completeOp("q", cs[0].ID, cs[0].Token, "")))
	if len(claims(effs)) != 0 {
		t.Fatal("claimed while paused")
	}
	_, effs = r.apply(batch(1004, configureOp("q", &queuepb.ConfigureRequest{Paused: proto.Bool(false)})))
	if len(claims(effs)) != 1 {
		t.Fatalf("claimed %d on resume, want 1", len(claims(effs)))
	}
}

func TestLeaseEndReleasesJobsAtOnce(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7), grant(8))
	ids := r.pushIDs(1000, "q", &queuepb.JobSpec{}, &queuepb.JobSpec{})
	_, effs := r.apply(batch(1001, attachOp("q", "dead", 7, 2)))
	r.apply(batch(1001, attachOp("q", "live", 8, 2)))
	if got := claimIDs(claims(effs)); !slices.Equal(got, ids) {
		t.Fatalf("claimed: got %v, want %v", got, ids)
	}
	for _, c := range claims(effs) {
		if c.Worker != "dead" {
			t.Fatalf("claim %+v: want worker dead (attached first)", c)
		}
	}
	old := claims(effs)
	_, effs = r.apply(revoke(7))
	rv := revocations(effs)
	if len(rv) != 2 || rv[0].Reason != "lease ended" {
		t.Fatalf("revocations: got %v", rv)
	}
	st := r.jobState("q", ids[0])
	if st.State != queuepb.State_PENDING || st.Lost != 1 || st.Failures != 0 {
		t.Fatalf("released job: got %v, want pending with one lost attempt", st)
	}
	if d := r.ext.Due(1002, 100); !slices.Equal(d.Dispatch, []string{"q"}) {
		t.Fatalf("due after the release: got %v, want q", d.Dispatch)
	}
	_, effs = r.apply(tickCmd(&queuewire.Tick{NowMs: 1002, Dispatch: []string{"q"}}))
	cs := claims(effs)
	if got := claimIDs(cs); !slices.Equal(got, ids) || cs[0].Worker != "live" || cs[0].Token <= old[0].Token {
		t.Fatalf("reclaimed: got %+v, want both by worker live with newer tokens", cs)
	}
	// The dead worker's completion is refused.
	res, _ := r.apply(batch(1003, completeOp("q", old[0].ID, old[0].Token, "")))
	if err := results(t, res[0])[0].Err; !IsStaleToken(err) {
		t.Fatalf("completion of a released claim: got %v, want stale token", err)
	}
	// A claim needs a live lease.
	res, _ = r.apply(batch(1004, attachOp("q", "again", 7, 1)))
	if err := results(t, res[0])[0].Err; err == nil {
		t.Fatal("attach on a revoked lease: got no error")
	}
}

func TestRetriesThenDeadThenRedrive(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7))
	policy := &queuepb.RetryPolicy{InitialBackoffMs: 100, MaxBackoffMs: 250, Multiplier: 2, Jitter: -1}
	dep := r.pushIDs(1000, "q", &queuepb.JobSpec{MaxAttempts: 3, Retry: policy})[0]
	child := r.pushIDs(1000, "q", &queuepb.JobSpec{DependsOn: []uint64{dep}})[0]
	_, effs := r.apply(batch(1000, attachOp("q", "w", 7, 5)))
	now := int64(1000)
	var waits []int64
	for attempt := 1; attempt <= 3; attempt++ {
		cs := claims(effs)
		if len(cs) != 1 || cs[0].ID != dep {
			t.Fatalf("attempt %d: claimed %v, want only %d (its dependent waits)", attempt, claimIDs(cs), dep)
		}
		res, _ := r.apply(batch(now, failOp("q", dep, cs[0].Token, fmt.Sprint("boom ", attempt), false)))
		fr := results(t, res[0])[0].Resp.(*queuepb.FailResponse)
		if attempt < 3 {
			waits = append(waits, fr.RunAtMs-now)
			now = fr.RunAtMs
			_, effs = r.apply(tickCmd(&queuewire.Tick{NowMs: now, Dispatch: []string{"q"}}))
		} else if fr.State != queuepb.State_DEAD {
			t.Fatalf("third failure: state %v, want DEAD", fr.State)
		}
	}
	if !slices.Equal(waits, []int64{100, 200}) {
		t.Fatalf("backoffs: got %v, want [100 200]", waits)
	}
	if st := r.jobState("q", child); st.State != queuepb.State_CANCELLED {
		t.Fatalf("dependent of a dead job: got %v, want CANCELLED", st.State)
	}
	if s := r.ext.Stats("q", now); s.Dead != 1 || s.Cancelled != 1 {
		t.Fatalf("stats: got %+v", s)
	}
	res, effs := r.apply(batch(now+1, &queuewire.Op{Queue: "q", Op: &queuewire.Op_Redrive{Redrive: &queuepb.RedriveRequest{}}}))
	if n := results(t, res[0])[0].Resp.(*queuepb.RedriveResponse).Redriven; n != 1 {
		t.Fatalf("redriven: got %d, want 1", n)
	}
	if cs := claims(effs); len(cs) != 1 || cs[0].ID != dep || cs[0].Attempt != 4 {
		t.Fatalf("after redrive: claimed %+v, want job %d's 4th attempt", cs, dep)
	}
	st := r.jobState("q", dep)
	if st.Failures != 0 || st.State != queuepb.State_RUNNING {
		t.Fatalf("redriven job: got %v", st)
	}
}

func TestDependenciesAndIdempotency(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7))
	ids := r.pushIDs(1000, "q", &queuepb.JobSpec{IdempotencyKey: "k"})
	again := r.pushIDs(1001, "q", &queuepb.JobSpec{IdempotencyKey: "k"}, &queuepb.JobSpec{DependsOn: ids})
	if again[0] != ids[0] {
		t.Fatalf("second push with key k: got %d, want %d", again[0], ids[0])
	}
	_, effs := r.apply(batch(1002, attachOp("q", "w", 7, 5)))
	cs := claims(effs)
	if got := claimIDs(cs); !slices.Equal(got, ids) {
		t.Fatalf("claimed: got %v, want %v (the dependent waits)", got, ids)
	}
	if !r.ext.Waiting("q", again[1]) {
		t.Fatal("dependent not waiting")
	}
	_, effs = r.apply(batch(1003, completeOp("q", ids[0], cs[0].Token, "")))
	if got := claimIDs(claims(effs)); !slices.Equal(got, again[1:]) {
		t.Fatalf("after the dependency completed: got %v, want %v", got, again[1:])
	}
	res, _ := r.apply(batch(1004, pushOp("q", &queuepb.JobSpec{DependsOn: []uint64{12345}})))
	if results(t, res[0])[0].Err == nil {
		t.Fatal("push depending on an unknown job: got no error")
	}
}

func TestCancel(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7))
	ids := r.pushIDs(1000, "q", &queuepb.JobSpec{}, &queuepb.JobSpec{})
	_, effs := r.apply(batch(1001, attachOp("q", "w", 7, 1)))
	c := claims(effs)[0]
	res, effs := r.apply(batch(1002, cancelOp("q", ids[0]), cancelOp("q", ids[1])))
	rs := results(t, res[0])
	if rs[0].Resp.(*queuepb.CancelResponse).State != queuepb.State_RUNNING || rs[1].Resp.(*queuepb.CancelResponse).State != queuepb.State_CANCELLED {
		t.Fatalf("cancel: got %v and %v", rs[0], rs[1])
	}
	if rv := revocations(effs); len(rv) != 1 || rv[0].ID != c.ID || rv[0].Reason != "cancelled" {
		t.Fatalf("worker told: %v", rv)
	}
	// The worker stops: its failure ends the job cancelled, not retried.
	res, _ = r.apply(batch(1003, failOp("q", c.ID, c.Token, "stopped", false)))
	if fr := results(t, res[0])[0].Resp.(*queuepb.FailResponse); fr.State != queuepb.State_CANCELLED {
		t.Fatalf("failure after cancel: got %v, want CANCELLED", fr.State)
	}
}

func TestTimeoutsAndRetention(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7))
	r.apply(batch(999, configureOp("q", &queuepb.ConfigureRequest{CompletedRetentionMs: proto.Int64(1000)})))
	ids := r.pushIDs(1000, "q", &queuepb.JobSpec{TimeoutMs: 50, Retry: &queuepb.RetryPolicy{InitialBackoffMs: 1, Jitter: -1}})
	_, effs := r.apply(batch(1000, attachOp("q", "w", 7, 1)))
	c := claims(effs)[0]
	d := r.ext.Due(1049, 100)
	if len(d.Expire) != 0 || d.Next != 1050 {
		t.Fatalf("due at 1049: %+v", d)
	}
	d = r.ext.Due(1050, 100)
	if len(d.Expire) != 1 {
		t.Fatalf("due at 1050: %+v", d)
	}
	// An expiry decided before an extension does not apply after it.
	r.apply(batch(1040, &queuewire.Op{Queue: "q", Op: &queuewire.Op_Extend{Extend: &queuepb.ExtendRequest{Id: c.ID, Token: c.Token, TimeoutMs: 100}}}))
	_, effs = r.apply(tickCmd(&queuewire.Tick{NowMs: 1050, Expire: d.Expire}))
	if len(revocations(effs)) != 0 {
		t.Fatal("expired after an extension")
	}
	d = r.ext.Due(1140, 100)
	_, effs = r.apply(tickCmd(&queuewire.Tick{NowMs: 1140, Expire: d.Expire}))
	if rv := revocations(effs); len(rv) != 1 || rv[0].Reason != "timed out" {
		t.Fatalf("revocations at 1140: %v", rv)
	}
	if st := r.jobState("q", ids[0]); st.State != queuepb.State_PENDING || st.Failures != 1 {
		t.Fatalf("timed out job: %v", st)
	}
	_, effs = r.apply(tickCmd(&queuewire.Tick{NowMs: 1200, Dispatch: []string{"q"}}))
	c = claims(effs)[0]
	r.apply(batch(1201, completeOp("q", c.ID, c.Token, "")))
	if d := r.ext.Due(2200, 100); len(d.Sweep) != 0 {
		t.Fatalf("swept before its retention: %v", d.Sweep)
	}
	d = r.ext.Due(2201, 100)
	r.apply(tickCmd(&queuewire.Tick{NowMs: 2201, Sweep: d.Sweep}))
	if st := r.jobState("q", ids[0]); st != nil {
		t.Fatalf("job after its retention: %v", st)
	}
}

func TestScheduleFiresOncePerFiring(t *testing.T) {
	r := newRep(t)
	res, _ := r.apply(batch(1000, &queuewire.Op{Queue: "q", Op: &queuewire.Op_PutSchedule{PutSchedule: &queuepb.Schedule{
		Name: "s", Cron: "@every 1s", Job: &queuepb.JobSpec{Payload: []byte("tick")}}}}))
	if err := results(t, res[0])[0].Err; err != nil {
		t.Fatal(err)
	}
	fire := func(times ...int64) {
		r.apply(tickCmd(&queuewire.Tick{NowMs: 5000, Fire: []*queuewire.Firing{{Queue: "q", Schedule: "s", TimesMs: times}}}))
	}
	fire(2000, 3000)
	fire(3000) // a second leader decides the same firing
	fire(2000) // an older one
	fire(4000)
	if s := r.ext.Stats("q", 5000); s.Available != 3 {
		t.Fatalf("jobs pushed: got %d, want 3", s.Available)
	}
	if ss := r.ext.Schedules("q"); ss[0].LastFiredMs != 4000 {
		t.Fatalf("last fired: got %d, want 4000", ss[0].LastFiredMs)
	}
}

func TestKVOpsApplyWithThePush(t *testing.T) {
	r := newRep(t)
	cmp := &queuepb.Compare{Key: []byte("k"), Target: queuepb.Compare_VERSION, TargetUnion: &queuepb.Compare_Version{Version: 0}}
	push := &queuepb.PushRequest{Queue: "q", Jobs: []*queuepb.JobSpec{{}}, Compares: []*queuepb.Compare{cmp},
		Puts: []*queuepb.KeyValuePut{{Key: []byte("k"), Value: []byte("v")}}}
	op := &queuewire.Op{Queue: "q", Op: &queuewire.Op_Push{Push: push}}
	// The second push's compare sees the first one's put.
	res, _ := r.apply(batch(1000, op, op))
	rs := results(t, res[0])
	if rs[0].Err != nil || rs[1].Err == nil {
		t.Fatalf("pushes: got %v and %v, want the second refused", rs[0].Err, rs[1].Err)
	}
	if s := r.ext.Stats("q", 1000); s.Available != 1 {
		t.Fatalf("jobs: got %d, want 1", s.Available)
	}
	bad := &queuepb.PushRequest{Queue: "q", Jobs: []*queuepb.JobSpec{{}}, Puts: []*queuepb.KeyValuePut{{Key: QueuePrefix("q")}}}
	res, _ = r.apply(batch(1001, &queuewire.Op{Queue: "q", Op: &queuewire.Op_Push{Push: bad}}))
	if results(t, res[0])[0].Err == nil {
		t.Fatal("a put into the reserved keys: got no error")
	}
}

// TestPutScheduleAnswerIsTheCallers: the node's RPC fills in the answer's
// next firing after apply; the answer must not be the machine's own
// record, which the leader loop reads meanwhile (a data race the queue
// chaos workload found) and which is replicated state.
func TestPutScheduleAnswerIsTheCallers(t *testing.T) {
	r := newRep(t)
	res, _ := r.apply(batch(1000, &queuewire.Op{Queue: "q", Op: &queuewire.Op_PutSchedule{PutSchedule: &queuepb.Schedule{
		Name: "s", Cron: "@every 1s", Job: &queuepb.JobSpec{}}}}))
	rs := results(t, res[0])
	if rs[0].Err != nil {
		t.Fatal(rs[0].Err)
	}
	rs[0].Resp.(*queuepb.PutScheduleResponse).Schedule.NextMs = 12345
	if got := r.ext.Schedules("q")[0].NextMs; got != 0 {
		t.Fatalf("the machine's schedule after the caller changed its answer: got next_ms %d, want 0", got)
	}
}
