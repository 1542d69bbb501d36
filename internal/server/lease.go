package server

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/lease"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangesm"
	"github.com/synod-io/synod/internal/replica"
)

// MaxLeaseTTL is the longest TTL a lease may be granted, as in etcd.
const MaxLeaseTTL = 9_000_000_000

const (
	// leaseLoopInterval is how often the leader looks for expired leases.
	leaseLoopInterval = 100 * time.Millisecond
	// leaseRevokeRate bounds revocations per second, so that a mass expiry
	// does not flood Raft (etcd uses the same figure).
	leaseRevokeRate = 1000
	// leaseRevokeWorkers propose revocations concurrently.
	leaseRevokeWorkers = 16
)

// minLeaseTTL is the shortest TTL granted, as in etcd: one and a half
// election timeouts, rounded up to a second, so that a lease can survive a
// leader election.
func (s *Server) minLeaseTTL() int64 {
	d := s.ElectionTimeout() * 3 / 2
	return int64(math.Ceil(d.Seconds()))
}

// ElectionTimeout implements etcdapi.Backend.
func (s *Server) ElectionTimeout() time.Duration {
	return time.Duration(s.cfg.ElectionTicks) * s.cfg.TickInterval
}

// isLeader reports whether this node leads the first range.
func (s *Server) isLeader() bool { return s.isRangeLeader(keys.FirstDataRangeID) }

// isRangeLeader reports whether this node leads range id.
func (s *Server) isRangeLeader(id keys.RangeID) bool {
	pub := s.rangePublished(id)
	return pub != nil && pub.State == raft.StateLeader && pub.Lead == s.id.MemberID
}

// rangeHasLeader reports whether this node knows a leader of range id.
func (s *Server) rangeHasLeader(id keys.RangeID) bool {
	pub := s.rangePublished(id)
	return pub != nil && pub.Lead != raft.None
}

// HasLeader implements etcdapi.Backend.
func (s *Server) HasLeader() bool { return s.Published().Lead != raft.None }

// LeaseGrant grants a lease through Raft. A server-chosen ID is random; the
// rare collision is retried with another.
func (s *Server) LeaseGrant(ctx context.Context, req *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	if req.TTL > MaxLeaseTTL {
		return nil, rpctypes.ErrGRPCLeaseTTLTooLarge
	}
	ttl := max(req.TTL, s.minLeaseTTL())
	for attempt := 0; ; attempt++ {
		id := req.ID
		if id == 0 {
			id = randomLeaseID()
		}
		out, err := s.Propose(ctx, raftcmd.KindLeaseGrant, &pb.LeaseGrantRequest{ID: id, TTL: ttl})
		if req.ID == 0 && errors.Is(err, rpctypes.ErrGRPCLeaseExist) && attempt < 3 {
			continue
		}
		if err != nil {
			return nil, err
		}
		resp, ok := out.(*pb.LeaseGrantResponse)
		if !ok {
			return nil, fmt.Errorf("lease grant returned %T", out)
		}
		return resp, nil
	}
}

func randomLeaseID() int64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(fmt.Sprintf("read random lease id: %v", err)) // crypto/rand never fails on Linux
		}
		if id := int64(binary.BigEndian.Uint64(b[:]) >> 1); id != 0 {
			return id
		}
	}
}

// LeaseRevoke revokes a lease through Raft, deleting its keys.
func (s *Server) LeaseRevoke(ctx context.Context, req *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	return s.revokeLease(ctx, req.ID, 0)
}

// LeaseRenew renews a lease and returns its TTL, 0 if it does not exist. The
// leader's lessor answers; other nodes forward to it.
func (s *Server) LeaseRenew(ctx context.Context, id int64) (int64, error) {
	if err := s.WaitLeader(ctx); err != nil {
		return 0, err
	}
	resp := &pb.LeaseKeepAliveResponse{}
	err := s.viaRangeLeader(ctx, keys.FirstDataRangeID, leaseKeepAliveMethod, &pb.LeaseKeepAliveRequest{ID: id}, resp,
		func() (proto.Message, error) {
			ttl, err := s.renewLocal(ctx, id)
			return &pb.LeaseKeepAliveResponse{ID: id, TTL: ttl}, err
		})
	if err != nil {
		return 0, err
	}
	return resp.TTL, nil
}

func (s *Server) renewLocal(ctx context.Context, id int64) (int64, error) {
	term, err := s.ensurePrimary()
	if err != nil {
		return 0, err
	}
	need, wait, err := s.lessor.NeedsReset(id)
	if errors.Is(err, lease.ErrNotFound) {
		// Another member may have acknowledged the grant before this one
		// applied it: answering "not found" now would make the client give
		// up a live lease. Catch up with everything committed, then look
		// again.
		if err := s.linearize(ctx); err != nil {
			return 0, err
		}
		need, wait, err = s.lessor.NeedsReset(id)
	}
	var ttl int64
	for {
		if errors.Is(err, lease.ErrNotFound) {
			return 0, nil
		}
		if err != nil {
			return 0, notLeader(err)
		}
		if wait != nil {
			// A checkpoint of this lease is being proposed: wait for it,
			// so that the reset below follows it in the log.
			select {
			case <-wait:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			need, wait, err = s.lessor.NeedsReset(id)
			continue
		}
		if need {
			// The lease was checkpointed while its client was away: reset
			// the checkpoint first, or a failover would cut the renewed
			// lease short.
			cp := &pb.LeaseCheckpointRequest{Checkpoints: []*pb.LeaseCheckpoint{{ID: id, Remaining_TTL: 0}}}
			if _, err := s.proposeFenced(ctx, raftcmd.KindLeaseCheckpoint, cp, term); err != nil {
				return 0, err
			}
		}
		ttl, err = s.lessor.Renew(time.Now(), id)
		if !errors.Is(err, lease.ErrCheckpointPending) {
			break
		}
		// A checkpoint was handed out since NeedsReset: look again.
		need, wait, err = s.lessor.NeedsReset(id)
	}
	if errors.Is(err, lease.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, notLeader(err)
	}
	// Acknowledge only once a quorum confirms this node still leads in the
	// term its lessor serves: a leader frozen and deposed meanwhile must not
	// tell a client its lease was renewed (nobody else knows it was).
	if err := s.linearize(ctx); err != nil {
		return 0, err
	}
	if s.lessor.Term() != term || s.Published().Term != term || !s.isLeader() {
		return 0, rpctypes.ErrGRPCNotLeader
	}
	return ttl, nil
}

func notLeader(err error) error {
	if errors.Is(err, lease.ErrNotPrimary) {
		return rpctypes.ErrGRPCNotLeader
	}
	return err
}

// LeaseTimeToLive reports a lease's remaining TTL (-1 if it does not exist)
// and, on request, its keys. The leader answers; other nodes forward.
func (s *Server) LeaseTimeToLive(ctx context.Context, req *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if err := s.WaitLeader(ctx); err != nil {
		return nil, err
	}
	if !s.isLeader() {
		resp := &pb.LeaseTimeToLiveResponse{}
		err := s.viaRangeLeader(ctx, keys.FirstDataRangeID, leaseTimeToLiveMethod, req, resp, func() (proto.Message, error) {
			return s.leaseTimeToLiveLocal(ctx, req)
		})
		if err != nil {
			return nil, err
		}
		return resp, nil
	}
	return s.leaseTimeToLiveLocal(ctx, req)
}

// leaseTimeToLiveLocal answers LeaseTimeToLive as the data range's leader.
func (s *Server) leaseTimeToLiveLocal(ctx context.Context, req *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if _, err := s.ensurePrimary(); err != nil {
		return nil, err
	}
	// Keys attached by writes acknowledged before this call must show.
	if err := s.linearize(ctx); err != nil {
		return nil, err
	}
	rem, ttl, err := s.lessor.Remaining(time.Now(), req.ID)
	if errors.Is(err, lease.ErrNotFound) {
		return &pb.LeaseTimeToLiveResponse{Header: s.Header(), ID: req.ID, TTL: -1}, nil
	}
	if err != nil {
		return nil, notLeader(err)
	}
	resp := &pb.LeaseTimeToLiveResponse{Header: s.Header(), ID: req.ID, TTL: int64(rem / time.Second), GrantedTTL: ttl}
	if req.Keys {
		attached, err := lease.AttachedKeys(s.db, req.ID)
		if err != nil {
			return nil, err
		}
		resp.Keys = s.stillAttached(attached, req.ID)
	}
	return resp, nil
}

// LeaseLeases lists the leases.
func (s *Server) LeaseLeases(ctx context.Context) (*pb.LeaseLeasesResponse, error) {
	if err := s.linearize(ctx); err != nil {
		return nil, err
	}
	recs, err := lease.List(s.db)
	if err != nil {
		return nil, err
	}
	resp := &pb.LeaseLeasesResponse{Header: s.Header()}
	for _, r := range recs {
		resp.Leases = append(resp.Leases, &pb.LeaseStatus{ID: r.ID})
	}
	return resp, nil
}

// leaderConn returns the peer connection to the current leader.
func (s *Server) leaderConn() (*grpc.ClientConn, error) {
	return s.rangeLeaderConn(keys.FirstDataRangeID)
}

// rangeLeaderConn returns the peer connection to the leader of range id.
func (s *Server) rangeLeaderConn(id keys.RangeID) (*grpc.ClientConn, error) {
	var lead uint64
	if pub := s.rangePublished(id); pub != nil {
		lead = pub.Lead
	}
	if lead == raft.None {
		return nil, replica.ErrNoLeader
	}
	if lead == s.id.MemberID {
		return nil, rpctypes.ErrGRPCNotLeader // lost leadership while deciding
	}
	return s.transport.Conn(lead)
}

// ensurePrimary makes the lessor primary if this node leads and it is not
// yet, or was promoted in an earlier term (a leadership lost and regained
// leaves stale expiry times behind). It returns the lessor's term.
// Promotion comes before reading the lease table, so that a grant applied in
// between reaches the lessor through the apply hook.
func (s *Server) ensurePrimary() (uint64, error) {
	s.promoteMu.Lock()
	defer s.promoteMu.Unlock()
	pub := s.Published()
	if pub.State != raft.StateLeader || pub.Lead != s.id.MemberID {
		return 0, rpctypes.ErrGRPCNotLeader
	}
	if s.lessor.Term() == pub.Term {
		return pub.Term, nil
	}
	s.lessor.Promote(pub.Term)
	recs, err := lease.List(s.db)
	if err != nil {
		s.lessor.Demote()
		return 0, fmt.Errorf("load leases: %w", err)
	}
	s.lessor.Merge(time.Now(), recs)
	s.logger.Info("lessor promoted", "term", pub.Term, "leases", len(recs))
	return pub.Term, nil
}

// onLeaseChanges feeds applied lease changes to the lessor (which ignores
// them unless primary).
func (s *Server) onLeaseChanges(changes []rangesm.LeaseChange) {
	now := time.Now()
	for _, c := range changes {
		switch c.Kind {
		case rangesm.LeaseGranted:
			s.lessor.Granted(now, c.ID, c.TTL)
		case rangesm.LeaseRevoked:
			s.lessor.Revoked(c.ID)
		case rangesm.LeaseCheckpointed:
			s.lessor.Checkpointed(c.ID, c.RemainingMs)
		}
	}
}

// leaseLoop runs on every node; while the node leads, it revokes expired
// leases and checkpoints the remaining TTL of leases nobody renews.
func (s *Server) leaseLoop(ctx context.Context) {
	t := time.NewTicker(leaseLoopInterval)
	defer t.Stop()
	perTick := max(1, leaseRevokeRate*int(leaseLoopInterval)/int(time.Second))
	var lastCheckpoint time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.isLeader() {
			if s.lessor.Primary() {
				s.lessor.Demote()
				s.logger.Info("lessor demoted")
			}
			continue
		}
		term, err := s.ensurePrimary()
		if err != nil {
			continue
		}
		now := time.Now()
		for _, id := range s.lessor.Expired(now, perTick) {
			select {
			case s.revokeQ <- expiry{id: id, term: term}:
			default:
				s.lessor.RevokeFailed(id) // workers busy: next round
			}
		}
		if now.Sub(lastCheckpoint) >= s.cfg.LeaseCheckpointInterval {
			lastCheckpoint = now
			s.tellRevokedLeases()
			if cps := s.lessor.Checkpoints(now); len(cps) > 0 {
				s.proposeCheckpoints(ctx, cps, term)
			}
		}
	}
}

// proposeCheckpoints records remaining TTLs, fenced to the lessor's term.
func (s *Server) proposeCheckpoints(ctx context.Context, cps []lease.Checkpoint, term uint64) {
	req := &pb.LeaseCheckpointRequest{}
	for _, cp := range cps {
		req.Checkpoints = append(req.Checkpoints, &pb.LeaseCheckpoint{ID: cp.ID, Remaining_TTL: cp.RemainingMs})
	}
	ctx, cancel := context.WithTimeout(ctx, s.ElectionTimeout())
	defer cancel()
	_, err := s.proposeFenced(ctx, raftcmd.KindLeaseCheckpoint, req, term)
	// Renewals of these leases wait for this outcome (lease.NeedsReset).
	s.lessor.CheckpointsSettled(cps, err == nil)
	if err != nil && ctx.Err() == nil {
		s.logger.Warn("lease checkpoint failed", "leases", len(cps), "err", err)
		return
	}
	s.logger.Debug("lease checkpoints recorded", "leases", len(cps), "err", err)
}

// expiry is a lease the lessor found expired, in the term it serves.
type expiry struct {
	id   int64
	term uint64
}

// revokeWorker proposes the revocation of expired leases. Each revocation is
// fenced to the term in which the lessor judged the lease expired: if this
// node was deposed meanwhile (frozen, partitioned), the revocation cannot
// take effect, since the real leader may have renewed the lease all along.
func (s *Server) revokeWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-s.revokeQ:
			_, err := s.revokeLease(ctx, e.id, e.term)
			switch {
			case err == nil:
				s.logger.Debug("lease expired", "lease", fmt.Sprintf("%x", e.id))
			case errors.Is(err, rpctypes.ErrGRPCLeaseNotFound):
				s.lessor.Revoked(e.id)
			case errors.Is(err, replica.ErrStaleLeader):
				s.logger.Info("expiry decided by a former leadership not applied", "lease", fmt.Sprintf("%x", e.id), "term", e.term)
			case ctx.Err() == nil:
				s.lessor.RevokeFailed(e.id)
				s.logger.Warn("revoke of expired lease failed", "lease", fmt.Sprintf("%x", e.id), "err", err)
			}
		}
	}
}

// Lease forwarding: the peer service through which other nodes reach the
// leader's lessor.

const (
	leaseServiceName      = "synod.lease.v1.Leader"
	leaseKeepAliveMethod  = "/" + leaseServiceName + "/KeepAlive"
	leaseTimeToLiveMethod = "/" + leaseServiceName + "/TimeToLive"
)

type leaseForwarding interface{}

func (s *Server) registerLeaseForwarding(srv *grpc.Server) {
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: leaseServiceName,
		HandlerType: (*leaseForwarding)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "KeepAlive", Handler: forwarded(leaderOnly(keys.FirstDataRangeID, func(s *Server, ctx context.Context, req *pb.LeaseKeepAliveRequest) (*pb.LeaseKeepAliveResponse, error) {
				ttl, err := s.renewLocal(ctx, req.ID)
				if err != nil {
					return nil, err
				}
				return &pb.LeaseKeepAliveResponse{ID: req.ID, TTL: ttl}, nil
			}))},
			{MethodName: "TimeToLive", Handler: forwarded(leaderOnly(keys.FirstDataRangeID, (*Server).LeaseTimeToLive))},
		},
		Metadata: "synod/lease.proto",
	}, s)
}

// stillAttached returns the keys of attached (the lease table's record of
// lease id's keys) that are attached to it: the first range keeps the
// record exact for its own keys, but a key of another range deleted or put
// without the lease stays in it until the lease is revoked (its range
// cannot change the table in the same command); this node's replica of the
// key's range says.
func (s *Server) stillAttached(attached [][]byte, id int64) [][]byte {
	set := s.descs.Load()
	out := attached[:0]
	for _, k := range attached {
		d := set.Lookup(k)
		if d.RangeID != keys.FirstDataRangeID {
			pub := s.rangePublished(d.RangeID)
			if pub == nil {
				continue
			}
			x := datarange.Index(pub.Derived)
			if x == nil {
				continue
			}
			if e, ok := x.Get(k); !ok || e.Lease != id {
				continue
			}
		}
		out = append(out, k)
	}
	return out
}
