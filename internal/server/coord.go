package server

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/synod-io/synod/internal/coord"
	"github.com/synod-io/synod/internal/etcdapi"
	"github.com/synod-io/synod/internal/watch"
)

// coordBackend is the coordination services' view of the node: its reads,
// transactions and lease grants go through the etcd KV and Lease services
// themselves (validation, limits, errors and headers included), its watches
// through the node's hub.
type coordBackend struct {
	s     *Server
	kv    *etcdapi.KV
	lease *etcdapi.Lease
}

var _ coord.Backend = coordBackend{}

func (b coordBackend) Header() *pb.ResponseHeader { return b.s.Header() }
func (b coordBackend) Hub() *watch.Hub            { return b.s.hub }

func (b coordBackend) Range(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	return b.kv.Range(ctx, req)
}

func (b coordBackend) Txn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	return b.kv.Txn(ctx, req)
}

func (b coordBackend) LeaseGrant(ctx context.Context, req *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	return b.lease.LeaseGrant(ctx, req)
}

// registerCoordination registers the Lock, Election and Groups services
// (package coord) with the client gRPC server and gateway.
func (s *Server) registerCoordination(srv grpc.ServiceRegistrar) {
	limits := etcdapi.Limits{MaxRequestBytes: s.cfg.MaxRequestBytes, MaxTxnOps: s.cfg.MaxTxnOps}
	b := coordBackend{s: s, kv: etcdapi.NewKV(s, limits), lease: etcdapi.NewLease(s)}
	coord.New(b, s.logger).Register(srv)
}
