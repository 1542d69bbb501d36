package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/client"
)

// uniqueName returns a name no earlier run of the tests on the shared
// cluster used.
func uniqueName(base string) string {
	return fmt.Sprintf("%s-%d", base, time.Now().UnixNano())
}

func TestQueuePushWorkWait(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	cli := connect(t)
	q := cli.Queue(uniqueName("t-basic"))
	var ids []uint64
	for i := range 20 {
		id, err := q.Push(ctx, []byte(fmt.Sprint("job ", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	var mu sync.Mutex
	seen := map[uint64]int64{}
	w := q.NewWorker(session(t, cli, 5), func(ctx context.Context, j *client.Job) ([]byte, error) {
		mu.Lock()
		seen[j.ID] = j.Token
		mu.Unlock()
		return append([]byte("done: "), j.Payload...), nil
	}, client.WithConcurrency(4))
	wctx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- w.Run(wctx) }()
	for i, id := range ids {
		j, err := q.Wait(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != queuepb.State_COMPLETED || string(j.Result) != fmt.Sprint("done: job ", i) {
			t.Fatalf("job %d: got %v %q, want COMPLETED with its result", id, j.State, j.Result)
		}
	}
	stop()
	if err := <-errc; err != nil {
		t.Fatalf("worker: %v", err)
	}
	st, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Completed != 20 || st.Running != 0 || st.Available != 0 {
		t.Fatalf("stats: got %+v", st)
	}
}

func TestQueueStaleTokenRefused(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	cli := connect(t)
	q := cli.Queue(uniqueName("t-stale"))
	id, err := q.Push(ctx, []byte("x"), client.WithJobTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	// A first worker takes the job, and its attempt is cancelled under it
	// by a timeout: we make the worker lose it by ending its session.
	s1 := session(t, cli, 5)
	got := make(chan *client.Job, 1)
	release := make(chan struct{})
	w1 := q.NewWorker(s1, func(ctx context.Context, j *client.Job) ([]byte, error) {
		got <- j
		<-release
		return nil, nil
	})
	w1ctx, stop1 := context.WithCancel(ctx)
	defer stop1()
	go w1.Run(w1ctx)
	first := <-got
	if first.ID != id || first.Attempt != 1 {
		t.Fatalf("first claim: got job %d attempt %d", first.ID, first.Attempt)
	}
	if err := s1.Close(ctx); err != nil { // revokes the lease: the job is released at once
		t.Fatal(err)
	}
	// A second worker gets it with a newer token...
	got2 := make(chan *client.Job, 1)
	w2 := q.NewWorker(session(t, cli, 5), func(ctx context.Context, j *client.Job) ([]byte, error) {
		got2 <- j
		return []byte("second"), nil
	})
	w2ctx, stop2 := context.WithCancel(ctx)
	defer stop2()
	go w2.Run(w2ctx)
	second := <-got2
	if second.ID != id || second.Token <= first.Token || second.Attempt != 2 {
		t.Fatalf("second claim: got job %d token %d attempt %d, want a token above %d", second.ID, second.Token, second.Attempt, first.Token)
	}
	j, err := q.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if j.Lost != 1 || string(j.Result) != "second" {
		t.Fatalf("job: lost %d result %q, want one lost attempt and the second worker's result", j.Lost, j.Result)
	}
	// ...and the first worker's completion with its stale token is refused.
	err = first.CompleteTxn(ctx, []byte("first"), nil)
	if !errors.Is(err, client.ErrStaleToken) {
		t.Fatalf("stale completion: got %v, want ErrStaleToken", err)
	}
	close(release)
}

func TestQueuePushTxn(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	cli := connect(t)
	q := cli.Queue(uniqueName("t-txn"))
	key := q.Name() + "/order"
	cmp := clientv3.Compare(clientv3.Version(key), "=", 0)
	ids, _, err := q.PushTxn(ctx, []clientv3.Cmp{cmp}, []client.KVPut{{Key: key, Value: "placed"}}, client.Spec{Payload: []byte("email")})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = q.PushTxn(ctx, []clientv3.Cmp{cmp}, []client.KVPut{{Key: key, Value: "again"}}, client.Spec{Payload: []byte("email")})
	if !errors.Is(err, client.ErrCompareFailed) {
		t.Fatalf("second push: got %v, want ErrCompareFailed", err)
	}
	resp, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Kvs[0].Value) != "placed" {
		t.Fatalf("order: got %q", resp.Kvs[0].Value)
	}
	jobs, _, err := q.List(ctx, queuepb.State_PENDING, 0, 10, false)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, j := range jobs {
		got = append(got, j.Id)
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("pending jobs: got %v, want %v", got, ids)
	}
	// The job's revision is the put's.
	j, err := q.Get(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if int64(j.Id>>16) != resp.Kvs[0].ModRevision {
		t.Fatalf("job %d pushed at revision %d, put at %d", j.Id, j.Id>>16, resp.Kvs[0].ModRevision)
	}
}

// runWorker runs a worker until the test ends.
func runWorker(t *testing.T, q *client.Queue, s *client.Session, h client.Handler, opts ...client.WorkerOption) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = q.NewWorker(s, h, opts...).Run(ctx)
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
}

func TestQueueCancelRunningJobTellsItsWorker(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	cli := connect(t)
	q := cli.Queue(uniqueName("t-cancel"))
	started := make(chan struct{})
	cause := make(chan error, 1)
	runWorker(t, q, session(t, cli, 5), func(ctx context.Context, j *client.Job) ([]byte, error) {
		close(started)
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return nil, ctx.Err()
	})
	id, err := q.Push(ctx, []byte("long"))
	if err != nil {
		t.Fatal(err)
	}
	<-started
	st, err := q.Cancel(ctx, id)
	if err != nil || st != queuepb.State_RUNNING {
		t.Fatalf("cancel: got %v %v, want RUNNING (its worker told)", st, err)
	}
	if err := <-cause; !errors.Is(err, client.ErrJobCancelled) {
		t.Fatalf("handler's context: got %v, want ErrJobCancelled", err)
	}
	j, err := q.Wait(ctx, id)
	if err != nil || j.State != queuepb.State_CANCELLED {
		t.Fatalf("job: got %v %v, want CANCELLED", j, err)
	}
	// A pending job is cancelled at once.
	id2, err := q.Push(ctx, nil, client.WithDelay(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := q.Cancel(ctx, id2); err != nil || st != queuepb.State_CANCELLED {
		t.Fatalf("cancel a pending job: got %v %v", st, err)
	}
}

func TestQueueTimeoutExtendAndProgress(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	cli := connect(t)
	q := cli.Queue(uniqueName("t-timeout"))
	var attempts sync.Map
	runWorker(t, q, session(t, cli, 5), func(ctx context.Context, j *client.Job) ([]byte, error) {
		attempts.Store(j.Attempt, true)
		if j.Attempt == 1 {
			// Hang past the timeout: the attempt is revoked.
			<-ctx.Done()
			if !errors.Is(context.Cause(ctx), client.ErrJobRevoked) {
				return nil, fmt.Errorf("cause %v, want ErrJobRevoked", context.Cause(ctx))
			}
			return nil, ctx.Err()
		}
		if err := j.Progress(ctx, []byte("half")); err != nil {
			return nil, err
		}
		before := j.Deadline
		if err := j.Extend(ctx, time.Minute); err != nil {
			return nil, err
		}
		if !j.Deadline.After(before) {
			return nil, fmt.Errorf("deadline %v not after %v", j.Deadline, before)
		}
		time.Sleep(400 * time.Millisecond) // past the original timeout: the extension holds
		return []byte("ok"), nil
	}, client.WithConcurrency(2))
	id, err := q.Push(ctx, nil, client.WithJobTimeout(300*time.Millisecond), client.WithRetry(client.RetryPolicy{Initial: time.Millisecond, Jitter: -1}))
	if err != nil {
		t.Fatal(err)
	}
	j, err := q.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != queuepb.State_COMPLETED || j.Attempt != 2 || j.Failures != 1 || string(j.Progress) != "half" || string(j.Result) != "ok" ||
		!strings.Contains(j.LastError, "timed out") {
		t.Fatalf("job: got %v, want completed at attempt 2 after a timeout, with its progress", j)
	}
}

func TestQueueRetriesPermanentAndRedrive(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	cli := connect(t)
	q := cli.Queue(uniqueName("t-retry"))
	var mu sync.Mutex
	times := map[uint64][]time.Time{}
	runWorker(t, q, session(t, cli, 5), func(ctx context.Context, j *client.Job) ([]byte, error) {
		mu.Lock()
		times[j.ID] = append(times[j.ID], time.Now())
		mu.Unlock()
		switch string(j.Payload) {
		case "permanent":
			return nil, client.Permanent(errors.New("bad input"))
		case "after":
			if j.Attempt == 1 {
				return nil, client.RetryAfter(errors.New("busy"), 300*time.Millisecond)
			}
			return nil, nil
		case "redrive":
			if j.Attempt <= 2 {
				return nil, errors.New("flaky")
			}
			return nil, nil
		}
		panic("unexpected job")
	}, client.WithConcurrency(4))
	perm, _ := q.Push(ctx, []byte("permanent"))
	after, _ := q.Push(ctx, []byte("after"))
	red, err := q.Push(ctx, []byte("redrive"), client.WithMaxAttempts(2), client.WithRetry(client.RetryPolicy{Initial: 10 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	if j, err := q.Wait(ctx, perm); err != nil || j.State != queuepb.State_DEAD || j.Attempt != 1 || j.LastError != "bad input" {
		t.Fatalf("permanent failure: got %v %v, want dead after one attempt", j, err)
	}
	if j, err := q.Wait(ctx, after); err != nil || j.State != queuepb.State_COMPLETED || j.Attempt != 2 {
		t.Fatalf("retry after: got %v %v", j, err)
	}
	mu.Lock()
	if d := times[after][1].Sub(times[after][0]); d < 300*time.Millisecond {
		t.Errorf("retried after %s, want at least 300ms", d)
	}
	mu.Unlock()
	if j, err := q.Wait(ctx, red); err != nil || j.State != queuepb.State_DEAD || j.Failures != 2 {
		t.Fatalf("out of attempts: got %v %v", j, err)
	}
	dead, _, err := q.List(ctx, queuepb.State_DEAD, 0, 10, false)
	if err != nil || len(dead) != 2 {
		t.Fatalf("dead set: got %v %v", dead, err)
	}
	if n, err := q.Redrive(ctx, 0, red); err != nil || n != 1 {
		t.Fatalf("redrive: got %d %v", n, err)
	}
	if j, err := q.Wait(ctx, red); err != nil || j.State != queuepb.State_COMPLETED || j.Attempt != 3 {
		t.Fatalf("redriven job: got %v %v, want completed at its third attempt", j, err)
	}
	if n, err := q.Purge(ctx); err != nil || n != 1 {
		t.Fatalf("purge: got %d %v, want the one dead job", n, err)
	}
}

func TestQueueGroupsLimitsAndDependencies(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	cli := connect(t)
	q := cli.Queue(uniqueName("t-groups"))
	if _, err := q.Configure(ctx, &queuepb.ConfigureRequest{MaxRunning: proto.Int32(3)}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	running, most := 0, 0
	inGroup := map[string]int{}
	var order []string
	var violations []string
	h := func(ctx context.Context, j *client.Job) ([]byte, error) {
		mu.Lock()
		running++
		most = max(most, running)
		if j.Group != "" {
			inGroup[j.Group]++
			if inGroup[j.Group] > 1 {
				violations = append(violations, fmt.Sprintf("group %s ran two jobs at once", j.Group))
			}
		}
		order = append(order, string(j.Payload))
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		running--
		if j.Group != "" {
			inGroup[j.Group]--
		}
		mu.Unlock()
		return nil, nil
	}
	// Two workers with plenty of room: the queue's limit holds.
	runWorker(t, q, session(t, cli, 5), h, client.WithConcurrency(5))
	runWorker(t, q, session(t, cli, 5), h, client.WithConcurrency(5))
	var specs []client.Spec
	for i := range 8 {
		for _, g := range []string{"a", "b"} {
			specs = append(specs, client.Spec{Group: g, Payload: []byte(fmt.Sprint(g, i))})
		}
	}
	ids, err := q.PushMany(ctx, specs...)
	if err != nil {
		t.Fatal(err)
	}
	child, err := q.Push(ctx, []byte("child"), client.WithDependsOn(ids[len(ids)-1], ids[len(ids)-2]))
	if err != nil {
		t.Fatal(err)
	}
	if j, err := q.Wait(ctx, child); err != nil || j.State != queuepb.State_COMPLETED {
		t.Fatalf("dependent job: %v %v", j, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(violations) > 0 || most > 3 {
		t.Fatalf("violations %v, most running %d (limit 3)", violations, most)
	}
	if order[len(order)-1] != "child" {
		t.Fatalf("the dependent ran before its dependencies: %v", order)
	}
	next := map[byte]int{}
	for _, p := range order[:len(order)-1] {
		if p[1]-'0' != byte(next[p[0]]) {
			t.Fatalf("group %c out of push order: %v", p[0], order)
		}
		next[p[0]]++
	}
}

func TestQueueWorkerDrainsOnShutdown(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	cli := connect(t)
	q := cli.Queue(uniqueName("t-drain"))
	started := make(chan struct{})
	finish := make(chan struct{})
	w := q.NewWorker(session(t, cli, 5), func(ctx context.Context, j *client.Job) ([]byte, error) {
		close(started)
		select {
		case <-finish:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		return []byte("finished while draining"), nil
	})
	wctx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- w.Run(wctx) }()
	id, err := q.Push(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := q.Push(ctx, nil, client.WithPriority(-1))
	if err != nil {
		t.Fatal(err)
	}
	<-started
	stop() // drain: the running job finishes, no new one is claimed
	select {
	case err := <-errc:
		t.Fatalf("Run returned %v before its job finished", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(finish)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if j, err := q.Get(ctx, id); err != nil || j.State != queuepb.State_COMPLETED {
		t.Fatalf("drained job: %v %v", j, err)
	}
	if j, err := q.Get(ctx, other); err != nil || j.State != queuepb.State_PENDING {
		t.Fatalf("job pushed behind it: %v %v, want still pending", j, err)
	}
}
