package machine

import (
	"math"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/queue/queuewire"
)

func extendOp(q string, id uint64, token, timeoutMs int64) *queuewire.Op {
	return &queuewire.Op{Queue: q, Op: &queuewire.Op_Extend{Extend: &queuepb.ExtendRequest{Queue: q, Id: id, Token: token, TimeoutMs: timeoutMs}}}
}

func progressOp(q string, id uint64, token int64, progress string) *queuewire.Op {
	return &queuewire.Op{Queue: q, Op: &queuewire.Op_Progress{Progress: &queuepb.ProgressRequest{Queue: q, Id: id, Token: token, Progress: []byte(progress)}}}
}

func completeTxnOp(q string, id uint64, token int64, result string) *queuewire.Op {
	return &queuewire.Op{Queue: q, Op: &queuewire.Op_Complete{Complete: &queuepb.CompleteRequest{Queue: q, Id: id, Token: token, Result: []byte(result)}}}
}

func redriveOp(q string, rate int32) *queuewire.Op {
	return &queuewire.Op{Queue: q, Op: &queuewire.Op_Redrive{Redrive: &queuepb.RedriveRequest{Queue: q, Rate: rate}}}
}

// output reads a job's output record (nil if it has none).
func (r *rep) output(q string, id uint64) *queuewire.OutputRecord {
	r.t.Helper()
	kv, err := mvcc.Get(r.db, OutKey(q, id), math.MaxInt64)
	if err != nil {
		r.t.Fatal(err)
	}
	if kv == nil {
		return nil
	}
	var out queuewire.OutputRecord
	if err := proto.Unmarshal(kv.Value, &out); err != nil {
		r.t.Fatal(err)
	}
	return &out
}

func TestGroupLimitOfTwo(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7), grant(8))
	r.apply(batch(999, configureOp("q", &queuepb.ConfigureRequest{GroupMaxRunning: proto.Int32(2)})))
	a := r.pushIDs(1000, "q", &queuepb.JobSpec{Group: "a"}, &queuepb.JobSpec{Group: "a"}, &queuepb.JobSpec{Group: "a"})
	b := r.pushIDs(1001, "q", &queuepb.JobSpec{Group: "b"})
	// A worker with room for ten gets a's first two jobs and b's: a's
	// third waits for one of the first two.
	_, effs := r.apply(batch(1002, attachOp("q", "w1", 7, 10)))
	first := claims(effs)
	got := claimIDs(first)
	slices.Sort(got)
	if want := []uint64{a[0], a[1], b[0]}; !slices.Equal(got, want) {
		t.Fatalf("claimed: got %v, want %v (a's first two and b's)", got, want)
	}
	if st := r.jobState("q", a[2]); st.State != queuepb.State_PENDING {
		t.Fatalf("a's third job: got %v, want PENDING", st.State)
	}
	// The limit is the queue's, not the worker's: another worker with room,
	// a dispatch, and a restart of the replica do not start it either.
	_, effs = r.apply(batch(1003, attachOp("q", "w2", 8, 10)))
	if cs := claims(effs); len(cs) != 0 {
		t.Fatalf("second worker claimed %v, want nothing while a runs 2 jobs", claimIDs(cs))
	}
	r.reload()
	_, effs = r.apply(tickCmd(&queuewire.Tick{NowMs: 1004, Dispatch: []string{"q"}}))
	if cs := claims(effs); len(cs) != 0 {
		t.Fatalf("claimed %v after a restart, want nothing while a runs 2 jobs", claimIDs(cs))
	}
	if s := r.ext.Stats("q", 1004); s.Running != 3 || s.Available != 1 {
		t.Fatalf("stats: got running %d available %d, want 3 and 1", s.Running, s.Available)
	}
	// b finishing frees nothing for a.
	tok := map[uint64]int64{}
	for _, c := range first {
		tok[c.ID] = c.Token
	}
	_, effs = r.apply(batch(1005, completeOp("q", b[0], tok[b[0]], "")))
	if cs := claims(effs); len(cs) != 0 {
		t.Fatalf("claimed %v when b's job finished, want nothing", claimIDs(cs))
	}
	// One of a's finishing starts the third, in the same command.
	_, effs = r.apply(batch(1006, completeOp("q", a[1], tok[a[1]], "")))
	if got := claimIDs(claims(effs)); !slices.Equal(got, a[2:]) {
		t.Fatalf("claimed when a's second job finished: got %v, want %v", got, a[2:])
	}
	if s := r.ext.Stats("q", 1006); s.Running != 2 || s.Available != 0 {
		t.Fatalf("stats: got running %d available %d, want 2 and 0", s.Running, s.Available)
	}
}

func TestBackoffJitterStaysWithinItsBounds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		p      *queuepb.RetryPolicy
		base   func(n int32) float64 // min(max, initial * multiplier^(n-1))
		jitter float64
	}{
		{"defaults", nil, func(n int32) float64 { return min(3600e3, 1000*math.Pow(2, float64(n-1))) }, DefaultJitter},
		{"zero fields take the defaults", &queuepb.RetryPolicy{}, func(n int32) float64 { return min(3600e3, 1000*math.Pow(2, float64(n-1))) }, DefaultJitter},
		{"half", &queuepb.RetryPolicy{InitialBackoffMs: 100, MaxBackoffMs: 5000, Multiplier: 3, Jitter: 0.5},
			func(n int32) float64 { return min(5000, 100*math.Pow(3, float64(n-1))) }, 0.5},
		{"full", &queuepb.RetryPolicy{InitialBackoffMs: 1000, MaxBackoffMs: 4000, Multiplier: 2, Jitter: 1},
			func(n int32) float64 { return min(4000, 1000*math.Pow(2, float64(n-1))) }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for n := int32(1); n <= 25; n++ {
				base := tc.base(n)
				lo, hi := int64(math.Floor(base*(1-tc.jitter))), int64(math.Ceil(base*(1+tc.jitter)))
				smallest, largest := int64(math.MaxInt64), int64(math.MinInt64)
				for id := uint64(1); id <= 2000; id++ {
					d := backoff(tc.p, id<<16, n)
					if d < lo || d > hi {
						t.Fatalf("failure %d of job %d: got %d ms, want within [%d, %d] (%.0f ms ± %.0f%%)", n, id<<16, d, lo, hi, base, tc.jitter*100)
					}
					if again := backoff(tc.p, id<<16, n); again != d {
						t.Fatalf("failure %d of job %d: got %d then %d ms, want the same on every replica", n, id<<16, d, again)
					}
					smallest, largest = min(smallest, d), max(largest, d)
				}
				// The jitter is applied, and spreads over most of its range.
				spread := tc.jitter * base
				if float64(smallest) > base-0.9*spread || float64(largest) < base+0.9*spread {
					t.Fatalf("failure %d: backoffs of 2000 jobs span [%d, %d] ms, want most of [%d, %d]", n, smallest, largest, lo, hi)
				}
			}
		})
	}
	// A negative jitter is none.
	p := &queuepb.RetryPolicy{InitialBackoffMs: 100, MaxBackoffMs: 1000, Multiplier: 2, Jitter: -1}
	for n, want := range []int64{100, 200, 400, 800, 1000, 1000} {
		for id := uint64(1); id <= 100; id++ {
			if got := backoff(p, id<<16, int32(n+1)); got != want {
				t.Fatalf("failure %d without jitter: got %d ms, want %d", n+1, got, want)
			}
		}
	}
}

func TestFailureRetriesWithinTheJitterBounds(t *testing.T) {
	// Through the state machine: a failed job's next run time is its
	// policy's backoff give or take the default 20%.
	r := newRep(t)
	r.apply(grant(7))
	var specs []*queuepb.JobSpec
	for range 50 {
		specs = append(specs, &queuepb.JobSpec{MaxAttempts: 10, Retry: &queuepb.RetryPolicy{InitialBackoffMs: 1000, MaxBackoffMs: 4000}})
	}
	ids := r.pushIDs(1000, "q", specs...)
	now := int64(1000)
	_, effs := r.apply(batch(now, attachOp("q", "w", 7, int32(len(ids)))))
	var waits []int64
	for n := 1; n <= 4; n++ {
		cs := claims(effs)
		if len(cs) != len(ids) {
			t.Fatalf("attempt %d: claimed %d jobs, want %d", n, len(cs), len(ids))
		}
		base := min(4000, 1000*math.Pow(2, float64(n-1)))
		lo, hi := int64(math.Floor(base*0.8)), int64(math.Ceil(base*1.2))
		latest := now
		for _, c := range cs {
			res, _ := r.apply(batch(now, failOp("q", c.ID, c.Token, "boom", false)))
			fr := results(t, res[0])[0].Resp.(*queuepb.FailResponse)
			if w := fr.RunAtMs - now; fr.State != queuepb.State_PENDING || w < lo || w > hi {
				t.Fatalf("failure %d of job %d: got %v, retry in %d ms, want PENDING, retry within [%d, %d] ms", n, c.ID, fr.State, w, lo, hi)
			}
			waits = append(waits, fr.RunAtMs-now)
			latest = max(latest, fr.RunAtMs)
		}
		now = latest
		_, effs = r.apply(tickCmd(&queuewire.Tick{NowMs: now, Dispatch: []string{"q"}}))
	}
	slices.Sort(waits)
	if waits[0] == waits[len(waits)-1] {
		t.Fatalf("every retry waited %d ms, want them spread by the jitter", waits[0])
	}
}

func TestRedriveTakesAtMostRateJobsPerCommand(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7))
	var specs []*queuepb.JobSpec
	for range 5 {
		specs = append(specs, &queuepb.JobSpec{})
	}
	ids := r.pushIDs(1000, "q", specs...)
	_, effs := r.apply(batch(1001, attachOp("q", "w", 7, 5)))
	for _, c := range claims(effs) {
		r.apply(batch(1002, failOp("q", c.ID, c.Token, "bad", true)))
	}
	r.apply(batch(1003, detachOp("q", "w"))) // the redriven jobs stay pending
	if s := r.ext.Stats("q", 1003); s.Dead != 5 {
		t.Fatalf("dead: got %d, want 5", s.Dead)
	}
	// One command with a rate of 2 redrives 2 jobs, oldest first; the
	// server proposes one such command a second (rpc.go's Redrive).
	for i, want := range []int64{2, 2, 1, 0} {
		now := int64(2000 + 1000*i)
		res, _ := r.apply(batch(now, redriveOp("q", 2)))
		if n := results(t, res[0])[0].Resp.(*queuepb.RedriveResponse).Redriven; n != want {
			t.Fatalf("redrive command %d at rate 2: got %d redriven, want %d", i+1, n, want)
		}
		done := min(2*(i+1), len(ids))
		for k, id := range ids {
			want := queuepb.State_DEAD
			if k < done {
				want = queuepb.State_PENDING
			}
			if st := r.jobState("q", id); st.State != want {
				t.Fatalf("after redrive command %d: job %d is %v, want %v", i+1, id, st.State, want)
			}
		}
	}
	// Without a rate, the default bound applies.
	var many []*queuepb.JobSpec
	for range redriveDefault + 1 {
		many = append(many, &queuepb.JobSpec{MaxAttempts: 1})
	}
	r.pushIDs(6000, "d", many...)
	_, effs = r.apply(batch(6001, attachOp("d", "w", 7, redriveDefault+1)))
	var fails []*queuewire.Op
	for _, c := range claims(effs) {
		fails = append(fails, failOp("d", c.ID, c.Token, "bad", true))
	}
	r.apply(batch(6002, fails...), batch(6002, detachOp("d", "w")))
	res, _ := r.apply(batch(6003, redriveOp("d", 0)))
	if n := results(t, res[0])[0].Resp.(*queuepb.RedriveResponse).Redriven; n != redriveDefault {
		t.Fatalf("redrive without a rate: got %d redriven, want %d", n, redriveDefault)
	}
}

func TestStaleTokenRefusedForEveryOperation(t *testing.T) {
	r := newRep(t)
	r.apply(grant(7))
	id := r.pushIDs(1000, "q", &queuepb.JobSpec{Retry: &queuepb.RetryPolicy{InitialBackoffMs: 1, Jitter: -1}})[0]
	_, effs := r.apply(batch(1001, attachOp("q", "w", 7, 1)))
	old := claims(effs)[0]
	// The first attempt fails and the job is claimed again: a newer token.
	r.apply(batch(1002, failOp("q", id, old.Token, "first", false)))
	_, effs = r.apply(tickCmd(&queuewire.Tick{NowMs: 1003, Dispatch: []string{"q"}}))
	cur := claims(effs)
	if len(cur) != 1 || cur[0].ID != id || cur[0].Token <= old.Token {
		t.Fatalf("second claim: got %+v, want job %d with a token above %d", cur, id, old.Token)
	}
	before := r.jobState("q", id)
	ops := []struct {
		name string
		op   func(token int64) *queuewire.Op
	}{
		{"fail", func(tok int64) *queuewire.Op { return failOp("q", id, tok, "stale failure", false) }},
		{"permanent fail", func(tok int64) *queuewire.Op { return failOp("q", id, tok, "stale failure", true) }},
		{"extend", func(tok int64) *queuewire.Op { return extendOp("q", id, tok, 60000) }},
		{"progress", func(tok int64) *queuewire.Op { return progressOp("q", id, tok, "stale progress") }},
		{"finish", func(tok int64) *queuewire.Op { return completeOp("q", id, tok, "stale result") }},
		{"complete", func(tok int64) *queuewire.Op { return completeTxnOp("q", id, tok, "stale result") }},
	}
	for _, o := range ops {
		res, _ := r.apply(batch(1004, o.op(old.Token)))
		if err := results(t, res[0])[0].Err; !IsStaleToken(err) {
			t.Fatalf("%s with the superseded token: got %v, want a stale token error", o.name, err)
		}
	}
	// None of them changed the job.
	if after := r.jobState("q", id); !proto.Equal(after, before) {
		t.Fatalf("job after refused operations: got %v, want unchanged %v", after, before)
	}
	if out := r.output("q", id); out.LastError != "first" || len(out.Progress) != 0 || len(out.Result) != 0 {
		t.Fatalf("output after refused operations: got %v, want only the first failure", out)
	}
	// The current claim's token is accepted, which is what makes the
	// refusals above about the token.
	res, _ := r.apply(batch(1005, extendOp("q", id, cur[0].Token, 60000), progressOp("q", id, cur[0].Token, "half")))
	for i, x := range results(t, res[0]) {
		if x.Err != nil {
			t.Fatalf("operation %d with the current token: got %v, want it accepted", i, x.Err)
		}
	}
	if st := r.jobState("q", id); st.DeadlineMs != 1005+60000 {
		t.Fatalf("deadline after extend: got %d, want %d", st.DeadlineMs, 1005+60000)
	}
	// Once the job finished, even its last token is refused.
	r.apply(batch(1006, completeOp("q", id, cur[0].Token, "done")))
	for _, o := range ops {
		res, _ := r.apply(batch(1007, o.op(cur[0].Token)))
		if err := results(t, res[0])[0].Err; !IsStaleToken(err) {
			t.Fatalf("%s of a completed job: got %v, want a stale token error", o.name, err)
		}
	}
	if st := r.jobState("q", id); st.State != queuepb.State_COMPLETED {
		t.Fatalf("job: got %v, want COMPLETED", st.State)
	}
	if out := r.output("q", id); string(out.Result) != "done" || string(out.Progress) != "half" {
		t.Fatalf("output: got result %q progress %q, want done and half", out.Result, out.Progress)
	}
}
