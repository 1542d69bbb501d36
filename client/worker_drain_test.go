package client

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/synod-io/synod/api/queuepb"
)

// fakeStream is one claim stream of fakeQueue: what the worker sends is
// recorded, and what it receives is what the test feeds.
type fakeStream struct {
	grpc.ClientStream
	sent       chan *queuepb.ClaimRequest
	recv       chan *queuepb.ClaimResponse // closed: io.EOF
	mu         sync.Mutex
	halfClosed bool
	closed     chan struct{} // closed by CloseSend
}

func (f *fakeStream) Send(r *queuepb.ClaimRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.halfClosed {
		return errors.New("fake stream: Send after CloseSend")
	}
	f.sent <- r
	return nil
}

func (f *fakeStream) Recv() (*queuepb.ClaimResponse, error) {
	r, ok := <-f.recv
	if !ok {
		return nil, io.EOF
	}
	return r, nil
}

func (f *fakeStream) CloseSend() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.halfClosed {
		f.halfClosed = true
		close(f.closed)
	}
	return nil
}

// fakeQueue hands out the streams the test made, in order.
type fakeQueue struct {
	queuepb.QueueClient
	streams chan *fakeStream
}

func (f *fakeQueue) Claim(ctx context.Context, _ ...grpc.CallOption) (queuepb.Queue_ClaimClient, error) {
	select {
	case s := <-f.streams:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func newFakeStream() *fakeStream {
	return &fakeStream{sent: make(chan *queuepb.ClaimRequest, 16), recv: make(chan *queuepb.ClaimResponse, 16), closed: make(chan struct{})}
}

func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing after 10s", what)
		var zero T
		return zero
	}
}

// TestWorkerDrainRunsJobsClaimedBeforeItsCapacityOfZero: a draining worker
// does not return before the server ended its stream (which it does once
// its capacity of 0 applied): a job claimed for it until then is run, and
// its result reported on a new stream, not dropped on the half-closed one.
func TestWorkerDrainRunsJobsClaimedBeforeItsCapacityOfZero(t *testing.T) {
	api := &fakeQueue{streams: make(chan *fakeStream, 2)}
	first, second := newFakeStream(), newFakeStream()
	api.streams <- first
	api.streams <- second
	s := &Session{lease: 7, done: make(chan struct{})}
	ran := make(chan uint64, 1)
	w := (&Queue{name: "q", api: api}).NewWorker(s, func(ctx context.Context, j *Job) ([]byte, error) {
		ran <- j.ID
		return []byte("late"), nil
	}, WithWorkerID("w"))
	ctx, stop := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()

	if r := within(t, first.sent, "first request"); r.GetCapacity() != 1 {
		t.Fatalf("first request: got capacity %d, want 1", r.GetCapacity())
	}
	stop()
	if r := within(t, first.sent, "drain request"); r.Capacity == nil || *r.Capacity != 0 {
		t.Fatalf("request on drain: got %v, want capacity 0", r)
	}
	within(t, first.closed, "half-close of the idle drained stream")
	select {
	case err := <-errc:
		t.Fatalf("Run returned %v before the server ended the stream", err)
	default:
	}
	// The server sends a job it claimed before the capacity of 0 applied,
	// then ends the stream.
	first.recv <- &queuepb.ClaimResponse{Jobs: []*queuepb.Job{{Queue: "q", Id: 42, Token: 5, Attempt: 1}}}
	close(first.recv)
	if id := within(t, ran, "the late job's handler"); id != 42 {
		t.Fatalf("handler ran job %d, want 42", id)
	}
	// Its result goes on a new stream, which asks for no jobs (the result
	// comes with the stream's first request, or after it).
	r := within(t, second.sent, "first request of the second stream")
	if r.Capacity == nil || *r.Capacity != 0 {
		t.Fatalf("second stream's first request: got %v, want capacity 0", r)
	}
	if len(r.Finish) == 0 {
		r = within(t, second.sent, "job 42's result on the second stream")
	}
	if len(r.Finish) != 1 || r.Finish[0].Id != 42 || r.Finish[0].Token != 5 || string(r.Finish[0].Result) != "late" || r.Finish[0].Error != "" {
		t.Fatalf("second stream: got %v, want job 42's result (token 5, \"late\")", r)
	}
	second.recv <- &queuepb.ClaimResponse{Finished: []*queuepb.FinishResult{{Id: 42, Token: 5}}}
	within(t, second.closed, "half-close of the second stream")
	close(second.recv)
	if err := within(t, errc, "Run's return"); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
}
