package etcdapi

import (
	"context"
	"errors"
	"io"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/replica"
	"github.com/synod-io/synod/internal/watch"
)

// Backend is what the services need from the node.
type Backend interface {
	// Header returns a response header with the cluster ID, this member's
	// ID and the current Raft term; the caller sets the revision.
	Header() *pb.ResponseHeader
	// Propose replicates a write command and returns its response.
	Propose(ctx context.Context, kind raftcmd.Kind, req proto.Message) (any, error)
	// Range serves a read, linearizable unless req.Serializable.
	Range(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error)
	// ReadTxn serves a read-only txn (kv.IsReadOnlyTxn) as a linearizable
	// read, without a Raft entry.
	ReadTxn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error)
	// WaitCompaction waits until versions below rev are physically removed.
	WaitCompaction(ctx context.Context, rev int64) error
	// Members lists the cluster members; linearizable reads go through Raft.
	Members(ctx context.Context, linearizable bool) ([]cluster.Member, error)
	// Status describes this member.
	Status(ctx context.Context) (*pb.StatusResponse, error)
	// Hub is the node's watch hub.
	Hub() *watch.Hub
	// HasLeader reports whether this node knows a leader.
	HasLeader() bool
	// WaitLeader returns at once if this node knows a leader, and otherwise
	// waits a bounded time for one (a member that has just started has not
	// heard from the leader yet), failing with replica.ErrNoLeader if none
	// appears.
	WaitLeader(ctx context.Context) error
	// ElectionTimeout is the Raft election timeout.
	ElectionTimeout() time.Duration

	// LeaseGrant, LeaseRevoke, LeaseRenew, LeaseTimeToLive and LeaseLeases
	// implement the lease operations (the leader's lessor decides expiry).
	LeaseGrant(ctx context.Context, req *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error)
	LeaseRevoke(ctx context.Context, req *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error)
	LeaseRenew(ctx context.Context, id int64) (ttl int64, err error)
	LeaseTimeToLive(ctx context.Context, req *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error)
	LeaseLeases(ctx context.Context) (*pb.LeaseLeasesResponse, error)

	// Membership changes (Raft configuration changes, made by the leader).
	MemberAdd(ctx context.Context, req *pb.MemberAddRequest) (*pb.MemberAddResponse, error)
	MemberRemove(ctx context.Context, req *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error)
	MemberUpdate(ctx context.Context, req *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error)
	MemberPromote(ctx context.Context, req *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error)

	// Maintenance operations.
	MoveLeader(ctx context.Context, req *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error)
	Hash(ctx context.Context) (*pb.HashResponse, error)
	HashKV(ctx context.Context, rev int64) (*pb.HashKVResponse, error)
	Alarm(ctx context.Context, req *pb.AlarmRequest) (*pb.AlarmResponse, error)
	Defragment(ctx context.Context) (*pb.DefragmentResponse, error)
	// Snapshot writes a consistent backup to w and returns its size.
	Snapshot(ctx context.Context, w io.Writer) (int64, error)
	// SnapshotSizeEstimate estimates the size of a backup, in bytes.
	SnapshotSizeEstimate() int64
}

// Limits bounds requests.
type Limits struct {
	MaxRequestBytes int
	MaxTxnOps       int
}

// ErrTooLarge is returned by a Backend for a command over the size limit.
var ErrTooLarge = errors.New("request is too large")

// toGRPC turns a node error into the error an etcd client expects. Errors
// that already carry a gRPC status (the rpctypes errors returned by package
// kv) pass through.
func toGRPC(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, ErrTooLarge):
		return rpctypes.ErrGRPCRequestTooLarge
	case errors.Is(err, replica.ErrNoLeader):
		return rpctypes.ErrGRPCNoLeader
	case errors.Is(err, replica.ErrDropped):
		return rpctypes.ErrGRPCRequestTooManyRequests
	case errors.Is(err, replica.ErrStaleLeader):
		return rpctypes.ErrGRPCNotLeader
	case errors.Is(err, replica.ErrStopped):
		return rpctypes.ErrGRPCStopped
	case errors.Is(err, replica.ErrAbandoned):
		return rpctypes.ErrGRPCTimeout
	case errors.Is(err, context.Canceled):
		if ctx.Err() != nil {
			return rpctypes.ErrGRPCCanceled
		}
		return rpctypes.ErrGRPCTimeout
	case errors.Is(err, context.DeadlineExceeded):
		if ctx.Err() != nil {
			return rpctypes.ErrGRPCDeadlineExceeded
		}
		return rpctypes.ErrGRPCTimeout
	}
	return status.Error(codes.Internal, err.Error())
}

// ToGRPC turns an error of the node (Raft, timeouts, contexts) into the
// gRPC error an etcd client expects, as the etcd services answer it; the
// services of Synod that share the node's propose and read paths use it.
func ToGRPC(ctx context.Context, err error) error { return toGRPC(ctx, err) }
