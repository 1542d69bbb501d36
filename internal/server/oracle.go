package server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/oracle"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/replica"
	"github.com/synod-io/synod/internal/systemrange"
)

// The revision oracle (internal/oracle) runs on the system range's leader:
// one goroutine (oracleLoop) serves the requests of the node in batches,
// one ReadIndex round per batch; other nodes reach it through the peer
// service below.

// maxRevisionsPerRequest bounds one request for revisions.
const maxRevisionsPerRequest = 1 << 20

// checkRevisionsCount refuses a request for no revisions or too many.
func checkRevisionsCount(n uint64) error {
	if n == 0 || n > maxRevisionsPerRequest {
		return status.Errorf(codes.InvalidArgument, "synod: ask for 1 to %d revisions, not %d", maxRevisionsPerRequest, n)
	}
	return nil
}

// revisionsRequest is a request for n revisions above floor waiting for
// the oracle.
type revisionsRequest struct {
	n, floor uint64
	done     chan revisionsResult // buffered: the oracle never waits for the caller
}

type revisionsResult struct {
	first uint64
	err   error
}

// Revisions hands out n consecutive revisions from the cluster's revision
// oracle and returns the first. Revisions handed out strictly increase in
// real time across the cluster and across failovers: a call that begins
// after another ended gets higher ones.
func (s *Server) Revisions(ctx context.Context, n uint64) (uint64, error) {
	return s.revisionsAbove(ctx, n, 0)
}

// revisionsAbove is Revisions for revisions above floor too.
func (s *Server) revisionsAbove(ctx context.Context, n, floor uint64) (uint64, error) {
	if err := checkRevisionsCount(n); err != nil {
		return 0, err
	}
	resp := &wrapperspb.UInt64Value{}
	err := s.viaRangeLeader(ctx, keys.SystemRangeID, oracleNextMethod, encodeRevisionsRequest(n, floor), resp, func() (proto.Message, error) {
		first, err := s.takeRevisions(ctx, n, floor)
		if err != nil {
			return nil, err
		}
		return wrapperspb.UInt64(first), nil
	})
	if err != nil {
		return 0, err
	}
	return resp.GetValue(), nil
}

// takeRevisions asks this node's oracle for n revisions above floor.
func (s *Server) takeRevisions(ctx context.Context, n, floor uint64) (uint64, error) {
	r := &revisionsRequest{n: n, floor: floor, done: make(chan revisionsResult, 1)}
	select {
	case s.oracleQ <- r:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-s.ctx.Done():
		return 0, rpctypes.ErrGRPCStopped
	}
	select {
	case res := <-r.done:
		return res.first, res.err
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-s.ctx.Done():
		return 0, rpctypes.ErrGRPCStopped
	}
}

// The peer request for revisions is a BytesValue holding two varint
// fields: 1 the count, 2 the floor.
func encodeRevisionsRequest(n, floor uint64) *wrapperspb.BytesValue {
	b := protowire.AppendTag(nil, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, n)
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	return wrapperspb.Bytes(protowire.AppendVarint(b, floor))
}

func decodeRevisionsRequest(req *wrapperspb.BytesValue) (n, floor uint64, err error) {
	b := req.GetValue()
	for len(b) > 0 {
		num, typ, k := protowire.ConsumeTag(b)
		if k < 0 || typ != protowire.VarintType {
			return 0, 0, status.Error(codes.InvalidArgument, "synod: malformed request for revisions")
		}
		v, m := protowire.ConsumeVarint(b[k:])
		if m < 0 {
			return 0, 0, status.Error(codes.InvalidArgument, "synod: malformed request for revisions")
		}
		switch num {
		case 1:
			n = v
		case 2:
			floor = v
		}
		b = b[k+m:]
	}
	return n, floor, nil
}

// oracleLoop serves the node's requests for revisions, a batch at a time:
// every request that arrived while a batch was served makes the next one.
func (s *Server) oracleLoop(ctx context.Context) {
	alloc := oracle.NewAllocator(s.cfg.OracleWindow)
	var batch []*revisionsRequest
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-s.oracleQ:
			batch = append(batch[:0], r)
		}
	more:
		for len(batch) < cap(s.oracleQ) {
			select {
			case r := <-s.oracleQ:
				batch = append(batch, r)
			default:
				break more
			}
		}
		s.serveRevisions(ctx, alloc, batch)
	}
}

// serveRevisions answers a batch of requests. It first confirms, with a
// ReadIndex round begun after all of them arrived, that this node leads the
// system range in the allocator's term (starting a new term above the
// stored ceiling), and stores a higher ceiling if the batch needs one.
func (s *Server) serveRevisions(ctx context.Context, alloc *oracle.Allocator, batch []*revisionsRequest) {
	var total, floor uint64
	for _, r := range batch {
		total += r.n
		floor = max(floor, r.floor)
	}
	err := s.readyOracle(ctx, alloc, total, floor)
	for _, r := range batch {
		res := revisionsResult{err: err}
		if err == nil {
			var ok bool
			if res.first, ok = alloc.Take(r.n); !ok {
				// readyOracle raised the ceiling for the whole batch.
				res.err = fmt.Errorf("oracle: %d revisions above the ceiling", r.n)
			} else {
				s.metrics.OracleRevisions.Add(float64(r.n))
			}
		}
		r.done <- res
	}
	s.metrics.OracleRequests.Add(float64(len(batch)))
	s.metrics.OracleBatches.Inc()
}

// readyOracle makes alloc ready to hand out n revisions above floor now.
func (s *Server) readyOracle(ctx context.Context, alloc *oracle.Allocator, n, floor uint64) error {
	term, err := s.confirmLeadership(ctx, keys.SystemRangeID)
	if err != nil {
		return err
	}
	if alloc.Term() != term {
		// Everything committed in earlier terms is applied here: the
		// stored ceiling is above every revision their leaders handed out.
		stored, err := systemrange.OracleCeiling(s.db)
		if err != nil {
			return err
		}
		if err := alloc.Start(term, stored); err != nil {
			return err
		}
	}
	alloc.SkipTo(floor)
	up, ok := alloc.Raise(n)
	if !ok {
		return nil
	}
	res, err := s.proposeTo(ctx, keys.SystemRangeID, raftcmd.KindOracleCeiling, raftcmd.EncodeOracleCeiling(up), term)
	if err != nil {
		return err
	}
	stored, ok := res.(uint64)
	if !ok {
		return fmt.Errorf("oracle: ceiling command answered %T", res)
	}
	alloc.Raised(term, stored)
	return nil
}

// confirmLeadership returns the term in which this node leads range id, as
// confirmed by a quorum in a ReadIndex round begun after the call; every
// entry committed before the call is then applied here. It fails with
// rpctypes.ErrGRPCNotLeader if the node did not lead the range throughout.
// A replica that leads in the same term before and after the round led
// throughout: no replica leads a term twice.
func (s *Server) confirmLeadership(ctx context.Context, id keys.RangeID) (uint64, error) {
	leading := func() (uint64, error) {
		var st raft.Status
		if err := s.store.Do(ctx, id, func(r *replica.Replica) { st = r.Status() }); err != nil {
			return 0, err
		}
		if st.RaftState != raft.StateLeader || st.LeadTransferee != raft.None {
			return 0, rpctypes.ErrGRPCNotLeader
		}
		return st.GetTerm(), nil
	}
	term, err := leading()
	if err != nil {
		return 0, err
	}
	if err := s.store.ReadIndex(ctx, id, s.timeouts.After(s.cfg.RequestTimeout)); err != nil {
		return 0, err
	}
	if after, err := leading(); err != nil || after != term {
		return 0, rpctypes.ErrGRPCNotLeader
	}
	return term, nil
}

// The oracle's peer service, through which other nodes reach the system
// range leader's oracle.

const (
	oracleServiceName = "synod.oracle.v1.Oracle"
	oracleNextMethod  = "/" + oracleServiceName + "/Next"
)

type oracleService interface{}

func (s *Server) registerOracleService(srv *grpc.Server) {
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: oracleServiceName,
		HandlerType: (*oracleService)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Next", Handler: forwarded(leaderOnly(keys.SystemRangeID, func(s *Server, ctx context.Context, req *wrapperspb.BytesValue) (*wrapperspb.UInt64Value, error) {
				n, floor, err := decodeRevisionsRequest(req)
				if err != nil {
					return nil, err
				}
				if err := checkRevisionsCount(n); err != nil {
					return nil, err
				}
				first, err := s.takeRevisions(ctx, n, floor)
				if err != nil {
					return nil, err
				}
				return wrapperspb.UInt64(first), nil
			}))},
			{MethodName: "Fence", Handler: forwarded(peerFence)},
		},
		Metadata: "synod/oracle.proto",
	}, s)
}

// Stamping: a data range's leader asks the node for revisions to stamp its
// commands with (replica.RevisionsWanted); stampLoop fetches them from the
// oracle and hands them back.

// onRevisionsWanted records a range's request for revisions; it runs on the
// range's goroutine and does not block. A later request of the range
// replaces an earlier one.
func (s *Server) onRevisionsWanted(id keys.RangeID, want replica.RevisionsWanted) {
	s.stampMu.Lock()
	s.stampMu.wants[id] = want
	s.stampMu.Unlock()
	select {
	case s.stampWake <- struct{}{}:
	default:
	}
}

// stampLoop fetches the revisions the ranges ask for. A request that fails
// (the oracle had no leader) is tried again every tick while it is the
// range's latest; the range gives up on it only if its leadership ends.
func (s *Server) stampLoop(ctx context.Context) {
	retry := time.NewTimer(0)
	<-retry.C
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.stampWake:
		case <-retry.C:
		}
		s.stampMu.Lock()
		wants := s.stampMu.wants
		s.stampMu.wants = make(map[keys.RangeID]replica.RevisionsWanted)
		s.stampMu.Unlock()
		// The ranges' requests go at once (they share the oracle's batches),
		// each range's one at a time, so that its blocks come in the
		// order the oracle handed them out.
		var failed atomic.Bool
		var wg sync.WaitGroup
		for id, w := range wants {
			wg.Go(func() {
				// Bounded, so that a request stuck with a former leader of
				// the system range does not hold up the next.
				fctx, cancel := context.WithTimeout(ctx, 2*s.ElectionTimeout())
				first, err := s.revisionsAbove(fctx, w.N, w.Floor)
				cancel()
				if err == nil {
					err = s.store.AddRevisions(id, w, first)
				}
				if err == nil || ctx.Err() != nil {
					return
				}
				s.logger.Debug("revisions for stamping not fetched", "range", uint64(id), "err", err)
				s.stampMu.Lock()
				if _, newer := s.stampMu.wants[id]; !newer && s.rangeTerm(id) == w.Term {
					s.stampMu.wants[id] = w
					failed.Store(true)
				}
				s.stampMu.Unlock()
			})
		}
		wg.Wait()
		if failed.Load() {
			retry.Reset(s.cfg.TickInterval)
		}
	}
}
