package server

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/rangedesc"
	"github.com/synod-io/synod/internal/transport"
)

// establishIdentity loads this node's identity, or creates it: by
// bootstrapping a new cluster, by joining one through its client endpoints
// (--join), or by looking up the member an operator added (--initial-cluster-
// state existing). A node that joins starts with no data and receives it by
// snapshot. It returns the cluster's peer secret too (nil: peer TLS
// authenticates the members), stored with the identity.
func (s *Server) establishIdentity(ctx context.Context, peerURL string) (ident, []byte, error) {
	id, ok, err := loadIdent(s.db)
	if err != nil {
		return ident{}, nil, err
	}
	switch {
	case ok:
		if err := checkLayout(s.db); err != nil {
			return ident{}, nil, err
		}
		if s.cfg.InitialCluster != "" || len(s.cfg.Join) > 0 {
			s.cfg.Logger.Info("data dir already initialized; ignoring --initial-cluster and --join", "data-dir", s.cfg.DataDir)
		}
		secret, err := s.storedPeerSecret(id)
		if err != nil {
			return ident{}, nil, err
		}
		return id, secret, nil
	case len(s.cfg.Join) > 0:
		id, secret, err := s.join(ctx, peerURL)
		if err != nil {
			return ident{}, nil, fmt.Errorf("join the cluster at %v: %w", s.cfg.Join, err)
		}
		s.cfg.Logger.Info("joined the cluster as a learner", "member", fmt.Sprintf("%x", id.MemberID))
		return id, secret, nil
	case s.cfg.InitialClusterState == "existing":
		if s.cfg.PeerSecret == nil && s.peerTLS == nil {
			return ident{}, nil, fmt.Errorf("a member added with member add looks itself up on the peer port of the others, " +
				"which needs the cluster's peer secret: give --peer-secret-file with the output of 'synod peer-secret get' " +
				"(as root when auth is enabled), or configure peer TLS; or start the node with --join instead of member add")
		}
		id, err = s.discover(ctx, peerURL)
		if err != nil {
			return ident{}, nil, fmt.Errorf("find this member in the existing cluster: %w", err)
		}
		s.cfg.Logger.Info("found this member in the existing cluster", "member", fmt.Sprintf("%x", id.MemberID))
		return id, s.cfg.PeerSecret, nil
	default:
		id, secret, err := bootstrap(s.db, &s.cfg, peerURL, s.peerTLS != nil)
		if err != nil {
			return ident{}, nil, fmt.Errorf("bootstrap: %w", err)
		}
		s.cfg.Logger.Info("bootstrapped new member", "data-dir", s.cfg.DataDir)
		return id, secret, nil
	}
}

// join adds this node as a learner through the client endpoints of an
// existing cluster, after fetching the cluster's peer secret there. If an
// earlier attempt added it but it never started, the same member is used
// again.
func (s *Server) join(ctx context.Context, peerURL string) (ident, []byte, error) {
	tlsCfg, err := s.joinTLS()
	if err != nil {
		return ident{}, nil, err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: s.cfg.Join, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), TLS: tlsCfg})
	if err != nil {
		return ident{}, nil, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*s.cfg.RequestTimeout)
	defer cancel()
	secret, err := s.joinPeerSecret(ctx, cli)
	if err != nil {
		return ident{}, nil, err
	}
	// The data ranges first, from a member's peer service: a node that
	// cannot reach its peers (a peer certificate they do not trust, say)
	// fails here, before it is added.
	ml, err := cli.MemberList(ctx)
	if err != nil {
		return ident{}, nil, err
	}
	descs, err := s.askRanges(ctx, ml.Members, secret)
	if err != nil {
		return ident{}, nil, err
	}
	var memberID, clusterID uint64
	var members []*pb.Member
	resp, err := cli.MemberAddAsLearner(ctx, []string{peerURL})
	switch {
	case err == nil:
		memberID, clusterID, members = resp.Member.ID, resp.Header.ClusterId, resp.Members
	case errors.Is(err, rpctypes.ErrPeerURLExist):
		// An earlier attempt added it: the list read above has it.
		for _, m := range ml.Members {
			if !slices.Contains(m.PeerURLs, peerURL) {
				continue
			}
			if m.Name != "" {
				return ident{}, nil, fmt.Errorf("member %s (%x) already has peer URL %s and has started: remove it first, or use another address", m.Name, m.ID, peerURL)
			}
			memberID = m.ID
		}
		if memberID == 0 {
			return ident{}, nil, err
		}
		clusterID, members = ml.Header.ClusterId, ml.Members
	default:
		return ident{}, nil, err
	}
	id, err := s.writeJoinedIdent(clusterID, memberID, members, secret, descs)
	return id, secret, err
}

// joinPeerSecret fetches the peer secret of the cluster to join, unless
// this node uses peer TLS. A secret given in the configuration must be the
// cluster's.
func (s *Server) joinPeerSecret(ctx context.Context, cli *clientv3.Client) ([]byte, error) {
	if s.peerTLS != nil {
		return s.cfg.PeerSecret, nil
	}
	secret, err := FetchPeerSecret(ctx, cli.ActiveConnection())
	switch {
	case err == nil:
	case status.Code(err) == codes.Unimplemented:
		return nil, fmt.Errorf("the cluster does not hand out its peer secret (%w): it runs an older Synod; upgrade it first", err)
	case status.Code(err) == codes.FailedPrecondition:
		return nil, fmt.Errorf("get the cluster's peer secret: %w: configure this node's peer TLS as the members'", err)
	default:
		return nil, fmt.Errorf("get the cluster's peer secret (joining needs the root user when auth is enabled): %w", err)
	}
	if s.cfg.PeerSecret != nil && !hmac.Equal(secret, s.cfg.PeerSecret) {
		return nil, errors.New("the peer secret given (--peer-secret-file) is not the cluster's: give none with --join")
	}
	return secret, nil
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
				descs, err := s.askRanges(ctx, resp.Members, s.cfg.PeerSecret)
				if err != nil {
					return ident{}, err
				}
				return s.writeJoinedIdent(resp.Header.ClusterId, pm.ID, resp.Members, s.cfg.PeerSecret, descs)
			}
		}
		return ident{}, fmt.Errorf("no member has peer URL %s: add it first (etcdctl member add %s --peer-urls=%s)", peerURL, s.cfg.Name, peerURL)
	}
	if lastErr == nil {
		lastErr = errors.New("the initial cluster names no other member")
	}
	return ident{}, lastErr
}

// askMembers asks a member's peer service for the members, as a node that
// does not know its cluster yet.
func (s *Server) askMembers(ctx context.Context, addr string) (*pb.MemberListResponse, error) {
	resp := &pb.MemberListResponse{}
	if err := s.askPeer(ctx, addr, s.cfg.PeerSecret, clusterMembersMethod, &pb.MemberListRequest{}, resp); err != nil {
		return nil, fmt.Errorf("ask %s for the members: %w", addr, err)
	}
	return resp, nil
}

// askRanges asks the peer service of a member at one of peerURLs for the
// data ranges' descriptors. A member of a Synod from before the method
// answers Unimplemented: its cluster has the initial one.
func (s *Server) askRanges(ctx context.Context, members []*pb.Member, secret []byte) ([]rangedesc.Descriptor, error) {
	var lastErr error
	for _, m := range members {
		if m.Name == "" || len(m.PeerURLs) == 0 || m.ID == 0 {
			continue // not started yet (this node, say)
		}
		addr := cluster.HostPort(m.PeerURLs[0])
		resp := &synodpb.ListRangesResponse{}
		err := s.askPeer(ctx, addr, secret, clusterRangesMethod, &synodpb.ListRangesRequest{}, resp)
		switch {
		case status.Code(err) == codes.Unimplemented:
			return rangedesc.Initial(), nil
		case err != nil:
			lastErr = fmt.Errorf("ask %s for the data ranges: %w", addr, err)
			continue
		}
		var ds []rangedesc.Descriptor
		for _, r := range resp.Ranges {
			if !r.System {
				ds = append(ds, rangedesc.Descriptor{RangeID: keys.RangeID(r.Id), Start: r.StartKey, End: r.EndKey, Generation: r.Generation})
			}
		}
		if _, err := rangedesc.NewSet(ds); err != nil {
			return nil, fmt.Errorf("the data ranges %s gave: %w", addr, err)
		}
		return ds, nil
	}
	if lastErr == nil {
		lastErr = errors.New("no started member to ask for the data ranges")
	}
	return nil, lastErr
}

// askPeer calls method on a member's peer service, as a node that is not a
// member yet (it proves the cluster's peer secret, or presents its peer
// certificate). It retries while the connection fails (the member may be
// starting), so that an error says why, not only that time ran out.
func (s *Server) askPeer(ctx context.Context, addr string, secret []byte, method string, req, resp proto.Message) error {
	creds, err := s.peerCreds(0, secret)
	if err != nil {
		return err
	}
	conn, err := transport.Dial(addr, peerDialOptions(s.cfg, creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var lastErr error
	for {
		err := conn.Invoke(ctx, method, req, resp)
		if err == nil {
			return nil
		}
		if lastErr == nil || status.Code(err) == codes.Unavailable {
			lastErr = err // a deadline after connection failures keeps their reason
		}
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			if status.Code(lastErr) == codes.Unimplemented {
				return lastErr
			}
			return errors.New(status.Convert(lastErr).Message())
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// descriptorInfos describes descriptors as ListRanges does, without what
// the replicas published.
func descriptorInfos(ds []rangedesc.Descriptor) []*synodpb.RangeInfo {
	out := make([]*synodpb.RangeInfo, 0, len(ds))
	for _, d := range ds {
		out = append(out, &synodpb.RangeInfo{Id: uint64(d.RangeID), StartKey: d.Start, EndKey: d.End, Generation: d.Generation})
	}
	return out
}

// writeJoinedIdent records the identity of a joining node, the cluster's
// peer secret (nil: none), the members it knows of (so that it can reach
// them before its first snapshot, which replaces them) and the data
// ranges' descriptors (so that it starts a replica of each before its
// first snapshot of the system range, which holds the same).
func (s *Server) writeJoinedIdent(clusterID, memberID uint64, members []*pb.Member, secret []byte, descs []rangedesc.Descriptor) (ident, error) {
	id := ident{ClusterID: clusterID, MemberID: memberID, Name: s.cfg.Name}
	b := s.db.NewBatch()
	defer b.Close()
	for _, d := range descs {
		if err := rangedesc.Put(b, d); err != nil {
			return ident{}, err
		}
	}
	for _, m := range members {
		rec := cluster.Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner}
		if err := cluster.PutMember(b, rec); err != nil {
			return ident{}, err
		}
	}
	if err := b.Set(keys.NodeIdentKey(), id.encode(), nil); err != nil {
		return ident{}, err
	}
	if err := putLayout(b); err != nil {
		return ident{}, err
	}
	if err := putPeerSecret(b, secret); err != nil {
		return ident{}, err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return ident{}, err
	}
	return id, nil
}

// dataRangesInitialized reports whether this node holds the state of every
// data range (a node that joined receives each by snapshot).
func (s *Server) dataRangesInitialized() bool {
	for _, id := range s.dataRanges() {
		if pub := s.rangePublished(id); pub == nil || !pub.Initialized {
			return false
		}
	}
	return true
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
		// The system range's configuration is the members'; every range
		// must hold data before this node may count in quorums.
		pub := s.systemPublished()
		if !pub.Initialized || pub.Lead == 0 || !s.dataRangesInitialized() {
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
