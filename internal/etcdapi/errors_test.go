package etcdapi

import (
	"context"
	"errors"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/internal/replica"
)

// TestToGRPC checks the translation of the node's errors into the errors
// etcd clients act on (retry elsewhere, back off, give up).
func TestToGRPC(t *testing.T) {
	live := context.Background()
	canceled, cancel := context.WithCancel(live)
	cancel()
	expired, cancel2 := context.WithTimeout(live, -1)
	defer cancel2()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want error
	}{
		{"too large", live, fmt.Errorf("propose: %w", ErrTooLarge), rpctypes.ErrGRPCRequestTooLarge},
		{"no leader", live, fmt.Errorf("propose: %w", replica.ErrNoLeader), rpctypes.ErrGRPCNoLeader},
		{"dropped", live, replica.ErrDropped, rpctypes.ErrGRPCRequestTooManyRequests},
		{"stale leader", live, replica.ErrStaleLeader, rpctypes.ErrGRPCNotLeader},
		{"stopped", live, replica.ErrStopped, rpctypes.ErrGRPCStopped},
		{"abandoned", live, replica.ErrAbandoned, rpctypes.ErrGRPCTimeout},
		{"client canceled", canceled, context.Canceled, rpctypes.ErrGRPCCanceled},
		{"node canceled", live, fmt.Errorf("read: %w", context.Canceled), rpctypes.ErrGRPCTimeout},
		{"client deadline", expired, context.DeadlineExceeded, rpctypes.ErrGRPCDeadlineExceeded},
		{"node deadline", live, fmt.Errorf("read index: %w", context.DeadlineExceeded), rpctypes.ErrGRPCTimeout},
		{"etcd error passes", live, rpctypes.ErrGRPCCompacted, rpctypes.ErrGRPCCompacted},
		{"etcd error passes over a canceled context", canceled, rpctypes.ErrGRPCLeaseNotFound, rpctypes.ErrGRPCLeaseNotFound},
		{"status passes", live, status.Error(codes.PermissionDenied, "no"), status.Error(codes.PermissionDenied, "no")},
		{"other", live, errors.New("disk on fire"), status.Error(codes.Internal, "disk on fire")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, ToGRPC(tt.ctx, tt.err), tt.want)
		})
	}
	if err := ToGRPC(live, nil); err != nil {
		t.Fatalf("got %v for no error, want nil", err)
	}
}

// TestServicesMapBackendErrors checks that every call of every service
// answers a node error with the etcd error for it, the same for all.
func TestServicesMapBackendErrors(t *testing.T) {
	ctx := context.Background()
	type call struct {
		name string
		fn   func(t *testing.T, b Backend) error
	}
	calls := []call{
		{"Range", func(t *testing.T, b Backend) error {
			_, err := NewKV(b, Limits{}).Range(ctx, &pb.RangeRequest{Key: []byte("a")})
			return err
		}},
		{"Put", func(t *testing.T, b Backend) error {
			_, err := NewKV(b, Limits{}).Put(ctx, &pb.PutRequest{Key: []byte("a")})
			return err
		}},
		{"DeleteRange", func(t *testing.T, b Backend) error {
			_, err := NewKV(b, Limits{}).DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("a")})
			return err
		}},
		{"Txn read", func(t *testing.T, b Backend) error {
			_, err := NewKV(b, Limits{}).Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{rangeOp("a")}})
			return err
		}},
		{"Txn write", func(t *testing.T, b Backend) error {
			_, err := NewKV(b, Limits{}).Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{putOp("a")}})
			return err
		}},
		{"Compact", func(t *testing.T, b Backend) error {
			_, err := NewKV(b, Limits{}).Compact(ctx, &pb.CompactionRequest{Revision: 2})
			return err
		}},
		{"LeaseGrant", func(t *testing.T, b Backend) error {
			_, err := NewLease(b).LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 5})
			return err
		}},
		{"LeaseRevoke", func(t *testing.T, b Backend) error {
			_, err := NewLease(b).LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: 1})
			return err
		}},
		{"LeaseTimeToLive", func(t *testing.T, b Backend) error {
			_, err := NewLease(b).LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: 1})
			return err
		}},
		{"LeaseLeases", func(t *testing.T, b Backend) error {
			_, err := NewLease(b).LeaseLeases(ctx, &pb.LeaseLeasesRequest{})
			return err
		}},
		{"LeaseKeepAlive", func(t *testing.T, b Backend) error {
			stream := newServerStream[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse](ctx)
			done := serve(func() error { return NewLease(b).LeaseKeepAlive(stream) })
			stream.send(t, &pb.LeaseKeepAliveRequest{ID: 1})
			return result(t, done)
		}},
		{"MemberList", func(t *testing.T, b Backend) error {
			_, err := NewCluster(b).MemberList(ctx, &pb.MemberListRequest{Linearizable: true})
			return err
		}},
		{"MemberAdd", func(t *testing.T, b Backend) error {
			_, err := NewCluster(b).MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{"http://h:2380"}})
			return err
		}},
		{"MemberRemove", func(t *testing.T, b Backend) error {
			_, err := NewCluster(b).MemberRemove(ctx, &pb.MemberRemoveRequest{ID: 2})
			return err
		}},
		{"MemberUpdate", func(t *testing.T, b Backend) error {
			_, err := NewCluster(b).MemberUpdate(ctx, &pb.MemberUpdateRequest{ID: 2})
			return err
		}},
		{"MemberPromote", func(t *testing.T, b Backend) error {
			_, err := NewCluster(b).MemberPromote(ctx, &pb.MemberPromoteRequest{ID: 2})
			return err
		}},
		{"Status", func(t *testing.T, b Backend) error {
			_, err := NewMaintenance(b).Status(ctx, &pb.StatusRequest{})
			return err
		}},
		{"Alarm", func(t *testing.T, b Backend) error {
			_, err := NewMaintenance(b).Alarm(ctx, &pb.AlarmRequest{})
			return err
		}},
		{"Hash", func(t *testing.T, b Backend) error {
			_, err := NewMaintenance(b).Hash(ctx, &pb.HashRequest{})
			return err
		}},
		{"HashKV", func(t *testing.T, b Backend) error {
			_, err := NewMaintenance(b).HashKV(ctx, &pb.HashKVRequest{})
			return err
		}},
		{"Defragment", func(t *testing.T, b Backend) error {
			_, err := NewMaintenance(b).Defragment(ctx, &pb.DefragmentRequest{})
			return err
		}},
		{"MoveLeader", func(t *testing.T, b Backend) error {
			_, err := NewMaintenance(b).MoveLeader(ctx, &pb.MoveLeaderRequest{TargetID: 2})
			return err
		}},
		{"Snapshot", func(t *testing.T, b Backend) error {
			stream := newServerStream[pb.SnapshotRequest, pb.SnapshotResponse](ctx)
			return NewMaintenance(b).Snapshot(&pb.SnapshotRequest{}, stream)
		}},
		{"Watch requiring a leader", func(t *testing.T, b Backend) error {
			md := metadata.Pairs(rpctypes.MetadataRequireLeaderKey, rpctypes.MetadataHasLeader)
			stream := newServerStream[pb.WatchRequest, pb.WatchResponse](metadata.NewIncomingContext(ctx, md))
			return NewWatch(b, Limits{}).Watch(stream)
		}},
	}
	errs := []struct {
		err  error
		want error
	}{
		{fmt.Errorf("forward: %w", replica.ErrNoLeader), rpctypes.ErrGRPCNoLeader},
		{replica.ErrStopped, rpctypes.ErrGRPCStopped},
		{rpctypes.ErrGRPCLeaseNotFound, rpctypes.ErrGRPCLeaseNotFound},
		{errors.New("disk on fire"), status.Error(codes.Internal, "disk on fire")},
	}
	for _, c := range calls {
		for _, e := range errs {
			t.Run(fmt.Sprintf("%s/%v", c.name, e.err), func(t *testing.T) {
				checkErr(t, c.fn(t, failingBackend{err: e.err}), e.want)
			})
		}
	}
}
