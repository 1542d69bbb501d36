package coord

import (
	"context"
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/api/v3lockpb"
)

// errSessionExpired is etcd's answer when a waiter's key disappeared.
var errSessionExpired = status.Error(codes.FailedPrecondition, "mutex: session is expired")

// lockServer implements v3lockpb.LockServer.
type lockServer struct {
	v3lockpb.UnimplementedLockServer
	s *Services
}

// Lock implements LockServer: it enqueues the caller's key NAME/<lease> and
// waits for its turn. The response's header revision is the fencing token,
// the key's create revision.
func (l *lockServer) Lock(ctx context.Context, req *v3lockpb.LockRequest) (*v3lockpb.LockResponse, error) {
	s := l.s
	lease, err := s.ensureLease(ctx, req.Lease)
	if err != nil {
		return nil, rpcError(err)
	}
	pfx := queuePrefix(req.Name)
	e, err := s.enqueue(ctx, pfx, lease, nil)
	if err != nil {
		return nil, rpcError(err)
	}
	hdr, err := s.waitTurn(ctx, pfx, e)
	if err != nil {
		s.abandon(ctx, e)
		if errors.Is(err, errKeyLost) {
			return nil, errSessionExpired
		}
		return nil, rpcError(err)
	}
	hdr.Revision = e.rev
	return &v3lockpb.LockResponse{Header: hdr, Key: e.key}, nil
}

// Unlock implements LockServer: it deletes the ownership key.
func (l *lockServer) Unlock(ctx context.Context, req *v3lockpb.UnlockRequest) (*v3lockpb.UnlockResponse, error) {
	resp, err := l.s.b.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{
		{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: req.Key}}},
	}})
	if err != nil {
		return nil, rpcError(err)
	}
	return &v3lockpb.UnlockResponse{Header: resp.Header}, nil
}
