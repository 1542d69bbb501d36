package etcdapi

import (
	"context"
	"errors"
	"io"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Lease implements etcdserverpb.LeaseServer.
type Lease struct {
	pb.UnimplementedLeaseServer
	b Backend
}

// NewLease returns the Lease service.
func NewLease(b Backend) *Lease { return &Lease{b: b} }

// header returns the response header: h's revision, or (as etcd) the
// current one.
func (s *Lease) header(h *pb.ResponseHeader) *pb.ResponseHeader {
	out := s.b.Header()
	out.Revision = h.GetRevision()
	if out.Revision == 0 {
		out.Revision = s.b.Hub().Revision()
	}
	return out
}

// LeaseGrant implements LeaseServer.
func (s *Lease) LeaseGrant(ctx context.Context, req *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	resp, err := s.b.LeaseGrant(ctx, req)
	if err != nil {
		return nil, toGRPC(ctx, err)
	}
	resp.Header = s.header(resp.Header)
	return resp, nil
}

// LeaseRevoke implements LeaseServer.
func (s *Lease) LeaseRevoke(ctx context.Context, req *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	resp, err := s.b.LeaseRevoke(ctx, req)
	if err != nil {
		return nil, toGRPC(ctx, err)
	}
	resp.Header = s.header(resp.Header)
	return resp, nil
}

// LeaseKeepAlive implements LeaseServer: each request renews one lease and
// gets its TTL back (0 if the lease is gone, as etcd answers).
func (s *Lease) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	ctx := stream.Context()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		// The header is taken before the renewal, as etcd's is: its
		// revision must not follow one at which the lease was revoked
		// while the renewal was under way.
		h := s.header(nil)
		ttl, err := s.b.LeaseRenew(ctx, req.ID)
		if err != nil {
			return toGRPC(ctx, err)
		}
		if err := stream.Send(&pb.LeaseKeepAliveResponse{Header: h, ID: req.ID, TTL: ttl}); err != nil {
			return err
		}
	}
}

// LeaseTimeToLive implements LeaseServer.
func (s *Lease) LeaseTimeToLive(ctx context.Context, req *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	resp, err := s.b.LeaseTimeToLive(ctx, req)
	if err != nil {
		return nil, toGRPC(ctx, err)
	}
	resp.Header = s.header(resp.Header)
	return resp, nil
}

// LeaseLeases implements LeaseServer.
func (s *Lease) LeaseLeases(ctx context.Context, _ *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	resp, err := s.b.LeaseLeases(ctx)
	if err != nil {
		return nil, toGRPC(ctx, err)
	}
	resp.Header = s.header(resp.Header)
	return resp, nil
}
