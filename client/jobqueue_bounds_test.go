package client_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/client"
)

// TestQueueStaleTokenRefusedForFailExtendProgress: a superseded claim can
// neither fail, extend nor report progress on the job it lost (the
// completion is TestQueueStaleTokenRefused's).
func TestQueueStaleTokenRefusedForFailExtendProgress(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	cli := connect(t)
	q := cli.Queue(uniqueName("t-stale-ops"))
	id, err := q.Push(ctx, []byte("x"), client.WithJobTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	s1 := session(t, cli, 5)
	got1 := make(chan *client.Job, 1)
	runWorker(t, q, s1, func(ctx context.Context, j *client.Job) ([]byte, error) {
		got1 <- j
		<-ctx.Done() // the session's end
		return nil, ctx.Err()
	})
	first := <-got1
	if err := s1.Close(ctx); err != nil { // revokes the lease: the job is released at once
		t.Fatal(err)
	}
	got2 := make(chan *client.Job, 1)
	release := make(chan struct{})
	runWorker(t, q, session(t, cli, 5), func(ctx context.Context, j *client.Job) ([]byte, error) {
		got2 <- j
		select {
		case <-release:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		return []byte("second"), nil
	})
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(letGo) // before the worker's cleanup, which waits for the handler
	var second *client.Job
	select {
	case second = <-got2:
	case <-ctx.Done():
		t.Fatal("the released job was not claimed again")
	}
	if second.ID != id || second.Token <= first.Token {
		t.Fatalf("second claim: got job %d token %d, want job %d with a token above %d", second.ID, second.Token, id, first.Token)
	}
	// While the second claim runs, the first one's token is refused.
	if err := first.Extend(ctx, time.Hour); !errors.Is(err, client.ErrStaleToken) {
		t.Fatalf("stale Extend: got %v, want ErrStaleToken", err)
	}
	if err := first.Progress(ctx, []byte("stale progress")); !errors.Is(err, client.ErrStaleToken) {
		t.Fatalf("stale Progress: got %v, want ErrStaleToken", err)
	}
	// The SDK fails a job by the handler's error, over the claim stream;
	// the Fail RPC is the protocol's other way, and refuses alike.
	api := queuepb.NewQueueClient(cli.ActiveConnection())
	for _, permanent := range []bool{false, true} {
		_, err := api.Fail(ctx, &queuepb.FailRequest{Queue: q.Name(), Id: id, Token: first.Token, Error: "stale failure", Permanent: permanent})
		if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition || !strings.HasPrefix(st.Message(), "queue: stale token") {
			t.Fatalf("stale Fail (permanent %v): got %v, want FAILED_PRECONDITION \"queue: stale token ...\"", permanent, err)
		}
	}
	j, err := q.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != queuepb.State_RUNNING || j.Token != second.Token || j.Failures != 0 || len(j.Progress) != 0 || j.LastError != "" ||
		j.DeadlineMs > time.Now().Add(2*time.Minute).UnixMilli() {
		t.Fatalf("job after the refused calls: got %v, want it RUNNING under token %d, untouched", j, second.Token)
	}
	// The current token is accepted.
	if err := second.Progress(ctx, []byte("half")); err != nil {
		t.Fatalf("Progress with the current token: got %v, want nil", err)
	}
	letGo()
	j, err = q.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != queuepb.State_COMPLETED || string(j.Result) != "second" || string(j.Progress) != "half" || j.Failures != 0 {
		t.Fatalf("job: got %v, want COMPLETED by the second claim, progress half, no failures", j)
	}
}

// TestQueueRedriveRate: Redrive moves at most rate dead jobs a second.
func TestQueueRedriveRate(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	cli := connect(t)
	q := cli.Queue(uniqueName("t-redrive-rate"))
	ids, err := q.PushMany(ctx, client.Spec{}, client.Spec{}, client.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	w := q.NewWorker(session(t, cli, 5), func(ctx context.Context, j *client.Job) ([]byte, error) {
		return nil, client.Permanent(errors.New("bad"))
	}, client.WithConcurrency(3))
	go func() { errc <- w.Run(wctx) }()
	for _, id := range ids {
		if j, err := q.Wait(ctx, id); err != nil || j.State != queuepb.State_DEAD {
			t.Fatalf("job %d: got %v %v, want DEAD", id, j, err)
		}
	}
	stop() // no worker: the redriven jobs stay pending
	if err := <-errc; err != nil {
		t.Fatalf("worker: %v", err)
	}
	start := time.Now()
	n, err := q.Redrive(ctx, 2)
	elapsed := time.Since(start)
	if err != nil || n != 3 {
		t.Fatalf("redrive: got %d %v, want 3", n, err)
	}
	// 3 jobs at 2 a second: the third one a second after the first two.
	if elapsed < time.Second {
		t.Fatalf("redrive of 3 jobs at rate 2 took %s, want at least 1s", elapsed)
	}
	st, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Dead != 0 || st.Available != 3 {
		jobs, _, _ := q.List(ctx, queuepb.State_STATE_UNSPECIFIED, 0, 10, false)
		t.Fatalf("stats after the redrive: got dead %d available %d, want 0 and 3 (%+v) %v", st.Dead, st.Available, st, jobs)
	}
}

// TestQueueStoppedWorkerClaimsNothing: once Run returned, nothing is
// claimed for the worker, even on a session that lives on (jobs claimed
// for it would sit RUNNING until their timeout).
func TestQueueStoppedWorkerClaimsNothing(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	cli := connect(t)
	q := cli.Queue(uniqueName("t-stopped"))
	s := session(t, cli, 5)
	for i := range 5 {
		w := q.NewWorker(s, func(ctx context.Context, j *client.Job) ([]byte, error) { return nil, nil }, client.WithConcurrency(4))
		wctx, stop := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- w.Run(wctx) }()
		// A job it completes shows it attached with room.
		id, err := q.Push(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if j, err := q.Wait(ctx, id); err != nil || j.State != queuepb.State_COMPLETED {
			t.Fatalf("round %d: job %d: got %v %v, want COMPLETED", i, id, j, err)
		}
		stop()
		if err := <-errc; err != nil {
			t.Fatalf("round %d: worker: %v", i, err)
		}
		// A job pushed now would be claimed in the push's own command.
		id, err = q.Push(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		j, err := q.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != queuepb.State_PENDING {
			t.Fatalf("round %d: job pushed after Run returned: got %v (worker %q), want PENDING", i, j.State, j.Worker)
		}
		if _, err := q.Cancel(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
}
