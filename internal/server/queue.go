package server

import (
	"context"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/etcdapi"
	"github.com/synod-io/synod/internal/queue"
	"github.com/synod-io/synod/internal/raftcmd"
)

// queueBackend is the job queues' view of the node: their commands go
// through the node's propose path (quota, auth fence, leader wait, request
// timeout), their reads through its views of the first range.
type queueBackend struct{ s *Server }

var _ queue.Backend = queueBackend{}

func (b queueBackend) Propose(ctx context.Context, kind raftcmd.Kind, payload []byte, cost int64) (any, error) {
	out, err := b.s.propose(ctx, kind, payload, 0, cost)
	return out, etcdapi.ToGRPC(ctx, err)
}

func (b queueBackend) ProposeFenced(ctx context.Context, kind raftcmd.Kind, payload []byte, term uint64) (any, error) {
	out, err := b.s.propose(ctx, kind, payload, term, 0)
	return out, etcdapi.ToGRPC(ctx, err)
}

func (b queueBackend) Leader() (uint64, bool) {
	pub := b.s.Published()
	return pub.Term, pub.State == raft.StateLeader && pub.Lead == b.s.id.MemberID && pub.Initialized
}

func (b queueBackend) View() (pebble.Reader, func(), error) {
	v, _, err := b.s.view()
	if err != nil {
		return nil, nil, etcdapi.ToGRPC(context.Background(), err)
	}
	return v, func() { v.Close() }, nil
}

func (b queueBackend) Linearize(ctx context.Context) error {
	return etcdapi.ToGRPC(ctx, b.s.linearize(ctx))
}

func (b queueBackend) Header() *queuepb.ResponseHeader {
	pub := b.s.Published()
	return &queuepb.ResponseHeader{ClusterId: b.s.id.ClusterID, MemberId: b.s.id.MemberID, Revision: pub.KV.Revision, RaftTerm: pub.Term}
}

// newQueues makes the job queue service (internal/queue), before the
// replica whose state machine takes its extension.
func (s *Server) newQueues() *queue.Service {
	q := queue.New(queue.Config{Backend: queueBackend{s}, MaxCommandBytes: s.cfg.MaxRequestBytes, Logger: s.logger.With("service", "queue")})
	s.services = append(s.services, q)
	return q
}
