package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/queue/machine"
	"github.com/synod-io/synod/internal/queue/queuewire"
)

const (
	// maxJobsPerResponse and maxResponseBytes bound one ClaimResponse.
	maxJobsPerResponse = 256
	maxResponseBytes   = 1 << 20
	// detachTimeout bounds the detach of a stream that ended.
	detachTimeout = 5 * time.Second
)

// streamNonce makes stream IDs unique across nodes and restarts.
var streamNonce = func() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

// claimStream is a worker's claim stream served on this node.
type claimStream struct {
	s             *Service
	id            string
	queue, worker string
	lease         int64
	signal        chan struct{}
	ctx           context.Context // the stream's
	mu            struct {
		sync.Mutex
		claims     []machine.Claim
		revoked    []machine.Revocation
		finished   []*queuepb.FinishResult
		resync     bool
		superseded bool
		// inflight counts finishes submitted and not answered yet.
		inflight int
	}
	// delivered maps the jobs sent to the worker and not finished or
	// revoked since to their tokens; only the sender uses it.
	delivered map[uint64]int64
}

func (st *claimStream) notify() {
	select {
	case st.signal <- struct{}{}:
	default:
	}
}

// claimed, revoked and resync are called with the service's lock held.

func (st *claimStream) claimed(c machine.Claim) {
	st.mu.Lock()
	st.mu.claims = append(st.mu.claims, c)
	st.mu.Unlock()
	st.notify()
}

func (st *claimStream) revoked(r machine.Revocation) {
	st.mu.Lock()
	st.mu.revoked = append(st.mu.revoked, r)
	st.mu.Unlock()
	st.notify()
}

func (st *claimStream) resync() {
	st.mu.Lock()
	st.mu.resync = true
	st.mu.Unlock()
	st.notify()
}

func (st *claimStream) supersede() {
	st.mu.Lock()
	st.mu.superseded = true
	st.mu.Unlock()
	st.notify()
}

func (st *claimStream) finishedOne(r *queuepb.FinishResult) {
	st.mu.Lock()
	st.mu.finished = append(st.mu.finished, r)
	st.mu.inflight--
	st.mu.Unlock()
	st.notify()
}

var errSuperseded = status.Error(codes.Aborted, "queue: the worker opened another claim stream on this member")

// Claim implements queuepb.QueueServer.
func (sv *server) Claim(stream queuepb.Queue_ClaimServer) error {
	s := sv.s
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if err := machine.CheckName("queue", first.Queue); err != nil {
		return err
	}
	if err := machine.CheckName("worker", first.Worker); err != nil {
		return err
	}
	if first.Lease == 0 {
		return status.Error(codes.InvalidArgument, "queue: a claim stream needs the worker's lease")
	}
	if first.Capacity == nil {
		return status.Error(codes.InvalidArgument, "queue: the first claim request must give the worker's capacity")
	}
	ctx := stream.Context()
	st := &claimStream{
		s: s, id: fmt.Sprintf("%s-%d", streamNonce, s.streamSeq.Add(1)),
		queue: first.Queue, worker: first.Worker, lease: first.Lease,
		signal: make(chan struct{}, 1), ctx: ctx, delivered: map[uint64]int64{},
	}
	s.mu.Lock()
	if old := s.mu.streams[workerKey{st.queue, st.worker}]; old != nil {
		old.supersede()
	}
	s.mu.streams[workerKey{st.queue, st.worker}] = st
	s.mu.Unlock()
	s.metrics.streams.Inc()
	defer func() {
		s.metrics.streams.Dec()
		s.mu.Lock()
		mine := s.mu.streams[workerKey{st.queue, st.worker}] == st
		if mine {
			delete(s.mu.streams, workerKey{st.queue, st.worker})
		}
		s.mu.Unlock()
		if mine {
			// No claims for a worker no stream serves: it may come back
			// on another node, whose attach this does not undo.
			go func() {
				dctx, cancel := context.WithTimeout(s.ctx, detachTimeout)
				defer cancel()
				_, _ = s.batch.do(dctx, &queuewire.Op{Queue: st.queue, Op: &queuewire.Op_Detach{Detach: &queuewire.Detach{Worker: st.worker, Stream: st.id}}})
			}()
		}
	}()
	if err := st.attach(ctx, *first.Capacity); err != nil {
		return err
	}
	if err := st.submitFinishes(first.Finish); err != nil {
		return err
	}
	st.resync() // what is already claimed for the worker
	recvErr := make(chan error, 1)
	go func() { recvErr <- st.receive(stream) }()
	var eof bool
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.ctx.Done():
			return errStopped
		case err := <-recvErr:
			if !errors.Is(err, io.EOF) {
				return err
			}
			eof = true // the worker is done: answer its last finishes, then end
			recvErr = nil
		case <-st.signal:
		}
		done, err := st.send(stream, eof)
		if err != nil || done {
			return err
		}
	}
}

// receive reads the worker's requests until its side ends.
func (st *claimStream) receive(stream queuepb.Queue_ClaimServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		if (req.Queue != "" && req.Queue != st.queue) || (req.Worker != "" && req.Worker != st.worker) || (req.Lease != 0 && req.Lease != st.lease) {
			return status.Error(codes.InvalidArgument, "queue: a claim stream serves one queue, worker and lease")
		}
		if req.Capacity != nil {
			if err := st.attach(st.ctx, *req.Capacity); err != nil {
				return err
			}
		}
		if err := st.submitFinishes(req.Finish); err != nil {
			return err
		}
	}
}

func (st *claimStream) attach(ctx context.Context, capacity int32) error {
	_, err := st.s.batch.do(ctx, &queuewire.Op{Queue: st.queue, Op: &queuewire.Op_Attach{Attach: &queuewire.Attach{
		Worker: st.worker, Lease: st.lease, Capacity: capacity, Stream: st.id}}})
	return err
}

func (st *claimStream) submitFinishes(fs []*queuepb.Finish) error {
	for _, f := range fs {
		if len(f.Result) > machine.MaxResultBytes {
			return status.Errorf(codes.InvalidArgument, "queue: a result may hold at most %d bytes", machine.MaxResultBytes)
		}
		st.mu.Lock()
		st.mu.inflight++
		st.mu.Unlock()
		op := &queuewire.Op{Queue: st.queue, Op: &queuewire.Op_Finish{Finish: f}}
		id, token := f.Id, f.Token
		st.s.batch.submit(st.ctx, &pending{op: op, size: proto.Size(op) + opOverhead, done: func(r machine.OpResult) {
			fr := &queuepb.FinishResult{Id: id, Token: token}
			if r.Err != nil {
				s, _ := status.FromError(r.Err)
				fr.Code, fr.Message = int32(s.Code()), s.Message()
			}
			st.finishedOne(fr)
		}})
	}
	return nil
}

// send sends what is waiting; done is set when the stream should end
// (eof and nothing left to answer).
func (st *claimStream) send(stream queuepb.Queue_ClaimServer, eof bool) (done bool, err error) {
	st.mu.Lock()
	claims, revoked, finished, resync, superseded := st.mu.claims, st.mu.revoked, st.mu.finished, st.mu.resync, st.mu.superseded
	st.mu.claims, st.mu.revoked, st.mu.finished, st.mu.resync = nil, nil, nil, false
	inflight := st.mu.inflight
	st.mu.Unlock()
	if superseded {
		return true, errSuperseded
	}
	m := st.s.m()
	if resync {
		claims = append(claims, m.Claimed(st.queue, st.worker, st.lease)...)
		revoked = append(revoked, m.CancelRequested(st.queue, st.worker, st.lease)...)
	}
	for _, f := range finished {
		if st.delivered[f.Id] == f.Token {
			delete(st.delivered, f.Id)
		}
	}
	var fresh []machine.Claim
	for _, c := range claims {
		if st.delivered[c.ID] != c.Token {
			st.delivered[c.ID] = c.Token
			fresh = append(fresh, c)
		}
	}
	var revs []*queuepb.Revoked
	for _, r := range revoked {
		if st.delivered[r.ID] != r.Token {
			continue // not this worker's any more, or never sent
		}
		if r.Reason != "cancelled" {
			delete(st.delivered, r.ID)
		}
		revs = append(revs, &queuepb.Revoked{Id: r.ID, Token: r.Token, Reason: r.Reason})
	}
	jobs, unseen, err := st.s.claimedJobs(fresh)
	if err != nil {
		return true, err
	}
	// A resync reads the machine, which moves as a batch applies, before
	// the batch is committed: a claim whose job the view does not hold yet
	// is in a batch still applying, and its effect will route it to this
	// stream (registered before it resynced) once committed.
	for _, c := range unseen {
		delete(st.delivered, c.ID)
	}
	for _, c := range fresh {
		if c.AvailableAt > 0 && c.ClaimedAt >= c.AvailableAt {
			st.s.metrics.pickup(st.queue, float64(c.ClaimedAt-c.AvailableAt)/1000)
		}
	}
	for len(jobs) > 0 || len(revs) > 0 || len(finished) > 0 {
		resp := &queuepb.ClaimResponse{Header: st.s.b.Header(), Revoked: revs, Finished: finished}
		size := 0
		for len(jobs) > 0 && len(resp.Jobs) < maxJobsPerResponse && (size == 0 || size+len(jobs[0].Payload) < maxResponseBytes) {
			size += len(jobs[0].Payload) + 128
			resp.Jobs = append(resp.Jobs, jobs[0])
			jobs = jobs[1:]
		}
		revs, finished = nil, nil
		if err := stream.Send(resp); err != nil {
			return true, err
		}
	}
	return eof && inflight == 0, nil
}

// claimedJobs reads the jobs of claims, as their workers get them; unseen
// are the claims whose job the view does not hold.
func (s *Service) claimedJobs(cs []machine.Claim) (jobs []*queuepb.Job, unseen []machine.Claim, err error) {
	if len(cs) == 0 {
		return nil, nil, nil
	}
	r, closer, err := s.b.View()
	if err != nil {
		return nil, nil, err
	}
	defer closer()
	jobs = make([]*queuepb.Job, 0, len(cs))
	for _, c := range cs {
		j := &queuepb.Job{
			Queue: c.Queue, Id: c.ID, State: queuepb.State_RUNNING, Attempt: c.Attempt, Token: c.Token,
			Lease: c.Lease, Worker: c.Worker, ClaimedAtMs: c.ClaimedAt, DeadlineMs: c.Deadline,
		}
		found, err := readSpec(r, j)
		if err != nil {
			return nil, nil, err
		}
		if !found {
			unseen = append(unseen, c)
			continue
		}
		jobs = append(jobs, j)
	}
	return jobs, unseen, nil
}

// readSpec fills j (queue and ID set) from its spec record and reports
// whether the record exists; a job that is gone keeps only what it had.
func readSpec(r pebble.Reader, j *queuepb.Job) (bool, error) {
	kv, err := mvcc.Get(r, machine.JobKey(j.Queue, j.Id), math.MaxInt64)
	if err != nil {
		return false, fmt.Errorf("read job %d of queue %s: %w", j.Id, j.Queue, err)
	}
	if kv == nil {
		return false, nil
	}
	var rec queuewire.SpecRecord
	if err := proto.Unmarshal(kv.Value, &rec); err != nil {
		return false, fmt.Errorf("decode job %d of queue %s: %w", j.Id, j.Queue, err)
	}
	s := rec.Spec
	if s == nil {
		return true, nil
	}
	j.Payload, j.Priority, j.Group, j.IdempotencyKey, j.DependsOn = s.Payload, s.Priority, s.Group, s.IdempotencyKey, s.DependsOn
	j.MaxAttempts, j.Retry, j.TimeoutMs, j.CreatedAtMs = s.MaxAttempts, s.Retry, s.TimeoutMs, rec.CreatedAtMs
	return true, nil
}
