package server

import (
	"context"

	raftpb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"

	"github.com/cockroachdb/pebble/v2"
	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/replica"
)

// Hooks for the tests of this directory's external test package, which
// reach the ranges one at a time, as a crash between two steps would
// leave them.

// ProposeToRange replicates one command to range id, without anything the
// server does around a client's request (no fence, no hand-over of the
// system state).
func (s *Server) ProposeToRange(ctx context.Context, id keys.RangeID, kind raftcmd.Kind, payload []byte) (any, error) {
	return s.proposeTo(ctx, id, kind, payload, 0)
}

// ChangeRangeConfig makes one configuration change in range id alone.
func (s *Server) ChangeRangeConfig(ctx context.Context, id keys.RangeID, typ raftpb.ConfChangeType, member uint64) error {
	return s.proposeRangeConfChange(ctx, id, typ, cluster.Member{ID: member, IsLearner: typ == raftpb.ConfChangeAddLearnerNode})
}

// RangePublished returns the published state of this node's replica of
// range id (nil: none).
func (s *Server) RangePublished(id keys.RangeID) *replica.Published { return s.rangePublished(id) }

// TransferRangeLeader asks range id's leader to hand leadership to target.
func (s *Server) TransferRangeLeader(ctx context.Context, id keys.RangeID, target uint64) error {
	return s.store.Do(ctx, id, func(r *replica.Replica) { r.TransferLeader(target) })
}

// DB returns the node's Pebble instance.
func (s *Server) DB() *pebble.DB { return s.db }

// ClientServices returns the services registered with the client gRPC
// server, by name, with their methods.
func (s *Server) ClientServices() map[string]grpc.ServiceInfo { return s.clientSrv.GetServiceInfo() }
