package etcdapi

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Cluster implements etcdserverpb.ClusterServer. Membership changes come in
// a later issue; MemberList reports the real members.
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
