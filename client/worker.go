package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
)

// Handler runs a job. The result it returns completes the job (up to 64
// KiB); an error fails the attempt, which is retried per the job's retry
// policy unless the error is Permanent (or the job is out of attempts).
// ctx is cancelled when the job stops being this worker's: cancelled
// (context.Cause is ErrJobCancelled), timed out or released (ErrJobRevoked),
// or the session ended (ErrSessionLost).
type Handler func(ctx context.Context, job *Job) ([]byte, error)

// Why a handler's context was cancelled (context.Cause).
var (
	// ErrJobCancelled: Cancel was called on the job.
	ErrJobCancelled = errors.New("queue: the job was cancelled")
	// ErrJobRevoked: the job is no longer this worker's (its attempt timed
	// out, or the worker's lease ended): whatever it does now is not
	// accepted.
	ErrJobRevoked = errors.New("queue: the job is no longer this worker's")
)

// permanentError marks a failure that is not retried.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err, returned by a Handler, as a failure not worth
// retrying: the job goes to the dead set at once.
func Permanent(err error) error { return permanentError{err} }

// retryAfterError asks for the next attempt after a delay.
type retryAfterError struct {
	err   error
	after time.Duration
}

func (e retryAfterError) Error() string { return e.err.Error() }
func (e retryAfterError) Unwrap() error { return e.err }

// RetryAfter marks err, returned by a Handler, as a failure to retry after
// d rather than after the policy's backoff.
func RetryAfter(err error, d time.Duration) error { return retryAfterError{err, d} }

// Job is a job a worker runs.
type Job struct {
	Queue   string
	ID      uint64
	Payload []byte
	// Attempt counts the job's claims, this one included (from 1).
	Attempt int
	// Token is this claim's fencing token: it increases with every claim
	// of the job. Pass it to what the job writes elsewhere, which should
	// refuse a token lower than the highest it has seen.
	Token    int64
	Priority int32
	Group    string
	// Deadline is when this attempt times out (Extend moves it).
	Deadline time.Time
	// Raw is the job as the server sent it.
	Raw *queuepb.Job

	w      *Worker
	cancel context.CancelCauseFunc
	mu     sync.Mutex
	// done is set once the job was finished by CompleteTxn.
	done bool
}

// Extend makes the attempt time out d from now (0: the job's timeout).
func (j *Job) Extend(ctx context.Context, d time.Duration) error {
	resp, err := j.w.q.api.Extend(ctx, &queuepb.ExtendRequest{Queue: j.Queue, Id: j.ID, Token: j.Token, TimeoutMs: d.Milliseconds()})
	if err != nil {
		return queueError(err)
	}
	j.mu.Lock()
	j.Deadline = time.UnixMilli(resp.DeadlineMs)
	j.mu.Unlock()
	return nil
}

// Progress records the job's progress (up to 64 KiB), shown by Get.
func (j *Job) Progress(ctx context.Context, progress []byte) error {
	_, err := j.w.q.api.Progress(ctx, &queuepb.ProgressRequest{Queue: j.Queue, Id: j.ID, Token: j.Token, Progress: progress})
	return queueError(err)
}

// CompleteTxn completes the job with result if every compare holds, and
// makes puts in the same revision; it fails with ErrStaleToken if the job
// is no longer this claim's, ErrCompareFailed if a compare did not hold.
// After it succeeded, what the handler returns is ignored. On a store split
// into data ranges the compared and put keys must lie in the first range,
// with the queues (codes.FailedPrecondition otherwise).
func (j *Job) CompleteTxn(ctx context.Context, result []byte, cmps []clientv3.Cmp, puts ...KVPut) error {
	_, err := j.w.q.api.Complete(ctx, &queuepb.CompleteRequest{Queue: j.Queue, Id: j.ID, Token: j.Token, Result: result,
		Compares: compares(cmps), Puts: kvPuts(puts)})
	if err != nil {
		return queueError(err)
	}
	j.mu.Lock()
	j.done = true
	j.mu.Unlock()
	return nil
}

// WorkerOption configures a Worker.
type WorkerOption func(*Worker)

// WithConcurrency sets how many jobs the worker runs at once (default 1).
func WithConcurrency(n int) WorkerOption {
	return func(w *Worker) {
		if n > 0 {
			w.concurrency = n
		}
	}
}

// WithWorkerID sets the worker's ID in its queue (default: random). It
// must be unique among the queue's workers.
func WithWorkerID(id string) WorkerOption { return func(w *Worker) { w.id = id } }

// WithDrainTimeout bounds how long Run waits, once its context ends, for
// the running jobs to finish before cancelling them (default: no bound).
func WithDrainTimeout(d time.Duration) WorkerOption { return func(w *Worker) { w.drain = d } }

// Worker runs a queue's jobs with a handler, on a session: the jobs it
// claims are bound to the session's lease, so if the process dies they
// are available again as soon as the lease expires.
type Worker struct {
	q           *Queue
	s           *Session
	h           Handler
	id          string
	concurrency int
	drain       time.Duration
}

// NewWorker returns a worker of the queue that runs h on s.
func (q *Queue) NewWorker(s *Session, h Handler, opts ...WorkerOption) *Worker {
	w := &Worker{q: q, s: s, h: h, concurrency: 1}
	for _, o := range opts {
		o(w)
	}
	if w.id == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		w.id = "w-" + hex.EncodeToString(b[:])
	}
	return w
}

// ID returns the worker's ID.
func (w *Worker) ID() string { return w.id }

// workerRun is the state of one Run.
type workerRun struct {
	w       *Worker
	running map[uint64]*Job
	// unacked are the finishes sent (or to send) without an answer yet.
	unacked map[uint64]*queuepb.Finish
	results chan jobResult
	// stopped is closed when Run returns: handlers still running then
	// drop their results.
	stopped chan struct{}
	drained bool
}

type jobResult struct {
	job *Job
	fin *queuepb.Finish // nil: finished by CompleteTxn
}

type streamEvent struct {
	resp *queuepb.ClaimResponse
	err  error
}

// Run claims and runs jobs until ctx ends, then stops claiming, lets the
// running jobs finish (see WithDrainTimeout), reports them and returns
// nil once the cluster has stopped claiming for the worker (a job claimed
// for it before that is run too). It returns ErrSessionLost if the session ends first (the running
// jobs' contexts are cancelled: they are no longer this worker's).
// Connection failures are retried.
func (w *Worker) Run(ctx context.Context) error {
	r := &workerRun{w: w, running: map[uint64]*Job{}, unacked: map[uint64]*queuepb.Finish{}, results: make(chan jobResult), stopped: make(chan struct{})}
	defer close(r.stopped)
	var drainTimer <-chan time.Time
	backoff := retryPause
	for {
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		stream, err := w.q.api.Claim(sctx)
		if err == nil {
			err = r.open(stream)
		}
		if err != nil {
			cancel()
			if !transient(err) && !isStreamGone(err) {
				r.stopAll(ErrJobRevoked)
				return err
			}
			select {
			case <-w.s.Done():
				r.stopAll(ErrSessionLost)
				return ErrSessionLost
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = retryPause
		events := make(chan streamEvent, 16)
		go func() {
			for {
				resp, err := stream.Recv()
				events <- streamEvent{resp, err}
				if err != nil {
					return
				}
			}
		}()
		err = r.serve(ctx, stream, events, &drainTimer)
		cancel()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrSessionLost):
			return err
		case !transient(err) && !isStreamGone(err):
			r.stopAll(ErrJobRevoked)
			return err
		}
	}
}

func statusCode(err error) codes.Code { return status.Code(err) }

// isStreamGone reports whether a stream ended because the connection or
// the member went away (reconnecting helps).
func isStreamGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || statusCode(err) == codes.Canceled || statusCode(err) == codes.Aborted
}

// open sends the stream's first request: the worker, its capacity (none
// once draining) and the finishes not acknowledged yet.
func (r *workerRun) open(stream queuepb.Queue_ClaimClient) error {
	capacity := int32(r.w.concurrency)
	if r.drained {
		capacity = 0
	}
	first := &queuepb.ClaimRequest{Queue: r.w.q.name, Worker: r.w.id, Lease: int64(r.w.s.Lease()), Capacity: proto.Int32(capacity)}
	for _, f := range r.unacked {
		first.Finish = append(first.Finish, f)
	}
	return stream.Send(first)
}

// serve runs one stream until it fails (a reconnect follows), or the run
// ends (nil, or ErrSessionLost).
//
// A drained run with nothing running or unanswered closes its side of the
// stream and reads on until the server ends it: the server ends it only
// after it applied the capacity of 0 sent before, and sent every job it
// claimed for the worker until then. Returning earlier would leave those
// jobs claimed for a worker that is gone, RUNNING until their timeout or
// the lease's end. A job that arrives then is run (it was claimed for
// us), and its result reported on a new stream.
func (r *workerRun) serve(ctx context.Context, stream queuepb.Queue_ClaimClient, events <-chan streamEvent, drainTimer *<-chan time.Time) error {
	w := r.w
	done := ctx.Done()
	if r.drained {
		done = nil
	}
	halfClosed := false
	for {
		if r.drained && !halfClosed && len(r.running) == 0 && len(r.unacked) == 0 {
			if err := stream.CloseSend(); err != nil {
				return err
			}
			halfClosed = true
		}
		select {
		case <-done:
			done = nil
			r.drained = true
			if w.drain > 0 {
				*drainTimer = time.After(w.drain)
			}
			if err := stream.Send(&queuepb.ClaimRequest{Capacity: proto.Int32(0)}); err != nil {
				return err
			}
		case <-*drainTimer:
			r.stopAll(ErrJobRevoked)
		case <-w.s.Done():
			r.stopAll(ErrSessionLost)
			return ErrSessionLost
		case res := <-r.results:
			delete(r.running, res.job.ID)
			if res.fin == nil {
				continue
			}
			r.unacked[res.fin.Id] = res.fin
			if halfClosed {
				continue // sent when the stream is opened again
			}
			if err := stream.Send(&queuepb.ClaimRequest{Finish: []*queuepb.Finish{res.fin}}); err != nil {
				return err
			}
		case ev := <-events:
			if ev.err != nil {
				if halfClosed && errors.Is(ev.err, io.EOF) && len(r.running) == 0 && len(r.unacked) == 0 {
					return nil // the server stopped claiming for us, and we have run all it claimed
				}
				return ev.err // a new stream reports what is left
			}
			r.handle(ev.resp)
		}
	}
}

// handle applies a response: new jobs start, revoked ones are told,
// answered finishes are forgotten.
func (r *workerRun) handle(resp *queuepb.ClaimResponse) {
	for _, f := range resp.Finished {
		if u := r.unacked[f.Id]; u != nil && u.Token == f.Token {
			delete(r.unacked, f.Id)
		}
	}
	for _, rv := range resp.Revoked {
		if j := r.running[rv.Id]; j != nil && j.Token == rv.Token {
			cause := ErrJobRevoked
			if rv.Reason == "cancelled" {
				cause = ErrJobCancelled
			}
			j.cancel(fmt.Errorf("%w (%s)", cause, rv.Reason))
		}
	}
	for _, pj := range resp.Jobs {
		if j := r.running[pj.Id]; j != nil && j.Token == pj.Token {
			continue // delivered again after a reconnect
		}
		if u := r.unacked[pj.Id]; u != nil && u.Token == pj.Token {
			continue // finished, the answer not in yet
		}
		r.start(pj)
	}
}

func (r *workerRun) start(pj *queuepb.Job) {
	w := r.w
	j := &Job{Queue: pj.Queue, ID: pj.Id, Payload: pj.Payload, Attempt: int(pj.Attempt), Token: pj.Token, Priority: pj.Priority,
		Group: pj.Group, Deadline: time.UnixMilli(pj.DeadlineMs), Raw: pj, w: w}
	jctx, cancel := context.WithCancelCause(context.Background())
	j.cancel = cancel
	r.running[j.ID] = j
	go func() {
		defer cancel(nil)
		result, err := r.call(jctx, j)
		j.mu.Lock()
		finished := j.done
		j.mu.Unlock()
		var fin *queuepb.Finish
		if !finished {
			fin = &queuepb.Finish{Id: j.ID, Token: j.Token, Result: result}
			if err != nil {
				fin.Result = nil
				fin.Error = err.Error()
				if fin.Error == "" {
					fin.Error = "failed"
				}
				var p permanentError
				var ra retryAfterError
				switch {
				case errors.As(err, &p):
					fin.Permanent = true
				case errors.As(err, &ra):
					fin.RetryAfterMs = max(ra.after.Milliseconds(), 1)
				}
			}
		}
		select {
		case r.results <- jobResult{job: j, fin: fin}:
		case <-r.stopped:
		}
	}()
}

// call runs the handler, turning a panic into a failure.
func (r *workerRun) call(ctx context.Context, j *Job) (result []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return r.w.h(ctx, j)
}

// stopAll cancels every running job's context.
func (r *workerRun) stopAll(cause error) {
	for _, j := range r.running {
		j.cancel(cause)
	}
}
