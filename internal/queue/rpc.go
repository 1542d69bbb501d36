package queue

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/queue/machine"
	"github.com/synod-io/synod/internal/queue/queuewire"
)

// server implements queuepb.QueueServer.
type server struct {
	queuepb.UnimplementedQueueServer
	s *Service
}

func (sv *server) do(ctx context.Context, queue string, op *queuewire.Op) (proto.Message, error) {
	if err := machine.CheckName("queue", queue); err != nil {
		return nil, err
	}
	op.Queue = queue
	return sv.s.batch.do(ctx, op)
}

func (sv *server) header() *queuepb.ResponseHeader { return sv.s.b.Header() }

// Push implements queuepb.QueueServer.
func (sv *server) Push(ctx context.Context, req *queuepb.PushRequest) (*queuepb.PushResponse, error) {
	out, err := sv.do(ctx, req.Queue, &queuewire.Op{Op: &queuewire.Op_Push{Push: req}})
	if err != nil {
		return nil, err
	}
	resp := out.(*queuepb.PushResponse)
	resp.Header = sv.header()
	return resp, nil
}

// Complete implements queuepb.QueueServer.
func (sv *server) Complete(ctx context.Context, req *queuepb.CompleteRequest) (*queuepb.CompleteResponse, error) {
	if _, err := sv.do(ctx, req.Queue, &queuewire.Op{Op: &queuewire.Op_Complete{Complete: req}}); err != nil {
		return nil, err
	}
	return &queuepb.CompleteResponse{Header: sv.header()}, nil
}

// Fail implements queuepb.QueueServer.
func (sv *server) Fail(ctx context.Context, req *queuepb.FailRequest) (*queuepb.FailResponse, error) {
	msg := req.Error
	if msg == "" {
		msg = "failed"
	}
	out, err := sv.do(ctx, req.Queue, &queuewire.Op{Op: &queuewire.Op_Finish{Finish: &queuepb.Finish{
		Id: req.Id, Token: req.Token, Error: msg, Permanent: req.Permanent, RetryAfterMs: req.RetryAfterMs}}})
	if err != nil {
		return nil, err
	}
	resp := out.(*queuepb.FailResponse)
	resp.Header = sv.header()
	return resp, nil
}

// Extend implements queuepb.QueueServer.
func (sv *server) Extend(ctx context.Context, req *queuepb.ExtendRequest) (*queuepb.ExtendResponse, error) {
	out, err := sv.do(ctx, req.Queue, &queuewire.Op{Op: &queuewire.Op_Extend{Extend: req}})
	if err != nil {
		return nil, err
	}
	resp := out.(*queuepb.ExtendResponse)
	resp.Header = sv.header()
	return resp, nil
}

// Progress implements queuepb.QueueServer.
func (sv *server) Progress(ctx context.Context, req *queuepb.ProgressRequest) (*queuepb.ProgressResponse, error) {
	if _, err := sv.do(ctx, req.Queue, &queuewire.Op{Op: &queuewire.Op_Progress{Progress: req}}); err != nil {
		return nil, err
	}
	return &queuepb.ProgressResponse{Header: sv.header()}, nil
}

// Cancel implements queuepb.QueueServer.
func (sv *server) Cancel(ctx context.Context, req *queuepb.CancelRequest) (*queuepb.CancelResponse, error) {
	out, err := sv.do(ctx, req.Queue, &queuewire.Op{Op: &queuewire.Op_Cancel{Cancel: req}})
	if err != nil {
		return nil, err
	}
	resp := out.(*queuepb.CancelResponse)
	resp.Header = sv.header()
	return resp, nil
}

// Configure implements queuepb.QueueServer.
func (sv *server) Configure(ctx context.Context, req *queuepb.ConfigureRequest) (*queuepb.ConfigureResponse, error) {
	out, err := sv.do(ctx, req.Queue, &queuewire.Op{Op: &queuewire.Op_Configure{Configure: req}})
	if err != nil {
		return nil, err
	}
	resp := out.(*queuepb.ConfigureResponse)
	resp.Header = sv.header()
	return resp, nil
}

// Redrive implements queuepb.QueueServer: at most rate jobs a second, one
// command a second, until every dead job (or every one listed) is pending.
func (sv *server) Redrive(ctx context.Context, req *queuepb.RedriveRequest) (*queuepb.RedriveResponse, error) {
	rate := req.Rate
	if rate <= 0 {
		rate = 1000
	}
	var total int64
	ids := req.Ids
	for {
		chunk := ids
		if len(chunk) > int(rate) {
			chunk = chunk[:rate]
		}
		start := time.Now()
		out, err := sv.do(ctx, req.Queue, &queuewire.Op{Op: &queuewire.Op_Redrive{Redrive: &queuepb.RedriveRequest{Ids: chunk, Rate: rate}}})
		if err != nil {
			if total > 0 {
				return nil, status.Errorf(status.Code(err), "%v (after redriving %d jobs)", err, total)
			}
			return nil, err
		}
		n := out.(*queuepb.RedriveResponse).Redriven
		total += n
		if len(req.Ids) > 0 {
			ids = ids[len(chunk):]
			if len(ids) == 0 {
				break
			}
		} else if n < int64(rate) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-time.After(time.Second - time.Since(start)):
		}
	}
	return &queuepb.RedriveResponse{Header: sv.header(), Redriven: total}, nil
}

// Purge implements queuepb.QueueServer.
func (sv *server) Purge(ctx context.Context, req *queuepb.PurgeRequest) (*queuepb.PurgeResponse, error) {
	var total int64
	for {
		out, err := sv.do(ctx, req.Queue, &queuewire.Op{Op: &queuewire.Op_Purge{Purge: req}})
		if err != nil {
			return nil, err
		}
		n := out.(*queuepb.PurgeResponse).Purged
		total += n
		if len(req.Ids) > 0 || n == 0 {
			break
		}
	}
	return &queuepb.PurgeResponse{Header: sv.header(), Purged: total}, nil
}

// PutSchedule implements queuepb.QueueServer.
func (sv *server) PutSchedule(ctx context.Context, req *queuepb.PutScheduleRequest) (*queuepb.PutScheduleResponse, error) {
	if req.Schedule == nil {
		return nil, status.Error(codes.InvalidArgument, "queue: no schedule")
	}
	if _, err := parseCron(req.Schedule.Cron); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "queue: %v", err)
	}
	out, err := sv.do(ctx, req.Queue, &queuewire.Op{Op: &queuewire.Op_PutSchedule{PutSchedule: req.Schedule}})
	if err != nil {
		return nil, err
	}
	resp := out.(*queuepb.PutScheduleResponse)
	resp.Header = sv.header()
	resp.Schedule.NextMs = NextFiring(resp.Schedule).UnixMilli()
	sv.s.wakeLeader()
	return resp, nil
}

// DeleteSchedule implements queuepb.QueueServer.
func (sv *server) DeleteSchedule(ctx context.Context, req *queuepb.DeleteScheduleRequest) (*queuepb.DeleteScheduleResponse, error) {
	out, err := sv.do(ctx, req.Queue, &queuewire.Op{Op: &queuewire.Op_DeleteSchedule{DeleteSchedule: req.Name}})
	if err != nil {
		return nil, err
	}
	resp := out.(*queuepb.DeleteScheduleResponse)
	resp.Header = sv.header()
	return resp, nil
}

// ListSchedules implements queuepb.QueueServer.
func (sv *server) ListSchedules(ctx context.Context, req *queuepb.ListSchedulesRequest) (*queuepb.ListSchedulesResponse, error) {
	if err := machine.CheckName("queue", req.Queue); err != nil {
		return nil, err
	}
	if err := sv.s.b.Linearize(ctx); err != nil {
		return nil, err
	}
	resp := &queuepb.ListSchedulesResponse{Header: sv.header(), Schedules: sv.s.m().Schedules(req.Queue)}
	for _, sc := range resp.Schedules {
		if n := NextFiring(sc); !n.IsZero() {
			sc.NextMs = n.UnixMilli()
		}
	}
	return resp, nil
}

// Stats implements queuepb.QueueServer.
func (sv *server) Stats(ctx context.Context, req *queuepb.StatsRequest) (*queuepb.StatsResponse, error) {
	if err := machine.CheckName("queue", req.Queue); err != nil {
		return nil, err
	}
	if err := sv.s.b.Linearize(ctx); err != nil {
		return nil, err
	}
	now := sv.s.now()
	st := sv.s.m().Stats(req.Queue, now)
	resp := &queuepb.StatsResponse{
		Header: sv.header(), Queue: req.Queue,
		Available: st.Available, Scheduled: st.Scheduled, Waiting: st.Waiting, Running: st.Running,
		Completed: st.Completed, Dead: st.Dead, Cancelled: st.Cancelled,
		Workers: st.Workers, Capacity: st.Capacity, Config: st.Config, Schedules: st.Schedules,
	}
	if st.OldestAvailable > 0 && st.OldestAvailable <= now {
		resp.OldestAvailableMs = now - st.OldestAvailable
	}
	r := sv.s.metrics.rates(req.Queue)
	resp.PushedPerSecond, resp.CompletedPerSecond, resp.FailedPerSecond, resp.DeadPerSecond = r.pushed, r.completed, r.failed, r.dead
	resp.PickupP50Ms, resp.PickupP99Ms = r.p50*1000, r.p99*1000
	return resp, nil
}

// Get implements queuepb.QueueServer.
func (sv *server) Get(ctx context.Context, req *queuepb.GetRequest) (*queuepb.GetResponse, error) {
	if err := machine.CheckName("queue", req.Queue); err != nil {
		return nil, err
	}
	if err := sv.s.b.Linearize(ctx); err != nil {
		return nil, err
	}
	j, err := sv.s.readJob(req.Queue, req.Id, true)
	if err != nil {
		return nil, err
	}
	return &queuepb.GetResponse{Header: sv.header(), Job: j}, nil
}

// readJob reads a job from a view of the applied state.
func (s *Service) readJob(queue string, id uint64, payload bool) (*queuepb.Job, error) {
	r, closer, err := s.b.View()
	if err != nil {
		return nil, err
	}
	defer closer()
	j, err := jobFrom(r, queue, id, payload)
	if err != nil {
		return nil, err
	}
	if j == nil {
		return nil, status.Errorf(codes.NotFound, "queue: job %d not found in queue %s", id, queue)
	}
	j.Waiting = s.m().Waiting(queue, id)
	return j, nil
}

// jobFrom reads a job's records from r (nil if it has none).
func jobFrom(r pebble.Reader, queue string, id uint64, payload bool) (*queuepb.Job, error) {
	kv, err := mvcc.Get(r, machine.StateKey(queue, id), math.MaxInt64)
	if err != nil || kv == nil {
		return nil, err
	}
	var st queuewire.StateRecord
	if err := proto.Unmarshal(kv.Value, &st); err != nil {
		return nil, err
	}
	j := &queuepb.Job{Queue: queue, Id: id}
	fillState(j, &st)
	if _, err := readSpec(r, j); err != nil {
		return nil, err
	}
	if st.HasOutput {
		if kv, err := mvcc.Get(r, machine.OutKey(queue, id), math.MaxInt64); err != nil {
			return nil, err
		} else if kv != nil {
			var out queuewire.OutputRecord
			if err := proto.Unmarshal(kv.Value, &out); err != nil {
				return nil, err
			}
			j.LastError, j.Progress, j.Result = out.LastError, out.Progress, out.Result
		}
	}
	if !payload {
		j.Payload, j.Result, j.Progress = nil, nil, nil
	}
	return j, nil
}

func fillState(j *queuepb.Job, st *queuewire.StateRecord) {
	j.State, j.RunAtMs, j.Attempt, j.Failures, j.Lost = st.State, st.RunAtMs, st.Attempt, st.Failures, st.Lost
	j.Token, j.Lease, j.Worker, j.ClaimedAtMs, j.DeadlineMs = st.Token, st.Lease, st.Worker, st.ClaimedAtMs, st.DeadlineMs
	j.FinishedAtMs, j.CancelRequested = st.FinishedAtMs, st.CancelRequested
}

// List implements queuepb.QueueServer.
func (sv *server) List(ctx context.Context, req *queuepb.ListRequest) (*queuepb.ListResponse, error) {
	if err := machine.CheckName("queue", req.Queue); err != nil {
		return nil, err
	}
	limit := int(req.Limit)
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 10000)
	if err := sv.s.b.Linearize(ctx); err != nil {
		return nil, err
	}
	r, closer, err := sv.s.b.View()
	if err != nil {
		return nil, err
	}
	defer closer()
	resp := &queuepb.ListResponse{Header: sv.header()}
	start := machine.StateKey(req.Queue, req.After+1)
	if req.After == math.MaxUint64 {
		return resp, nil
	}
	end := keys.PrefixEnd(machine.StatesPrefix(req.Queue))
	for {
		res, err := mvcc.Range(r, start, end, math.MaxInt64, mvcc.RangeOptions{Limit: 1000, Uncounted: true})
		if err != nil {
			return nil, err
		}
		for _, kv := range res.KVs {
			var st queuewire.StateRecord
			if err := proto.Unmarshal(kv.Value, &st); err != nil {
				return nil, err
			}
			if req.State != queuepb.State_STATE_UNSPECIFIED && st.State != req.State {
				continue
			}
			if len(resp.Jobs) == limit {
				resp.More = true
				return resp, nil
			}
			id, err := machine.ParseStateKey(kv.Key)
			if err != nil {
				return nil, err
			}
			j, err := jobFrom(r, req.Queue, id, req.WithPayload)
			if err != nil {
				return nil, err
			}
			if j != nil {
				resp.Jobs = append(resp.Jobs, j)
			}
		}
		if len(res.KVs) < 1000 {
			return resp, nil
		}
		start = append(append([]byte(nil), res.KVs[len(res.KVs)-1].Key...), 0)
	}
}

// Wait implements queuepb.QueueServer.
func (sv *server) Wait(ctx context.Context, req *queuepb.WaitRequest) (*queuepb.WaitResponse, error) {
	if err := machine.CheckName("queue", req.Queue); err != nil {
		return nil, err
	}
	s := sv.s
	k := jobKey{req.Queue, req.Id}
	for {
		ch := make(chan struct{})
		s.mu.Lock()
		ws := s.mu.waiters[k]
		if ws == nil {
			ws = map[chan struct{}]struct{}{}
			s.mu.waiters[k] = ws
		}
		ws[ch] = struct{}{}
		s.mu.Unlock()
		j, err := sv.waitCheck(ctx, req)
		if err != nil || j != nil {
			s.mu.Lock()
			delete(s.mu.waiters[k], ch)
			if len(s.mu.waiters[k]) == 0 {
				delete(s.mu.waiters, k)
			}
			s.mu.Unlock()
			if err != nil {
				return nil, err
			}
			return &queuepb.WaitResponse{Header: sv.header(), Job: j}, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			s.mu.Lock()
			delete(s.mu.waiters[k], ch)
			if len(s.mu.waiters[k]) == 0 {
				delete(s.mu.waiters, k)
			}
			s.mu.Unlock()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, status.Error(codes.DeadlineExceeded, "queue: the job did not finish before the deadline")
			}
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
}

// waitCheck returns the job if it is finished.
func (sv *server) waitCheck(ctx context.Context, req *queuepb.WaitRequest) (*queuepb.Job, error) {
	if err := sv.s.b.Linearize(ctx); err != nil {
		return nil, err
	}
	j, err := sv.s.readJob(req.Queue, req.Id, true)
	if err != nil {
		return nil, err
	}
	switch j.State {
	case queuepb.State_COMPLETED, queuepb.State_DEAD, queuepb.State_CANCELLED:
		return j, nil
	}
	return nil, nil
}
