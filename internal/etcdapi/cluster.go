package etcdapi

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Cluster implements etcdserverpb.ClusterServer: membership changes are
// Raft configuration changes made by the leader (other nodes forward them).
type Cluster struct {
	pb.UnimplementedClusterServer
	b Backend
}

// NewCluster returns the Cluster service.
func NewCluster(b Backend) *Cluster { return &Cluster{b: b} }

// MemberList implements ClusterServer.
func (s *Cluster) MemberList(ctx context.Context, req *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	ms, err := s.b.Members(ctx, req.Linearizable)
	if err != nil {
		return nil, toGRPC(ctx, err)
	}
	resp := &pb.MemberListResponse{Header: s.b.Header()}
	for _, m := range ms {
		resp.Members = append(resp.Members, &pb.Member{
			ID:         m.ID,
			Name:       m.Name,
			PeerURLs:   m.PeerURLs,
			ClientURLs: m.ClientURLs,
			IsLearner:  m.IsLearner,
		})
	}
	return resp, nil
}

// MemberAdd implements ClusterServer.
func (s *Cluster) MemberAdd(ctx context.Context, req *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	resp, err := s.b.MemberAdd(ctx, req)
	return resp, toGRPC(ctx, err)
}

// MemberRemove implements ClusterServer.
func (s *Cluster) MemberRemove(ctx context.Context, req *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	resp, err := s.b.MemberRemove(ctx, req)
	return resp, toGRPC(ctx, err)
}

// MemberUpdate implements ClusterServer.
func (s *Cluster) MemberUpdate(ctx context.Context, req *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	resp, err := s.b.MemberUpdate(ctx, req)
	return resp, toGRPC(ctx, err)
}

// MemberPromote implements ClusterServer.
func (s *Cluster) MemberPromote(ctx context.Context, req *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	resp, err := s.b.MemberPromote(ctx, req)
	return resp, toGRPC(ctx, err)
}
