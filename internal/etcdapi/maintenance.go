package etcdapi

import (
	"context"
	"io"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

// Maintenance implements etcdserverpb.MaintenanceServer.
type Maintenance struct {
	pb.UnimplementedMaintenanceServer
	b Backend
}

// NewMaintenance returns the Maintenance service.
func NewMaintenance(b Backend) *Maintenance { return &Maintenance{b: b} }

// Status implements MaintenanceServer.
func (s *Maintenance) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	resp, err := s.b.Status(ctx)
	return resp, toGRPC(ctx, err)
}

// Alarm implements MaintenanceServer: list, raise or disarm alarms (NOSPACE
// is raised by a node over its storage quota).
func (s *Maintenance) Alarm(ctx context.Context, req *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	resp, err := s.b.Alarm(ctx, req)
	return resp, toGRPC(ctx, err)
}

// Hash implements MaintenanceServer with the KV hash at the current revision.
func (s *Maintenance) Hash(ctx context.Context, _ *pb.HashRequest) (*pb.HashResponse, error) {
	resp, err := s.b.Hash(ctx)
	return resp, toGRPC(ctx, err)
}

// HashKV implements MaintenanceServer.
func (s *Maintenance) HashKV(ctx context.Context, req *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	resp, err := s.b.HashKV(ctx, req.Revision)
	return resp, toGRPC(ctx, err)
}

// Defragment implements MaintenanceServer: a full compaction of the node's
// Pebble instance, which keeps serving meanwhile.
func (s *Maintenance) Defragment(ctx context.Context, _ *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	resp, err := s.b.Defragment(ctx)
	return resp, toGRPC(ctx, err)
}

// MoveLeader implements MaintenanceServer.
func (s *Maintenance) MoveLeader(ctx context.Context, req *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	resp, err := s.b.MoveLeader(ctx, req)
	return resp, toGRPC(ctx, err)
}

// snapshotChunk is the size of one Snapshot message.
const snapshotChunk = 256 << 10

// Snapshot implements MaintenanceServer: a consistent backup of this node's
// data, streamed in chunks (see package backup for the format).
func (s *Maintenance) Snapshot(_ *pb.SnapshotRequest, stream grpc.ServerStreamingServer[pb.SnapshotResponse]) error {
	ctx := stream.Context()
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() { // ends when the backup is written or the pipe is closed
		_, err := s.b.Snapshot(ctx, pw)
		pw.CloseWithError(err)
		errc <- err
	}()
	estimate := s.b.SnapshotSizeEstimate()
	var sent int64
	buf := make([]byte, snapshotChunk)
	for {
		n, err := io.ReadFull(pr, buf)
		if n > 0 {
			sent += int64(n)
			resp := &pb.SnapshotResponse{Blob: append([]byte(nil), buf[:n]...), RemainingBytes: uint64(max(estimate-sent, 1))}
			if serr := stream.Send(resp); serr != nil {
				pr.CloseWithError(serr)
				<-errc
				return serr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			<-errc
			return toGRPC(ctx, err)
		}
	}
	if err := <-errc; err != nil {
		return toGRPC(ctx, err)
	}
	// The last message says nothing remains, as etcd's does.
	return stream.Send(&pb.SnapshotResponse{Header: s.b.Header(), RemainingBytes: 0})
}
