package server

import (
	"context"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/etcdapi"
	"github.com/synod-io/synod/internal/limit"
	"github.com/synod-io/synod/internal/limit/limitsm"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/watch"
)

// dataRangeExtensions are the extensions of every data range's state
// machine: the services whose data lives in the range.
func dataRangeExtensions() []datarange.Extension {
	return []datarange.Extension{limitsm.New()}
}

// newLimits builds the rate limiters' service of the node (internal/limit);
// its peer service must be registered before the peer server serves.
func (s *Server) newLimits() *limit.Service {
	return limit.New(limit.Config{
		Backend:         limitBackend{s},
		ElectionTimeout: s.ElectionTimeout(),
		Metrics:         s.metrics.Registry,
		Logger:          s.logger.With("service", "limits"),
	})
}

// limitBackend is the rate limiters' view of the node. The limits live in
// the data range (Published, Propose and WaitLeader are the data range's:
// the limits' raftcmd kinds are not System); their owner is its leader.
type limitBackend struct{ s *Server }

var _ limit.Backend = limitBackend{}

func (b limitBackend) Header() *pb.ResponseHeader { return b.s.revisionHeader() }
func (b limitBackend) MemberID() uint64           { return b.s.id.MemberID }
func (b limitBackend) DB() pebble.Reader          { return b.s.db }
func (b limitBackend) Hub() *watch.Hub            { return b.s.hub }

func (b limitBackend) After(d time.Duration) <-chan struct{} { return b.s.timeouts.After(d) }

func (b limitBackend) Propose(ctx context.Context, kind raftcmd.Kind, req proto.Message, term uint64) (any, error) {
	var out any
	var err error
	if term != 0 {
		out, err = b.s.proposeFenced(ctx, kind, req, term)
	} else {
		out, err = b.s.Propose(ctx, kind, req)
	}
	return out, etcdapi.ToGRPC(ctx, err)
}

func (b limitBackend) Leadership() limit.Leadership {
	pub := b.s.Published()
	return limit.Leadership{
		Lead:   pub.Lead,
		Term:   pub.Term,
		Leader: pub.State == raft.StateLeader && pub.Lead == b.s.id.MemberID,
		Voters: len(pub.Voters),
	}
}

func (b limitBackend) WaitLeader(ctx context.Context) error {
	return etcdapi.ToGRPC(ctx, b.s.WaitLeader(ctx))
}

func (b limitBackend) Linearize(ctx context.Context) error {
	return etcdapi.ToGRPC(ctx, b.s.linearize(ctx))
}

func (b limitBackend) Range(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	resp, err := b.s.Range(ctx, req)
	return resp, etcdapi.ToGRPC(ctx, err)
}

func (b limitBackend) PeerConn(member uint64) (grpc.ClientConnInterface, error) {
	return b.s.transport.Conn(member)
}

func (b limitBackend) LeaseGrant(ctx context.Context, ttl int64) (int64, error) {
	resp, err := b.s.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: ttl})
	if err != nil {
		return 0, etcdapi.ToGRPC(ctx, err)
	}
	return resp.ID, nil
}
