package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/transport"
)

// establishIdentity loads this node's identity, or creates it: by
// bootstrapping a new cluster, by joining one through its client endpoints
// (--join), or by looking up the member an operator added (--initial-cluster-
// state existing). A node that joins starts with no data and receives it by
// snapshot.
func (s *Server) establishIdentity(ctx context.Context, peerURL string) (ident, error) {
	id, ok, err := loadIdent(s.db)
	if err != nil {
		return ident{}, err
	}
	switch {
	case ok:
		if s.cfg.InitialCluster != "" || len(s.cfg.Join) > 0 {
			s.cfg.Logger.Info("data dir already initialized; ignoring --initial-cluster and --join", "data-dir", s.cfg.DataDir)
		}
		return id, nil
	case len(s.cfg.Join) > 0:
		id, err = s.join(ctx, peerURL)
		if err != nil {
			return ident{}, fmt.Errorf("join the cluster at %v: %w", s.cfg.Join, err)
		}
		s.cfg.Logger.Info("joined the cluster as a learner", "member", fmt.Sprintf("%x", id.MemberID))
		return id, nil
	case s.cfg.InitialClusterState == "existing":
		id, err = s.discover(ctx, peerURL)
		if err != nil {
			return ident{}, fmt.Errorf("find this member in the existing cluster: %w", err)
		}
		s.cfg.Logger.Info("found this member in the existing cluster", "member", fmt.Sprintf("%x", id.MemberID))
		return id, nil
	default:
		id, err = bootstrap(s.db, &s.cfg, peerURL)
		if err != nil {
			return ident{}, fmt.Errorf("bootstrap: %w", err)
		}
		s.cfg.Logger.Info("bootstrapped new member", "data-dir", s.cfg.DataDir)
		return id, nil
	}
}

// join adds this node as a learner through the client endpoints of an
// existing cluster. If an earlier attempt added it but it never started, the
// same member is used again.
func (s *Server) join(ctx context.Context, peerURL string) (ident, error) {
	tlsCfg, err := s.joinTLS()
	if err != nil {
		return ident{}, err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: s.cfg.Join, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), TLS: tlsCfg})
	if err != nil {
		return ident{}, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*s.cfg.RequestTimeout)
	defer cancel()
	var memberID, clusterID uint64
	var members []*pb.Member
	resp, err := cli.MemberAddAsLearner(ctx, []string{peerURL})
	switch {
	case err == nil:
		memberID, clusterID, members = resp.Member.ID, resp.Header.ClusterId, resp.Members
	case errors.Is(err, rpctypes.ErrPeerURLExist):
		ml, lerr := cli.MemberList(ctx)
		if lerr != nil {
			return ident{}, lerr
		}
		for _, m := range ml.Members {
			if !slices.Contains(m.PeerURLs, peerURL) {
				continue
			}
			if m.Name != "" {
				return ident{}, fmt.Errorf("member %s (%x) already has peer URL %s and has started: remove it first, or use another address", m.Name, m.ID, peerURL)
			}
			memberID = m.ID
		}
		if memberID == 0 {
			return ident{}, err
		}
		clusterID, members = ml.Header.ClusterId, ml.Members
	default:
		return ident{}, err
	}
	return s.writeJoinedIdent(clusterID, memberID, members)
}

// discover finds the member an operator added (etcdctl member add) for this
// node's peer URL by asking the other members in --initial-cluster.
func (s *Server) discover(ctx context.Context, peerURL string) (ident, error) {
	spec, err := cluster.ParseInitialCluster(s.cfg.InitialCluster)
	if err != nil {
		return ident{}, err
	}
	var lastErr error
	for _, m := range spec {
		if slices.Contains(m.PeerURLs, peerURL) {
			continue
		}
		resp, err := s.askMembers(ctx, cluster.HostPort(m.PeerURLs[0]))
		if err != nil {
			lastErr = err
			continue
		}
		for _, pm := range resp.Members {
			if slices.Contains(pm.PeerURLs, peerURL) {
				return s.writeJoinedIdent(resp.Header.ClusterId, pm.ID, resp.Members)
			}
		}
		return ident{}, fmt.Errorf("no member has peer URL %s: add it first (etcdctl member add %s --peer-urls=%s)", peerURL, s.cfg.Name, peerURL)
	}
	if lastErr == nil {
		lastErr = errors.New("the initial cluster names no other member")
	}
	return ident{}, lastErr
}

func (s *Server) askMembers(ctx context.Context, addr string) (*pb.MemberListResponse, error) {
	conn, err := transport.Dial(addr, peerDialOptions(s.cfg, s.peerCreds()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp := &pb.MemberListResponse{}
	if err := conn.Invoke(ctx, clusterMembersMethod, &pb.MemberListRequest{}, resp, grpc.WaitForReady(true)); err != nil {
		return nil, fmt.Errorf("ask %s for the members: %w", addr, err)
	}
	return resp, nil
}

// writeJoinedIdent records the identity of a joining node and the members
// it knows of (so that it can reach them before its first snapshot, which
// replaces them).
func (s *Server) writeJoinedIdent(clusterID, memberID uint64, members []*pb.Member) (ident, error) {
	id := ident{ClusterID: clusterID, MemberID: memberID, Name: s.cfg.Name}
	b := s.db.NewBatch()
	defer b.Close()
	for _, m := range members {
		rec := cluster.Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner}
		if err := cluster.PutMember(b, rec); err != nil {
			return ident{}, err
		}
	}
	if err := b.Set(keys.NodeIdentKey(), id.encode(), nil); err != nil {
		return ident{}, err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return ident{}, err
	}
	return id, nil
}

// promoteLoop asks for this learner's promotion once it has caught up, until
// it is a voter. It runs on nodes started with --join.
func (s *Server) promoteLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.ElectionTimeout() / 2):
		}
		pub := s.Published()
		if !pub.Initialized || pub.Lead == 0 {
			continue
		}
		if !slices.Contains(pub.Learners, s.id.MemberID) {
			if slices.Contains(pub.Voters, s.id.MemberID) {
				return
			}
			continue // not yet in the configuration this node has applied
		}
		pctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		_, err := s.MemberPromote(pctx, &pb.MemberPromoteRequest{ID: s.id.MemberID})
		cancel()
		switch {
		case err == nil:
			s.logger.Info("promoted from learner to voter")
			return
		case errors.Is(err, rpctypes.ErrGRPCLearnerNotReady), errors.Is(err, rpctypes.ErrGRPCMemberNotEnoughStarted):
			s.logger.Debug("not promoted yet", "err", err)
		case errors.Is(err, rpctypes.ErrGRPCMemberNotLearner):
			return
		default:
			s.logger.Info("promotion failed; retrying", "err", err)
		}
	}
}
