package coord

import (
	"bytes"
	"context"
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/api/v3electionpb"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/watch"
)

// The errors of the election service, with etcd's messages.
var (
	errNotLeader        = status.Error(codes.FailedPrecondition, "election: not leader")
	errNoLeader         = status.Error(codes.NotFound, "election: no leader")
	errMissingLeaderKey = status.Error(codes.InvalidArgument, `"leader" field must be provided`)
	errCampaignExpired  = status.Error(codes.FailedPrecondition, "election: session is expired")
)

// electionServer implements v3electionpb.ElectionServer.
type electionServer struct {
	v3electionpb.UnimplementedElectionServer
	s *Services
}

// queuePrefix is the prefix of the queue of lock or election name, as
// etcd's concurrency package lays it out.
func queuePrefix(name []byte) []byte { return append(append([]byte(nil), name...), '/') }

// Campaign implements ElectionServer: it enqueues the caller's key
// NAME/<lease> with the value to proclaim (or updates the value of a key the
// lease already has) and waits until it leads. Leader.Rev, also the header
// revision, is the fencing token.
func (es *electionServer) Campaign(ctx context.Context, req *v3electionpb.CampaignRequest) (*v3electionpb.CampaignResponse, error) {
	s := es.s
	lease, err := s.ensureLease(ctx, req.Lease)
	if err != nil {
		return nil, rpcError(err)
	}
	pfx := queuePrefix(req.Name)
	e, err := s.enqueue(ctx, pfx, lease, req.Value)
	if err != nil {
		return nil, rpcError(err)
	}
	if !e.created && !bytes.Equal(e.value, req.Value) {
		if _, err := s.proclaim(ctx, e.key, e.rev, lease, req.Value); err != nil {
			s.abandon(ctx, e)
			return nil, rpcError(err)
		}
	}
	hdr, err := s.waitTurn(ctx, pfx, e)
	if err != nil {
		s.abandon(ctx, e)
		if errors.Is(err, errKeyLost) {
			return nil, errCampaignExpired
		}
		return nil, rpcError(err)
	}
	hdr.Revision = e.rev
	return &v3electionpb.CampaignResponse{Header: hdr, Leader: &v3electionpb.LeaderKey{
		Name: req.Name, Key: e.key, Rev: e.rev, Lease: lease,
	}}, nil
}

// proclaim sets the value of a leader key if it is still the one created at
// rev.
func (s *Services) proclaim(ctx context.Context, key []byte, rev, lease int64, value []byte) (*pb.ResponseHeader, error) {
	resp, err := s.b.Txn(ctx, &pb.TxnRequest{
		Compare: []*pb.Compare{{
			Key: key, Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
			TargetUnion: &pb.Compare_CreateRevision{CreateRevision: rev},
		}},
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: key, Value: value, Lease: lease}}}},
	})
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		return nil, errNotLeader
	}
	return resp.Header, nil
}

// Proclaim implements ElectionServer.
func (es *electionServer) Proclaim(ctx context.Context, req *v3electionpb.ProclaimRequest) (*v3electionpb.ProclaimResponse, error) {
	l := req.Leader
	if l == nil {
		return nil, errMissingLeaderKey
	}
	hdr, err := es.s.proclaim(ctx, l.Key, l.Rev, l.Lease, req.Value)
	if err != nil {
		return nil, rpcError(err)
	}
	return &v3electionpb.ProclaimResponse{Header: hdr}, nil
}

// Resign implements ElectionServer: it deletes the leader key if it is still
// the one of this leadership (as etcd, it does not fail otherwise).
func (es *electionServer) Resign(ctx context.Context, req *v3electionpb.ResignRequest) (*v3electionpb.ResignResponse, error) {
	l := req.Leader
	if l == nil {
		return nil, errMissingLeaderKey
	}
	resp, err := es.s.dequeue(ctx, l.Key, l.Rev)
	if err != nil {
		return nil, rpcError(err)
	}
	return &v3electionpb.ResignResponse{Header: resp.Header}, nil
}

// Leader implements ElectionServer.
func (es *electionServer) Leader(ctx context.Context, req *v3electionpb.LeaderRequest) (*v3electionpb.LeaderResponse, error) {
	resp, err := es.s.b.Range(ctx, firstCreated(queuePrefix(req.Name)))
	if err != nil {
		return nil, rpcError(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, errNoLeader
	}
	return &v3electionpb.LeaderResponse{Header: resp.Header, Kv: resp.Kvs[0]}, nil
}

// Observe implements ElectionServer. Each response's header revision is a
// revision at which its kv is the leader's key and value: the revision of
// the read that found the leader, or of the proclamation. So at any revision
// an observer reports at most one leader, and leaders come in the order of
// their fencing tokens.
func (es *electionServer) Observe(req *v3electionpb.LeaderRequest, stream grpc.ServerStreamingServer[v3electionpb.LeaderResponse]) error {
	ctx := stream.Context()
	s := es.s
	pfx := queuePrefix(req.Name)
	for {
		resp, err := s.b.Range(ctx, firstCreated(pfx))
		if err != nil {
			return rpcError(err)
		}
		var leader *mvccpb.KeyValue
		rev := resp.Header.Revision
		if len(resp.Kvs) > 0 {
			leader = resp.Kvs[0]
		} else if leader, err = s.firstPut(ctx, pfx, rev+1); err != nil {
			return rpcError(err)
		} else if leader == nil {
			continue // history compacted: read again
		} else {
			rev = leader.ModRevision
		}
		if err := stream.Send(&v3electionpb.LeaderResponse{Header: s.header(rev), Kv: leader}); err != nil {
			return err
		}
		if err := s.followLeader(ctx, stream, leader.Key, rev+1); err != nil {
			return err
		}
	}
}

// firstPut waits for the first key written to pfx from revision from on: in
// an empty election, the first leader. It returns nil if that history is
// compacted.
func (s *Services) firstPut(ctx context.Context, pfx []byte, from int64) (*mvccpb.KeyValue, error) {
	hw := s.watch(watch.Options{Key: pfx, RangeEnd: keys.PrefixRangeEnd(pfx), StartRevision: from, NoDelete: true}, nil)
	defer hw.close()
	for {
		resp, err := hw.next(ctx)
		if err != nil {
			return nil, err
		}
		if resp.CompactRevision > 0 {
			return nil, nil
		}
		if len(resp.Events) > 0 {
			return resp.Events[0].Kv, nil
		}
	}
}

// followLeader sends the proclamations of the leader key until it is
// deleted (or its history compacted).
func (s *Services) followLeader(ctx context.Context, stream grpc.ServerStreamingServer[v3electionpb.LeaderResponse], key []byte, from int64) error {
	hw := s.watch(watch.Options{Key: key, StartRevision: from}, nil)
	defer hw.close()
	for {
		resp, err := hw.next(ctx)
		if err != nil {
			return rpcError(err)
		}
		if resp.CompactRevision > 0 {
			return nil
		}
		for _, ev := range resp.Events {
			if ev.Type == mvccpb.DELETE {
				return nil
			}
			if err := stream.Send(&v3electionpb.LeaderResponse{Header: s.header(ev.Kv.ModRevision), Kv: ev.Kv}); err != nil {
				return err
			}
		}
	}
}

func (s *Services) header(rev int64) *pb.ResponseHeader {
	h := s.b.Header()
	h.Revision = rev
	return h
}
