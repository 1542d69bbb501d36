package server

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3"
	raftpb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cockroachdb/pebble/v2"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/replica"
)

// ForceMetadataKey is the gRPC metadata key that overrides the quorum safety
// checks of membership changes ("true"). etcd's API has no field for it;
// `synod member remove --force` sets it.
const ForceMetadataKey = "synod-force"

// maxLearners bounds the learners of a cluster, as etcd does by default.
const maxLearners = 1

// learnerReadyFraction is how much of the leader's log a learner must hold
// to be promoted (etcd uses the same 90%).
const learnerReadyFraction = 0.9

// ErrMemberRemoved is reported when this member learns that it was removed.
var ErrMemberRemoved = errors.New("this member was removed from the cluster")

func forced(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return false
	}
	v := md.Get(ForceMetadataKey)
	return len(v) > 0 && v[0] == "true"
}

func quorum(n int) int { return n/2 + 1 }

// memberToPB converts a member record to etcd's wire type.
func memberToPB(m cluster.Member) *pb.Member {
	return &pb.Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner}
}

func (s *Server) membersPB() ([]*pb.Member, error) {
	ms, err := cluster.ListMembers(s.db)
	if err != nil {
		return nil, err
	}
	out := make([]*pb.Member, len(ms))
	for i, m := range ms {
		out[i] = memberToPB(m)
	}
	return out, nil
}

// raftStatus returns the Raft status of the system range, whose
// configuration the members follow (with the progress of followers when
// this node leads).
func (s *Server) raftStatus(ctx context.Context) (raft.Status, error) {
	return s.rangeRaftStatus(ctx, keys.SystemRangeID)
}

// rangeRaftStatus returns the Raft status of this node's replica of range id.
func (s *Server) rangeRaftStatus(ctx context.Context, id keys.RangeID) (raft.Status, error) {
	var st raft.Status
	err := s.store.Do(ctx, id, func(r *replica.Replica) { st = r.Status() })
	return st, err
}

// PeerActive reports whether this node heard from a member within half an
// election timeout (itself included). Raft's own activity flags are reset
// only once per election timeout, so a voter that just died would still
// count as active; the transport hears every heartbeat.
func (s *Server) PeerActive(id uint64) bool {
	return id == s.id.MemberID || time.Since(s.PeerLastHeard(id)) < s.ElectionTimeout()/2
}

// PeerLastHeard returns when this node last received a frame from a member
// (zero: never).
func (s *Server) PeerLastHeard(id uint64) time.Time {
	return s.transport.LastHeard(id)
}

// checkQuorumAfter refuses a change after which the active voters would not
// form a quorum of the new voter set. A voter is given up to an election
// timeout to be heard from: a node that just became leader (after a
// leadership transfer, say) has not heard every follower yet, and a busy
// one may miss half a timeout's heartbeats without being down.
func (s *Server) checkQuorumAfter(ctx context.Context, voters []uint64) error {
	deadline := time.Now().Add(s.ElectionTimeout())
	for {
		n := 0
		for _, id := range voters {
			if s.PeerActive(id) {
				n++
			}
		}
		if n >= quorum(len(voters)) {
			return nil
		}
		if time.Now().After(deadline) {
			s.logger.Warn("refusing a membership change that would lose quorum",
				"voters", len(voters), "active", n, "quorum", quorum(len(voters)))
			return rpctypes.ErrGRPCMemberNotEnoughStarted
		}
		t := time.NewTimer(s.ElectionTimeout() / 20)
		select {
		case <-ctx.Done():
			t.Stop()
			return status.FromContextError(ctx.Err()).Err()
		case <-t.C:
		}
	}
}

// newMemberID derives the ID of an added member from its peer URLs, the
// cluster token and the time, as etcd does, avoiding IDs in use or removed.
func (s *Server) newMemberID(urls []string) (uint64, error) {
	for attempt := 0; ; attempt++ {
		h := sha256.New()
		fmt.Fprintf(h, "synod-added-member\x00%s\x00%s\x00%d\x00%d", strings.Join(urls, "\x00"), s.cfg.ClusterToken, time.Now().UnixNano(), attempt)
		id := binary.BigEndian.Uint64(h.Sum(nil))
		if id == 0 {
			continue
		}
		_, exists, err := cluster.GetMember(s.db, id)
		if err != nil {
			return 0, err
		}
		removed, err := cluster.IsRemoved(s.db, id)
		if err != nil {
			return 0, err
		}
		if !exists && !removed {
			return id, nil
		}
	}
}

// normalizeURLs checks and normalizes the peer URLs of a member add or
// update (cluster.NormalizeURL). A bad one is refused with etcd's error
// (InvalidArgument, "given member URLs are invalid"), which clientv3 turns
// into rpctypes.ErrMemberBadURLs.
func normalizeURLs(urls []string) ([]string, error) {
	if len(urls) == 0 {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	out := make([]string, len(urls))
	for i, u := range urls {
		n, err := cluster.NormalizeURL(u)
		if err != nil {
			return nil, rpctypes.ErrGRPCMemberBadURLs
		}
		out[i] = n
	}
	sort.Strings(out)
	return out, nil
}

// proposeConfChange replicates one change of the Raft configuration, with
// the member record it concerns, to every range, and waits until each is
// applied here. The system range's configuration and member records are
// the cluster's:
//
//   - a member is added (or promoted) in the system range first, then in
//     each data range; a data range the change does not reach in time is
//     brought in step by the system range's leader (reconcileConfig);
//   - a member is removed from every data range first, and from the system
//     range (which marks it removed, and stops it) only once they all
//     have: otherwise a data range could keep a removed, stopped member as a
//     voter and, short of it, a quorum, with no leader left to repair it.
func (s *Server) proposeConfChange(ctx context.Context, typ raftpb.ConfChangeType, rec cluster.Member) error {
	if typ == raftpb.ConfChangeRemoveNode {
		// Until no data range holds it: a range split off one before its
		// removal there copied its configuration, and this node knows the
		// new range once it applied the removal after the split.
		todo := s.dataRanges()
		for done := map[keys.RangeID]bool{}; len(todo) > 0; {
			err := eachRange(todo, func(id keys.RangeID) error {
				if err := s.proposeRangeConfChange(ctx, id, typ, rec); err != nil {
					return fmt.Errorf("remove member %x from range %d: %w", rec.ID, id, err)
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, id := range todo {
				done[id] = true
			}
			todo = nil
			for _, id := range s.dataRanges() {
				if !done[id] && s.rangeHolds(id, rec.ID) {
					todo = append(todo, id)
				}
			}
		}
		return s.proposeRangeConfChange(ctx, keys.SystemRangeID, typ, rec)
	}
	if err := s.proposeRangeConfChange(ctx, keys.SystemRangeID, typ, rec); err != nil {
		return err
	}
	_ = eachRange(s.dataRanges(), func(id keys.RangeID) error {
		if !s.isRangeLeader(id) {
			return nil // rangesLoop makes it once this node leads the range
		}
		if typ == raftpb.ConfChangeAddNode {
			// A promotion: only once the learner holds this range's log too
			// (else rangesLoop makes it later).
			if ready, err := s.learnerReady(ctx, id, rec.ID); err != nil || !ready {
				return nil
			}
		}
		if err := s.proposeRangeConfChange(ctx, id, typ, rec); err != nil {
			s.logger.Warn("configuration change of a data range not made: the system range's leader will make it",
				"range", uint64(id), "member", fmt.Sprintf("%x", rec.ID), "err", err)
		}
		return nil
	})
	return nil
}

// rangeChangeWorkers bounds the data ranges a membership change is made in
// at once: one after the other, a removal from 88 ranges outlasted
// etcdctl's 5 s timeout.
const rangeChangeWorkers = 16

// eachRange calls fn for every range of ids, up to rangeChangeWorkers at
// once, and returns the first error.
func eachRange(ids []keys.RangeID, fn func(keys.RangeID) error) error {
	errs := make([]error, len(ids))
	sem := make(chan struct{}, rangeChangeWorkers)
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = fn(id)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// rangeHolds reports whether this node's replica of range id has member
// in its configuration.
func (s *Server) rangeHolds(id keys.RangeID, member uint64) bool {
	pub := s.rangePublished(id)
	return pub != nil && (slices.Contains(pub.Voters, member) || slices.Contains(pub.Learners, member))
}

// proposeRangeConfChange replicates one change of the Raft configuration of
// range id and waits until it is applied here.
func (s *Server) proposeRangeConfChange(ctx context.Context, id keys.RangeID, typ raftpb.ConfChangeType, rec cluster.Member) error {
	reqID := s.reqIDs.Add(1)
	cmd := raftcmd.Command{
		RangeID: id, Proposer: s.id.MemberID, RequestID: reqID,
		Kind: raftcmd.KindMemberChange, Payload: rec.Encode(),
	}
	cc := &raftpb.ConfChangeV2{
		Changes: []*raftpb.ConfChangeSingle{{Type: typ.Enum(), NodeId: proto.Uint64(rec.ID)}},
		Context: cmd.Encode(nil),
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	for {
		p := replica.NewProposal(reqID, nil)
		if err := s.store.Do(ctx, id, func(r *replica.Replica) { r.ProposeConfChange(p, cc) }); err != nil {
			return err
		}
		var err error
		select {
		case res := <-p.Done():
			err = res.Err
		case <-ctx.Done():
			return ctx.Err()
		}
		if !errors.Is(err, raft.ErrProposalDropped) {
			return err
		}
		if !s.isRangeLeader(keys.SystemRangeID) {
			// Membership changes are the system range's leader's, and this
			// node lost that leadership: the caller (viaLeader) goes on at
			// the next leader.
			return rpctypes.ErrGRPCNotLeader
		}
		// Refused without being appended: the range's leadership is being
		// handed over (it follows the system range's), or a change is
		// pending there. Try again shortly, until the request's deadline.
		select {
		case <-ctx.Done():
			return err
		case <-time.After(s.cfg.TickInterval):
		}
	}
}

// viaLeader runs an operation of the system range's leader (a membership
// change): viaRangeLeader.
func (s *Server) viaLeader(ctx context.Context, method string, req, resp proto.Message, local func() (proto.Message, error)) error {
	return s.viaRangeLeader(ctx, keys.SystemRangeID, method, req, resp, local)
}

// viaRangeLeader runs an operation of range id's leader: here if this node
// leads, else on the leader's peer service. If the leader steps down meanwhile (it hands
// leadership over to remove itself), the request goes to the next leader:
// never through two hops, whose outer connection a membership change may cut.
func (s *Server) viaRangeLeader(ctx context.Context, id keys.RangeID, method string, req, resp proto.Message, local func() (proto.Message, error)) error {
	leadOf := func() uint64 {
		if pub := s.rangePublished(id); pub != nil {
			return pub.Lead
		}
		return 0
	}
	for attempt := 0; ; attempt++ {
		lead := leadOf()
		var err error
		if s.isRangeLeader(id) {
			var out proto.Message
			if out, err = local(); err == nil {
				proto.Merge(resp, out)
				return nil
			}
		} else {
			err = s.forwardToLeader(ctx, id, method, req, resp)
		}
		if !(isNotLeader(err) || isNoLeader(err)) || attempt >= 4 {
			return err
		}
		// Wait for the next leader, then go there.
		deadline := time.Now().Add(2 * s.ElectionTimeout())
		for leadOf() == lead && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(s.cfg.TickInterval):
			}
		}
	}
}

var (
	notLeaderMessage = status.Convert(rpctypes.ErrGRPCNotLeader).Message()
	noLeaderMessage  = status.Convert(rpctypes.ErrGRPCNoLeader).Message()
)

// isNoLeader reports whether err says the range has no leader (yet: a
// range a split just made elects its first).
func isNoLeader(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Message() == noLeaderMessage
}

func isNotLeader(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Message() == notLeaderMessage
}

// forwardToLeader sends a membership request to the leader's peer service,
// keeping the force flag. A failure of the forwarding itself is reported as
// a timeout: a context code would make etcd clients retry a change that may
// have been made.
func (s *Server) forwardToLeader(ctx context.Context, id keys.RangeID, method string, req, resp proto.Message) error {
	if err := s.waitRangeLeader(ctx, id); err != nil {
		return err
	}
	conn, err := s.rangeLeaderConn(id)
	if err != nil {
		return err
	}
	if forced(ctx) {
		ctx = metadata.AppendToOutgoingContext(ctx, ForceMetadataKey, "true")
	}
	err = conn.Invoke(ctx, method, req, resp)
	if c := status.Code(err); (c == codes.Canceled || c == codes.DeadlineExceeded) && ctx.Err() == nil {
		return rpctypes.ErrGRPCTimeout
	}
	return err
}

// MemberAdd adds a member, as a voter or a learner.
func (s *Server) MemberAdd(ctx context.Context, req *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	// Checked here too, so that bad input fails without a leader's help.
	if _, err := normalizeURLs(req.PeerURLs); err != nil {
		return nil, err
	}
	resp := &pb.MemberAddResponse{}
	err := s.viaLeader(ctx, clusterMemberAddMethod, req, resp, func() (proto.Message, error) { return s.memberAdd(ctx, req) })
	return resp, err
}

func (s *Server) memberAdd(ctx context.Context, req *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	s.confMu.Lock()
	defer s.confMu.Unlock()
	urls, err := normalizeURLs(req.PeerURLs)
	if err != nil {
		return nil, err
	}
	members, err := cluster.ListMembers(s.db)
	if err != nil {
		return nil, err
	}
	if peerURLTaken(members, urls, 0) {
		return nil, rpctypes.ErrGRPCPeerURLExist
	}
	learners := 0
	for _, m := range members {
		if m.IsLearner {
			learners++
		}
	}
	st, err := s.raftStatus(ctx)
	if err != nil {
		return nil, err
	}
	typ := raftpb.ConfChangeAddNode
	if req.IsLearner {
		typ = raftpb.ConfChangeAddLearnerNode
		if learners >= maxLearners {
			return nil, rpctypes.ErrGRPCTooManyLearners
		}
	} else if !forced(ctx) {
		// The new voter is not running yet: the others must still be a
		// quorum of the larger group.
		voters := append(voterIDs(st), 0) // 0 stands for the new, not yet running, voter
		if err := s.checkQuorumAfter(ctx, voters); err != nil {
			return nil, err
		}
	}
	id, err := s.newMemberID(urls)
	if err != nil {
		return nil, err
	}
	rec := cluster.Member{ID: id, PeerURLs: urls, IsLearner: req.IsLearner}
	if err := s.proposeConfChange(ctx, typ, rec); err != nil {
		return nil, err
	}
	s.logger.Info("member added", "id", fmt.Sprintf("%x", id), "peer-urls", urls, "learner", req.IsLearner)
	all, err := s.membersPB()
	if err != nil {
		return nil, err
	}
	return &pb.MemberAddResponse{Header: s.Header(), Member: memberToPB(rec), Members: all}, nil
}

// voterIDs returns the voters of a Raft status.
func voterIDs(st raft.Status) []uint64 {
	var ids []uint64
	for id := range st.Config.Voters.IDs() {
		ids = append(ids, id)
	}
	return ids
}

// MemberRemove removes a member. Removing the leader first hands leadership
// to the most up-to-date other voter, so the cluster does not wait for an
// election.
func (s *Server) MemberRemove(ctx context.Context, req *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	resp := &pb.MemberRemoveResponse{}
	err := s.viaLeader(ctx, clusterMemberRemoveMethod, req, resp, func() (proto.Message, error) { return s.memberRemove(ctx, req) })
	return resp, err
}

func (s *Server) memberRemove(ctx context.Context, req *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	if req.ID == s.id.MemberID {
		target, err := s.transferLeadership(ctx, 0)
		if err != nil {
			return nil, fmt.Errorf("hand leadership over before removing the leader: %w", err)
		}
		s.logger.Info("handed leadership over before removing myself", "to", fmt.Sprintf("%x", target))
		return nil, rpctypes.ErrGRPCNotLeader // viaLeader goes on at the new leader
	}
	s.confMu.Lock()
	defer s.confMu.Unlock()
	m, ok, err := cluster.GetMember(s.db, req.ID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, rpctypes.ErrGRPCMemberNotFound
	}
	st, err := s.raftStatus(ctx)
	if err != nil {
		return nil, err
	}
	if _, voter := st.Config.Voters.IDs()[req.ID]; voter && !forced(ctx) {
		rest := slices.DeleteFunc(voterIDs(st), func(id uint64) bool { return id == req.ID })
		if err := s.checkQuorumAfter(ctx, rest); err != nil {
			return nil, err
		}
	}
	if err := s.proposeConfChange(ctx, raftpb.ConfChangeRemoveNode, cluster.Member{ID: m.ID}); err != nil {
		return nil, err
	}
	s.logger.Info("member removed", "id", fmt.Sprintf("%x", req.ID), "name", m.Name)
	all, err := s.membersPB()
	if err != nil {
		return nil, err
	}
	return &pb.MemberRemoveResponse{Header: s.Header(), Members: all}, nil
}

// MemberPromote makes a learner a voter once it holds nearly all of the log.
func (s *Server) MemberPromote(ctx context.Context, req *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	resp := &pb.MemberPromoteResponse{}
	err := s.viaLeader(ctx, clusterMemberPromoteMethod, req, resp, func() (proto.Message, error) { return s.memberPromote(ctx, req) })
	return resp, err
}

func (s *Server) memberPromote(ctx context.Context, req *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	s.confMu.Lock()
	defer s.confMu.Unlock()
	m, ok, err := cluster.GetMember(s.db, req.ID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, rpctypes.ErrGRPCMemberNotFound
	}
	st, err := s.raftStatus(ctx)
	if err != nil {
		return nil, err
	}
	if _, learner := st.Config.Learners[req.ID]; !learner {
		return nil, rpctypes.ErrGRPCMemberNotLearner
	}
	if !caughtUp(st, s.id.MemberID, req.ID) {
		return nil, rpctypes.ErrGRPCLearnerNotReady
	}
	m.IsLearner = false
	if err := s.proposeConfChange(ctx, raftpb.ConfChangeAddNode, m); err != nil {
		return nil, err
	}
	s.logger.Info("learner promoted", "id", fmt.Sprintf("%x", req.ID), "name", m.Name)
	all, err := s.membersPB()
	if err != nil {
		return nil, err
	}
	return &pb.MemberPromoteResponse{Header: s.Header(), Members: all}, nil
}

// MemberUpdate changes a member's peer URLs.
func (s *Server) MemberUpdate(ctx context.Context, req *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	urls, err := normalizeURLs(req.PeerURLs)
	if err != nil {
		return nil, err
	}
	members, err := cluster.ListMembers(s.db)
	if err != nil {
		return nil, err
	}
	if peerURLTaken(members, urls, req.ID) {
		return nil, rpctypes.ErrGRPCPeerURLExist
	}
	rec := cluster.Member{ID: req.ID, PeerURLs: urls}
	if _, err := s.proposeRaw(ctx, raftcmd.KindMemberUpdate, rec.Encode()); err != nil {
		return nil, err
	}
	all, err := s.membersPB()
	if err != nil {
		return nil, err
	}
	return &pb.MemberUpdateResponse{Header: s.Header(), Members: all}, nil
}

// MoveLeader hands leadership to another voter.
func (s *Server) MoveLeader(ctx context.Context, req *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	resp := &pb.MoveLeaderResponse{}
	err := s.viaLeader(ctx, clusterMoveLeaderMethod, req, resp, func() (proto.Message, error) { return s.moveLeader(ctx, req) })
	return resp, err
}

func (s *Server) moveLeader(ctx context.Context, req *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	if req.TargetID == s.id.MemberID {
		return &pb.MoveLeaderResponse{Header: s.Header()}, nil
	}
	if _, err := s.transferLeadership(ctx, req.TargetID); err != nil {
		return nil, err
	}
	return &pb.MoveLeaderResponse{Header: s.Header()}, nil
}

// transferLeadership hands leadership to target (0: the voter with the
// longest log) and waits until it leads.
func (s *Server) transferLeadership(ctx context.Context, target uint64) (uint64, error) {
	st, err := s.raftStatus(ctx)
	if err != nil {
		return 0, err
	}
	if target == 0 {
		var best uint64
		for id := range st.Config.Voters.IDs() {
			if id == s.id.MemberID {
				continue
			}
			if pr, ok := st.Progress[id]; ok && (best == 0 || pr.Match > st.Progress[best].Match) {
				best = id
			}
		}
		if best == 0 {
			return 0, rpctypes.ErrGRPCBadLeaderTransferee
		}
		target = best
	} else if _, voter := st.Config.Voters.IDs()[target]; !voter {
		return 0, rpctypes.ErrGRPCBadLeaderTransferee
	}
	// Every range: the data ranges' leadership follows the system range's
	// (followSystemLeader) anyway, but moving them now saves an election
	// timeout.
	transfer := func() error {
		for _, id := range s.allRanges() {
			if err := s.store.Do(ctx, id, func(r *replica.Replica) { r.TransferLeader(target) }); err != nil {
				return err
			}
		}
		return nil
	}
	start := time.Now()
	deadline := start.Add(max(4*s.ElectionTimeout(), s.cfg.RequestTimeout))
	s.handingOver.Store(deadline.UnixNano())
	defer s.handingOver.Store(0)
	if err := transfer(); err != nil {
		return 0, err
	}
	// Raft gives a transfer one election timeout; a loaded target may need
	// a few, so ask again (while this node still leads) until the request
	// timeout.
	asked := start
	for time.Now().Before(deadline) {
		lead := s.systemPublished().Lead
		if lead == target {
			return target, nil
		}
		if lead == s.id.MemberID && time.Since(asked) > 2*s.ElectionTimeout() {
			asked = time.Now()
			if err := transfer(); err != nil {
				return 0, err
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(s.cfg.TickInterval):
		}
	}
	return 0, rpctypes.ErrGRPCTimeout
}

// Cluster forwarding: the peer service through which other nodes reach the
// leader for membership changes.

const (
	clusterServiceName         = "synod.cluster.v1.Leader"
	clusterMemberAddMethod     = "/" + clusterServiceName + "/MemberAdd"
	clusterMemberRemoveMethod  = "/" + clusterServiceName + "/MemberRemove"
	clusterMemberPromoteMethod = "/" + clusterServiceName + "/MemberPromote"
	clusterMoveLeaderMethod    = "/" + clusterServiceName + "/MoveLeader"
	clusterMembersMethod       = "/" + clusterServiceName + "/Members"
	clusterStatusMethod        = "/" + clusterServiceName + "/Status"
	clusterRangesMethod        = "/" + clusterServiceName + "/Ranges"
)

type clusterForwarding interface{}

// forwarded is the handler of one forwarded call: it decodes a request of
// type Req and answers it with call.
func forwarded[Req any, PReq interface {
	*Req
	proto.Message
}, Resp proto.Message](call func(s *Server, ctx context.Context, req PReq) (Resp, error)) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		req := PReq(new(Req))
		if err := dec(req); err != nil {
			return nil, err
		}
		resp, err := call(srv.(*Server), ctx, req)
		return resp, peerError(err)
	}
}

// peerError gives an error of a forwarded call the gRPC status the caller,
// and its client after it, expects (a replica's own errors have none).
func peerError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, replica.ErrNoLeader):
		return rpctypes.ErrGRPCNoLeader
	case errors.Is(err, replica.ErrNotLeader), errors.Is(err, replica.ErrStaleLeader):
		return rpctypes.ErrGRPCNotLeader
	case errors.Is(err, replica.ErrDropped):
		return rpctypes.ErrGRPCRequestTooManyRequests
	case errors.Is(err, context.DeadlineExceeded):
		return rpctypes.ErrGRPCTimeout
	}
	return err
}

// leaderOnly wraps a call forwarded to this node as the leader of range id
// (a membership change: the system range; a lease renewal: the data range).
// A node that is no longer the leader refuses it (the caller retries at the
// new leader) rather than forwarding a second time.
func leaderOnly[Req, Resp any](id keys.RangeID, call func(s *Server, ctx context.Context, req Req) (Resp, error)) func(*Server, context.Context, Req) (Resp, error) {
	return func(s *Server, ctx context.Context, req Req) (Resp, error) {
		if !s.isRangeLeader(id) {
			var zero Resp
			return zero, rpctypes.ErrGRPCNotLeader
		}
		return call(s, ctx, req)
	}
}

func (s *Server) registerClusterForwarding(srv *grpc.Server) {
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: clusterServiceName,
		HandlerType: (*clusterForwarding)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "MemberAdd", Handler: forwarded(leaderOnly(keys.SystemRangeID, (*Server).memberAdd))},
			{MethodName: "MemberRemove", Handler: forwarded(leaderOnly(keys.SystemRangeID, (*Server).memberRemove))},
			{MethodName: "MemberPromote", Handler: forwarded(leaderOnly(keys.SystemRangeID, (*Server).memberPromote))},
			{MethodName: "MoveLeader", Handler: forwarded(leaderOnly(keys.SystemRangeID, (*Server).moveLeader))},
			// Members answers a node that starts with --initial-cluster-state
			// existing and needs its cluster and member IDs.
			{MethodName: "Members", Handler: forwarded(func(s *Server, _ context.Context, _ *pb.MemberListRequest) (*pb.MemberListResponse, error) {
				ms, err := s.membersPB()
				if err != nil {
					return nil, err
				}
				return &pb.MemberListResponse{Header: s.Header(), Members: ms}, nil
			})},
			// Status answers the web console's overview on another member.
			{MethodName: "Status", Handler: forwarded(peerStatus)},
			// Ranges answers a joining node, which must know the data
			// ranges before it starts their replicas.
			{MethodName: "Ranges", Handler: forwarded(func(s *Server, _ context.Context, _ *synodpb.ListRangesRequest) (*synodpb.ListRangesResponse, error) {
				return &synodpb.ListRangesResponse{ClusterId: s.id.ClusterID, MemberId: s.id.MemberID, Ranges: descriptorInfos(s.descs.Load().All())}, nil
			})},
		},
		Metadata: "synod/cluster.proto",
	}, s)
}

// onConfChange keeps the transport's peers in step with the members, and
// notices this member's own removal.
func (s *Server) onConfChange() {
	if err := s.refreshPeers(); err != nil {
		s.logger.Error("refresh peers after a membership change", "err", err)
	}
	if err := s.loadRemoved(); err != nil {
		s.logger.Error("load removed members", "err", err)
	}
	if s.isRemoved(s.id.MemberID) {
		s.memberRemoved()
	}
}

// loadRemoved refreshes the set of removed members the transport consults
// for every frame it receives.
func (s *Server) loadRemoved() error {
	set := map[uint64]bool{}
	span := keys.RemovedMemberSpan()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: span.Start, UpperBound: span.End})
	if err != nil {
		return err
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		set[binary.BigEndian.Uint64(k[len(k)-8:])] = true
	}
	s.removed.Store(&set)
	return it.Error()
}

// isRemoved reports whether a member was removed from the cluster.
func (s *Server) isRemoved(id uint64) bool {
	set := s.removed.Load()
	return set != nil && (*set)[id]
}

// memberRemoved stops this member for good: it records locally that it was
// removed (so that a restart with this data refuses to run), stops serving
// clients, and reports ErrMemberRemoved on Fatal.
func (s *Server) memberRemoved() {
	s.removedOnce.Do(func() {
		s.logger.Error("this member was removed from the cluster; stopping", "cluster", fmt.Sprintf("%x", s.id.ClusterID))
		if err := s.db.Set(keys.NodeRemovedKey(), nil, nil); err != nil {
			s.logger.Error("record removal", "err", err)
		}
		s.onFatal(ErrMemberRemoved)
		s.goBackground(func(context.Context) { s.stopClientAPI() })
	})
}

// checkNotRemoved refuses to start a member that was removed.
func (s *Server) checkNotRemoved() error {
	_, closer, err := s.db.Get(keys.NodeRemovedKey())
	removed := err == nil
	if closer != nil {
		closer.Close()
	}
	if !removed {
		if removed, err = cluster.IsRemoved(s.db, s.id.MemberID); err != nil {
			return err
		}
	}
	if removed {
		return fmt.Errorf("member %x was removed from cluster %x: its data cannot rejoin; "+
			"remove the data dir %s and add the node again (synod start --join)", s.id.MemberID, s.id.ClusterID, s.cfg.DataDir)
	}
	return nil
}

// peerURLTaken reports whether a member other than except (0: none) already
// uses one of urls.
func peerURLTaken(members []cluster.Member, urls []string, except uint64) bool {
	for _, m := range members {
		if m.ID != except && slices.ContainsFunc(m.PeerURLs, func(u string) bool { return slices.Contains(urls, u) }) {
			return true
		}
	}
	return false
}
