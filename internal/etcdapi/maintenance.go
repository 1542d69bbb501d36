package etcdapi

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Maintenance implements etcdserverpb.MaintenanceServer: Status and an empty
// alarm list for now; the rest comes with the operations issue.
type Maintenance struct {
	pb.UnimplementedMaintenanceServer
	b Backend
}

// NewMaintenance returns the Maintenance service.
func NewMaintenance(b Backend) *Maintenance { return &Maintenance{b: b} }

// Status implements MaintenanceServer.
func (s *Maintenance) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	resp, err := s.b.Status(ctx)
	if err != nil {
		return nil, toGRPC(ctx, err)
	}
	return resp, nil
}

// Alarm implements MaintenanceServer. No alarm can be raised yet: GET
// returns an empty list and activation or deactivation is refused.
func (s *Maintenance) Alarm(ctx context.Context, req *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	if req.Action != pb.AlarmRequest_GET {
		return nil, rpcUnimplemented("alarm activation")
	}
	return &pb.AlarmResponse{Header: s.b.Header()}, nil
}
