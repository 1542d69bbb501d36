package coord

import (
	"context"
	"log/slog"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/api/v3electionpb"
	"github.com/synod-io/synod/api/v3lockpb"
	"github.com/synod-io/synod/internal/watch"
)

// Backend is what the coordination services need from the node. Its KV and
// lease methods have the semantics, and return the gRPC errors, of the etcd
// services of the same names.
type Backend interface {
	// Header returns a response header with the cluster ID, this member's
	// ID and the current Raft term; the caller sets the revision.
	Header() *pb.ResponseHeader
	// Range reads, linearizably unless req.Serializable.
	Range(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error)
	// Txn applies a transaction.
	Txn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error)
	// LeaseGrant grants a lease.
	LeaseGrant(ctx context.Context, req *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error)
	// Hub is the watch hub of the range holding the keys.
	Hub() *watch.Hub
}

// Services holds the coordination services of one node.
type Services struct {
	b      Backend
	logger *slog.Logger
}

// New returns the coordination services on b.
func New(b Backend, logger *slog.Logger) *Services {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Services{b: b, logger: logger}
}

// Register registers the Lock, Election and Groups services with srv.
func (s *Services) Register(srv grpc.ServiceRegistrar) {
	v3lockpb.RegisterLockServer(srv, &lockServer{s: s})
	v3electionpb.RegisterElectionServer(srv, &electionServer{s: s})
	synodpb.RegisterGroupsServer(srv, &groupsServer{s: s})
}
