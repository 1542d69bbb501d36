package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/console"
	"github.com/synod-io/synod/internal/metrics"
)

// The web console's charts: one sample of the KV traffic per second, for
// the last five minutes.
const (
	historyInterval = time.Second
	historySamples  = 300
)

// memberStatusTimeout bounds the wait for one member's status in the
// console's overview: a member that is down must not hold up the page.
const memberStatusTimeout = 1500 * time.Millisecond

// versionMetadataKey is the header in which a member's answer to a peer's
// Status call carries its Synod version.
const versionMetadataKey = "synod-version"

// consoleBackend is what the web console (package console) reads of the
// node.
type consoleBackend struct{ s *Server }

// Identify implements console.Backend.
func (b consoleBackend) Identify(ctx context.Context) (*auth.State, string, error) {
	return b.s.authz.Identify(ctx)
}

// Samples implements console.Backend.
func (b consoleBackend) Samples() ([]metrics.Sample, time.Duration) {
	return b.s.history.Samples(), b.s.history.Interval()
}

// Queues implements console.Backend.
func (b consoleBackend) Queues(ctx context.Context) ([]string, error) {
	return b.s.queues.Queues(ctx)
}

// Overview implements console.Backend: the members as this node's applied
// state has them, each with its status (asked over the peer connection, in
// parallel), the alarms and the ranges.
func (b consoleBackend) Overview(ctx context.Context) (*console.Overview, error) {
	s := b.s
	members, err := cluster.ListMembers(s.db)
	if err != nil {
		return nil, err
	}
	alarms, err := cluster.ListAlarms(s.db)
	if err != nil {
		return nil, err
	}
	pub := s.Published()
	ov := &console.Overview{
		ClusterID:       s.id.ClusterID,
		MemberID:        s.id.MemberID,
		Leader:          pub.Lead,
		RaftTerm:        pub.Term,
		Revision:        pub.KV.Revision,
		CompactRevision: pub.KV.CompactRevision,
		SynodVersion:    s.cfg.Version,
		Members:         make([]console.Member, len(members)),
		Alarms:          alarms,
		Ranges:          s.consoleRanges(),
	}
	var wg sync.WaitGroup
	for i, m := range members {
		ov.Members[i] = console.Member{
			ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, Learner: m.IsLearner,
		}
		wg.Go(func() {
			st, version, err := s.memberStatus(ctx, m.ID)
			ov.Members[i].Status, ov.Members[i].SynodVersion, ov.Members[i].Err = st, version, err
		})
	}
	wg.Wait()
	return ov, nil
}

// memberStatus returns a member's etcd Status and Synod version: this
// node's own, or another member's over the peer connection (which needs no
// client credentials, and reaches members whose client port the caller
// cannot).
func (s *Server) memberStatus(ctx context.Context, id uint64) (*pb.StatusResponse, string, error) {
	ctx, cancel := context.WithTimeout(ctx, memberStatusTimeout)
	defer cancel()
	if id == s.id.MemberID {
		st, err := s.Status(ctx)
		return st, s.cfg.Version, err
	}
	conn, err := s.transport.Conn(id)
	if err != nil {
		return nil, "", err
	}
	resp := &pb.StatusResponse{}
	var md metadata.MD
	if err := conn.Invoke(ctx, clusterStatusMethod, &pb.StatusRequest{}, resp, grpc.Header(&md)); err != nil {
		return nil, "", fmt.Errorf("member %x did not answer: %w", id, err)
	}
	var version string
	if v := md.Get(versionMetadataKey); len(v) > 0 {
		version = v[0]
	}
	return resp, version, nil
}

// peerStatus answers a peer's Status call (the console's overview on
// another member), with this node's version in the header.
func peerStatus(s *Server, ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	if s.cfg.Version != "" {
		_ = grpc.SetHeader(ctx, metadata.Pairs(versionMetadataKey, s.cfg.Version))
	}
	return s.Status(ctx)
}

// consoleRanges describes this node's ranges for the console.
func (s *Server) consoleRanges() []console.Range {
	var out []console.Range
	for _, r := range s.rangeInfos() {
		out = append(out, console.Range{ID: r.Id, System: r.System, Start: r.StartKey, End: r.EndKey, Leader: r.Leader, Voters: r.Voters, Learners: r.Learners})
	}
	return out
}
