package limit

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/internal/limit/limitpb"
)

// The owner's peer service: other nodes send it their requests in batches.
const (
	peerServiceName = "synod.limit.v1.Owner"
	decideMethod    = "/" + peerServiceName + "/Decide"
)

const (
	// maxBatch bounds the ops of one call to the owner.
	maxBatch = 512
	// maxInflight bounds the calls in flight to the owner: requests that
	// arrive meanwhile go in the next batch.
	maxInflight = 4
	// forwardTimeout bounds one call to the owner.
	forwardTimeout = 5 * time.Second
)

// forwarder sends a node's requests to the owner, batched: while
// maxInflight calls are in flight, new requests queue and go together in
// the next call.
type forwarder struct {
	s  *Service
	wg sync.WaitGroup
	mu struct {
		sync.Mutex
		queue    map[uint64][]*call // by owner
		inflight int
	}
}

type call struct {
	op   *limitpb.Op
	done chan struct{}
	res  *limitpb.OpResult
	err  error
}

func newForwarder(s *Service) *forwarder {
	f := &forwarder{s: s}
	f.mu.queue = map[uint64][]*call{}
	return f
}

// do sends op to the owner lead and waits for its result, until ctx ends
// or deadline passes.
func (f *forwarder) do(ctx context.Context, lead uint64, op *limitpb.Op, deadline <-chan struct{}) (*limitpb.OpResult, error) {
	c := &call{op: op, done: make(chan struct{})}
	f.mu.Lock()
	f.mu.queue[lead] = append(f.mu.queue[lead], c)
	start := f.mu.inflight < maxInflight
	if start {
		f.mu.inflight++
		f.wg.Add(1)
	}
	f.mu.Unlock()
	if start {
		go f.send(lead)
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-deadline:
		return nil, errTimeout
	}
}

// send sends batches until every queue is empty.
func (f *forwarder) send(lead uint64) {
	defer f.wg.Done()
	for {
		f.mu.Lock()
		batch := f.takeLocked(lead)
		if batch == nil {
			for other := range f.mu.queue {
				lead, batch = other, f.takeLocked(other)
				break
			}
		}
		if batch == nil {
			f.mu.inflight--
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		f.invoke(lead, batch)
	}
}

// takeLocked takes the next batch queued for lead, or nil.
func (f *forwarder) takeLocked(lead uint64) []*call {
	q := f.mu.queue[lead]
	if len(q) == 0 {
		return nil
	}
	n := min(len(q), maxBatch)
	if n == len(q) {
		delete(f.mu.queue, lead)
	} else {
		f.mu.queue[lead] = q[n:]
	}
	return q[:n:n]
}

func (f *forwarder) invoke(lead uint64, batch []*call) {
	req := &limitpb.DecideRequest{Ops: make([]*limitpb.Op, len(batch))}
	for i, c := range batch {
		req.Ops[i] = c.op
	}
	resp := &limitpb.DecideResponse{}
	err := func() error {
		conn, err := f.s.b.PeerConn(lead)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
		defer cancel()
		return conn.Invoke(ctx, decideMethod, req, resp)
	}()
	if err == nil && len(resp.Results) != len(batch) {
		err = status.Errorf(codes.Internal, "owner answered %d results for %d requests", len(resp.Results), len(batch))
	}
	f.s.metrics.forwardBatches.Inc()
	f.s.metrics.forwarded.Add(float64(len(batch)))
	for i, c := range batch {
		if err != nil {
			c.err = err
		} else {
			c.res = resp.Results[i]
		}
		close(c.done)
	}
}

// wait waits for the calls in flight to end.
func (f *forwarder) wait() { f.wg.Wait() }

// RegisterPeer registers the owner's peer service with srv (the node's
// peer gRPC server).
func (s *Service) RegisterPeer(srv *grpc.Server) {
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: peerServiceName,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Decide",
			Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				req := &limitpb.DecideRequest{}
				if err := dec(req); err != nil {
					return nil, err
				}
				return srv.(*Service).decide(ctx, req)
			},
		}},
		Metadata: "internal/limit/limitpb/limitpb.proto",
	}, s)
}

// decide serves a batch from another node as the owner: every op is
// decided first, then the answers that need a checkpoint wait for it
// together.
func (s *Service) decide(ctx context.Context, req *limitpb.DecideRequest) (*limitpb.DecideResponse, error) {
	resp := &limitpb.DecideResponse{Results: make([]*limitpb.OpResult, len(req.Ops))}
	term, err := s.owner.ensure(ctx)
	if err != nil {
		for i := range resp.Results {
			resp.Results[i] = failed(err)
		}
		return resp, nil
	}
	now := time.Now().UnixNano()
	pend := make([]*pending, len(req.Ops))
	for i, op := range req.Ops {
		r := &limitpb.OpResult{}
		resp.Results[i] = r
		switch o := op.Op.(type) {
		case *limitpb.Op_Take:
			defs, err := s.checkItems(ctx, o.Take.Items)
			if err != nil {
				resp.Results[i] = failed(err)
				continue
			}
			r.Take, pend[i], err = s.owner.take(term, o.Take, defs, now)
			if err != nil {
				resp.Results[i] = failed(err)
			}
		case *limitpb.Op_Refund:
			defs, err := s.checkItems(ctx, o.Refund.Items)
			if err == nil {
				err = s.owner.refund(term, o.Refund.Items, defs, now)
			}
			if err != nil {
				resp.Results[i] = failed(err)
			}
		case *limitpb.Op_Share:
			if o.Share.Limit == "" {
				r.Share, _, _ = s.owner.share(term, o.Share.Node, o.Share, nil, now)
				continue
			}
			def, err := s.defs.lookup(ctx, o.Share.Limit)
			if err == nil && def.Concurrency() {
				err = status.Errorf(codes.FailedPrecondition, "limit %q is a concurrency limit", o.Share.Limit)
			}
			if err == nil {
				r.Share, pend[i], err = s.owner.share(term, o.Share.Node, o.Share, def, now)
			}
			if err != nil {
				resp.Results[i] = failed(err)
			}
		case *limitpb.Op_Stats:
			def, err := s.defs.lookup(ctx, o.Stats.Name)
			if err == nil {
				r.Stats, err = s.statsAsOwner(ctx, def)
			}
			if err != nil {
				resp.Results[i] = failed(err)
			}
		default:
			resp.Results[i] = failed(status.Error(codes.Unimplemented, "unknown op"))
		}
	}
	timeout := s.b.After(forwardTimeout)
	for i, p := range pend {
		if p == nil {
			continue
		}
		if err := s.owner.await(ctx, p, timeout); err != nil {
			resp.Results[i] = failed(err)
		}
	}
	return resp, nil
}

func failed(err error) *limitpb.OpResult {
	st, _ := status.FromError(err)
	if st.Code() == codes.OK {
		st = status.New(codes.Unknown, err.Error())
	}
	return &limitpb.OpResult{Code: int32(st.Code()), Message: st.Message()}
}
