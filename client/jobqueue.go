package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
)

// Queue is a job queue (api/queuepb): producers push jobs, workers claim
// them over a stream, each claim with a fencing token, bound to the
// worker's session lease. A Queue is safe for concurrent use.
type Queue struct {
	c    *Client
	name string
	api  queuepb.QueueClient
}

// Queue returns the queue called name (letters, digits and - _ . : @).
// Queues exist as soon as they are used.
func (c *Client) Queue(name string) *Queue {
	return &Queue{c: c, name: name, api: queuepb.NewQueueClient(c.ActiveConnection())}
}

// Name returns the queue's name.
func (q *Queue) Name() string { return q.name }

// RetryPolicy says when a failed job runs again: after
// min(Max, Initial * Multiplier^(failures-1)), give or take Jitter (a
// fraction; negative: none). Zero fields take the defaults (1s, 1h, 2,
// 0.2).
type RetryPolicy struct {
	Initial, Max time.Duration
	Multiplier   float64
	Jitter       float64
}

func (p *RetryPolicy) pb() *queuepb.RetryPolicy {
	if p == nil {
		return nil
	}
	return &queuepb.RetryPolicy{InitialBackoffMs: p.Initial.Milliseconds(), MaxBackoffMs: p.Max.Milliseconds(), Multiplier: p.Multiplier, Jitter: p.Jitter}
}

// Spec is a job to push.
type Spec struct {
	Payload []byte
	// Priority: higher runs first.
	Priority int32
	// RunAt or Delay: not before then.
	RunAt time.Time
	Delay time.Duration
	// MaxAttempts: failed attempts that make the job dead (0: the queue's
	// default, 25).
	MaxAttempts int
	Retry       *RetryPolicy
	// IdempotencyKey: a second push with the key, while the first job is
	// retained, returns the first job.
	IdempotencyKey string
	// Group: jobs of a group run one at a time (up to the queue's group
	// limit), in push order; groups are served round-robin.
	Group string
	// DependsOn: jobs of the queue that must complete first.
	DependsOn []uint64
	// Timeout: how long an attempt may run (0: the queue's default, 5m).
	Timeout time.Duration
}

func (s *Spec) pb() *queuepb.JobSpec {
	out := &queuepb.JobSpec{
		Payload: s.Payload, Priority: s.Priority, DelayMs: s.Delay.Milliseconds(), MaxAttempts: int32(s.MaxAttempts),
		Retry: s.Retry.pb(), IdempotencyKey: s.IdempotencyKey, Group: s.Group, DependsOn: s.DependsOn, TimeoutMs: s.Timeout.Milliseconds(),
	}
	if !s.RunAt.IsZero() {
		out.RunAtMs = s.RunAt.UnixMilli()
	}
	return out
}

// PushOption sets a field of the Spec Push makes.
type PushOption func(*Spec)

// WithPriority sets the job's priority (higher runs first).
func WithPriority(p int32) PushOption { return func(s *Spec) { s.Priority = p } }

// WithDelay makes the job wait d before it runs.
func WithDelay(d time.Duration) PushOption { return func(s *Spec) { s.Delay = d } }

// WithRunAt makes the job wait until t.
func WithRunAt(t time.Time) PushOption { return func(s *Spec) { s.RunAt = t } }

// WithMaxAttempts sets how many failed attempts make the job dead.
func WithMaxAttempts(n int) PushOption { return func(s *Spec) { s.MaxAttempts = n } }

// WithRetry sets the job's retry policy.
func WithRetry(p RetryPolicy) PushOption { return func(s *Spec) { s.Retry = &p } }

// WithIdempotencyKey sets the job's idempotency key.
func WithIdempotencyKey(k string) PushOption { return func(s *Spec) { s.IdempotencyKey = k } }

// WithGroup puts the job in a group (FIFO, one at a time by default).
func WithGroup(g string) PushOption { return func(s *Spec) { s.Group = g } }

// WithDependsOn makes the job wait for jobs of the queue to complete.
func WithDependsOn(ids ...uint64) PushOption { return func(s *Spec) { s.DependsOn = ids } }

// WithJobTimeout sets how long an attempt may run.
func WithJobTimeout(d time.Duration) PushOption { return func(s *Spec) { s.Timeout = d } }

// Push pushes one job and returns its ID (or, when its idempotency key
// matched a retained job, that job's).
func (q *Queue) Push(ctx context.Context, payload []byte, opts ...PushOption) (uint64, error) {
	s := Spec{Payload: payload}
	for _, o := range opts {
		o(&s)
	}
	ids, _, err := q.PushTxn(ctx, nil, nil, s)
	if err != nil {
		return 0, err
	}
	return ids[0], nil
}

// PushMany pushes jobs in one request (one Raft command): all or none.
func (q *Queue) PushMany(ctx context.Context, specs ...Spec) ([]uint64, error) {
	ids, _, err := q.PushTxn(ctx, nil, nil, specs...)
	return ids, err
}

// KVPut is a KV put made atomically with a push or a completion.
type KVPut struct {
	Key, Value string
	Lease      clientv3.LeaseID
}

// ErrCompareFailed is returned when a compare of PushTxn or CompleteTxn
// did not hold: nothing was written.
var ErrCompareFailed = errors.New("queue: compare failed")

// PushTxn pushes jobs if every compare holds (etcd's compares, as built
// with clientv3.Compare), and makes puts in the same revision: enqueue
// exactly when your own state change commits. It returns the IDs and, for
// each job, whether its idempotency key matched a retained job. On a store
// split into data ranges the compared and put keys must lie in the first
// range, with the queues (codes.FailedPrecondition otherwise).
func (q *Queue) PushTxn(ctx context.Context, cmps []clientv3.Cmp, puts []KVPut, specs ...Spec) ([]uint64, []bool, error) {
	req := &queuepb.PushRequest{Queue: q.name, Compares: compares(cmps), Puts: kvPuts(puts)}
	for i := range specs {
		req.Jobs = append(req.Jobs, specs[i].pb())
	}
	var resp *queuepb.PushResponse
	err := retry(ctx, func() error {
		var err error
		resp, err = q.api.Push(ctx, req)
		return err
	})
	if err != nil {
		return nil, nil, queueError(err)
	}
	return resp.Ids, resp.Duplicate, nil
}

func compares(cmps []clientv3.Cmp) []*queuepb.Compare {
	var out []*queuepb.Compare
	for _, cmp := range cmps {
		c := cmp.GetCompare()
		pc := &queuepb.Compare{Result: queuepb.Compare_CompareResult(c.Result), Target: queuepb.Compare_CompareTarget(c.Target), Key: c.Key, RangeEnd: c.RangeEnd}
		switch t := c.TargetUnion.(type) {
		case *pb.Compare_Version:
			pc.TargetUnion = &queuepb.Compare_Version{Version: t.Version}
		case *pb.Compare_CreateRevision:
			pc.TargetUnion = &queuepb.Compare_CreateRevision{CreateRevision: t.CreateRevision}
		case *pb.Compare_ModRevision:
			pc.TargetUnion = &queuepb.Compare_ModRevision{ModRevision: t.ModRevision}
		case *pb.Compare_Value:
			pc.TargetUnion = &queuepb.Compare_Value{Value: t.Value}
		case *pb.Compare_Lease:
			pc.TargetUnion = &queuepb.Compare_Lease{Lease: t.Lease}
		}
		out = append(out, pc)
	}
	return out
}

func kvPuts(puts []KVPut) []*queuepb.KeyValuePut {
	var out []*queuepb.KeyValuePut
	for _, p := range puts {
		out = append(out, &queuepb.KeyValuePut{Key: []byte(p.Key), Value: []byte(p.Value), Lease: int64(p.Lease)})
	}
	return out
}

// ErrStaleToken is returned when an operation on a job names a token that
// is not the job's current claim (it was claimed again, finished,
// cancelled or released): the caller no longer owns the job.
var ErrStaleToken = errors.New("queue: stale token: the job is no longer this claim's")

// queueError maps the service's refusals to this package's errors.
func queueError(err error) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.FailedPrecondition {
		return err
	}
	switch msg := st.Message(); {
	case len(msg) >= len("queue: stale token") && msg[:len("queue: stale token")] == "queue: stale token":
		return fmt.Errorf("%w (%s)", ErrStaleToken, msg)
	case msg == "queue: compare failed":
		return ErrCompareFailed
	}
	return err
}

// Get returns a job, with its payload, result and last error.
func (q *Queue) Get(ctx context.Context, id uint64) (*queuepb.Job, error) {
	resp, err := q.api.Get(ctx, &queuepb.GetRequest{Queue: q.name, Id: id})
	if err != nil {
		return nil, err
	}
	return resp.Job, nil
}

// Wait waits until a job is finished (completed, dead or cancelled) and
// returns it; ctx bounds the wait.
func (q *Queue) Wait(ctx context.Context, id uint64) (*queuepb.Job, error) {
	for {
		resp, err := q.api.Wait(ctx, &queuepb.WaitRequest{Queue: q.name, Id: id})
		if err == nil {
			return resp.Job, nil
		}
		if ctx.Err() != nil || !transient(err) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(retryPause):
		}
	}
}

// Cancel cancels a pending job, or asks the worker of a running one to
// stop; it returns the job's state after the call.
func (q *Queue) Cancel(ctx context.Context, id uint64) (queuepb.State, error) {
	resp, err := q.api.Cancel(ctx, &queuepb.CancelRequest{Queue: q.name, Id: id})
	if err != nil {
		return 0, err
	}
	return resp.State, nil
}

// List returns up to limit jobs with IDs above after, of state st (0:
// any), by ID; more says whether there are more.
func (q *Queue) List(ctx context.Context, st queuepb.State, after uint64, limit int, withPayload bool) (jobs []*queuepb.Job, more bool, err error) {
	resp, err := q.api.List(ctx, &queuepb.ListRequest{Queue: q.name, State: st, After: after, Limit: int32(limit), WithPayload: withPayload})
	if err != nil {
		return nil, false, err
	}
	return resp.Jobs, resp.More, nil
}

// Stats returns the queue's counts and rates.
func (q *Queue) Stats(ctx context.Context) (*queuepb.StatsResponse, error) {
	return q.api.Stats(ctx, &queuepb.StatsRequest{Queue: q.name})
}

// Configure changes the queue's settings: the fields set in req (its
// Queue is filled in).
func (q *Queue) Configure(ctx context.Context, req *queuepb.ConfigureRequest) (*queuepb.QueueConfig, error) {
	req = proto.Clone(req).(*queuepb.ConfigureRequest)
	req.Queue = q.name
	resp, err := q.api.Configure(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.Config, nil
}

// Pause stops the queue's claims; Resume starts them again.
func (q *Queue) Pause(ctx context.Context) error {
	_, err := q.Configure(ctx, &queuepb.ConfigureRequest{Paused: proto.Bool(true)})
	return err
}

// Resume undoes Pause.
func (q *Queue) Resume(ctx context.Context) error {
	_, err := q.Configure(ctx, &queuepb.ConfigureRequest{Paused: proto.Bool(false)})
	return err
}

// Redrive makes dead jobs (the given ones, or all) pending again with
// fresh attempts, at most rate a second (0: 1000); it returns how many.
func (q *Queue) Redrive(ctx context.Context, rate int, ids ...uint64) (int64, error) {
	resp, err := q.api.Redrive(ctx, &queuepb.RedriveRequest{Queue: q.name, Ids: ids, Rate: int32(rate)})
	if err != nil {
		return 0, err
	}
	return resp.Redriven, nil
}

// Purge deletes dead jobs (or the given finished ones); it returns how
// many.
func (q *Queue) Purge(ctx context.Context, ids ...uint64) (int64, error) {
	resp, err := q.api.Purge(ctx, &queuepb.PurgeRequest{Queue: q.name, Ids: ids})
	if err != nil {
		return 0, err
	}
	return resp.Purged, nil
}

// PutSchedule creates or replaces a cron schedule (5 fields, @every
// <duration> or a descriptor such as @hourly; UTC) that pushes spec at
// every firing, exactly once per firing.
func (q *Queue) PutSchedule(ctx context.Context, name, cron string, spec Spec) (*queuepb.Schedule, error) {
	resp, err := q.api.PutSchedule(ctx, &queuepb.PutScheduleRequest{Queue: q.name, Schedule: &queuepb.Schedule{Name: name, Cron: cron, Job: spec.pb()}})
	if err != nil {
		return nil, err
	}
	return resp.Schedule, nil
}

// DeleteSchedule deletes a schedule; it reports whether it existed.
func (q *Queue) DeleteSchedule(ctx context.Context, name string) (bool, error) {
	resp, err := q.api.DeleteSchedule(ctx, &queuepb.DeleteScheduleRequest{Queue: q.name, Name: name})
	if err != nil {
		return false, err
	}
	return resp.Deleted, nil
}

// Schedules lists the queue's schedules.
func (q *Queue) Schedules(ctx context.Context) ([]*queuepb.Schedule, error) {
	resp, err := q.api.ListSchedules(ctx, &queuepb.ListSchedulesRequest{Queue: q.name})
	if err != nil {
		return nil, err
	}
	return resp.Schedules, nil
}
