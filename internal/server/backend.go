package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/etcdapi"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/replica"
)

// The server is the backend of the etcd services.
var _ etcdapi.Backend = (*Server)(nil)

// APIVersion is the etcd API version Synod serves, reported by Status so that
// etcd clients which check versions accept it.
const APIVersion = "3.6.0"

// Header implements etcdapi.Backend.
func (s *Server) Header() *pb.ResponseHeader {
	return &pb.ResponseHeader{
		ClusterId: s.id.ClusterID,
		MemberId:  s.id.MemberID,
		RaftTerm:  s.Published().Term,
	}
}

// revisionHeader returns Header with the current revision, as etcd's
// header of the responses that name no revision of their own.
func (s *Server) revisionHeader() *pb.ResponseHeader {
	h := s.Header()
	h.Revision = s.Published().KV.Revision
	return h
}

// Propose implements etcdapi.Backend.
func (s *Server) Propose(ctx context.Context, kind raftcmd.Kind, req proto.Message) (any, error) {
	payload, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode %s request: %w", kind, err)
	}
	return s.propose(ctx, kind, payload, 0, quotaCost(req))
}

// proposeFenced is Propose for a decision this node takes as the leader of
// term: the command applies only if it is appended in that term.
func (s *Server) proposeFenced(ctx context.Context, kind raftcmd.Kind, req proto.Message, term uint64) (any, error) {
	payload, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode %s request: %w", kind, err)
	}
	return s.propose(ctx, kind, payload, term, 0)
}

// checkWritable refuses early what the replica would refuse: writes while
// the node has no data (joining), and requests that add data (a quota cost)
// while a NOSPACE alarm is raised.
func (s *Server) checkWritable(cost int64) error {
	pub := s.Published()
	if !pub.Initialized {
		return errJoining
	}
	if pub.NoSpace && cost > 0 {
		return rpctypes.ErrGRPCNoSpace
	}
	return nil
}

// proposeRaw replicates one command of the first range and waits for its
// result on this node.
func (s *Server) proposeRaw(ctx context.Context, kind raftcmd.Kind, payload []byte) (any, error) {
	return s.propose(ctx, kind, payload, 0, 0)
}

// propose replicates a command; cost is what it may add to the replicated
// state (quotaCost), checked against the storage quota.
func (s *Server) propose(ctx context.Context, kind raftcmd.Kind, payload []byte, term uint64, cost int64) (any, error) {
	if len(payload) > s.cfg.MaxRequestBytes {
		return nil, etcdapi.ErrTooLarge
	}
	if err := s.checkWritable(cost); err != nil {
		if !errors.Is(err, rpctypes.ErrGRPCNoSpace) {
			return nil, err
		}
		// This node may not have applied a disarm committed elsewhere
		// before the request: refuse only if it holds once caught up.
		if lerr := s.linearize(ctx); lerr != nil {
			return nil, lerr
		}
		if err := s.checkWritable(cost); err != nil {
			return nil, err
		}
	}
	if err := s.checkQuota(cost); err != nil {
		return nil, err
	}
	id := s.reqIDs.Add(1)
	cmd := raftcmd.Command{
		RangeID:   keys.FirstRangeID,
		Proposer:  s.id.MemberID,
		RequestID: id,
		Kind:      kind,
		Payload:   payload,
		Term:      term,
	}
	if f, ok := auth.FenceFromContext(ctx); ok {
		// How the client request was authorized, for apply to check that
		// it still holds (see raftcmd.Command).
		if f.User != "" {
			cmd.AuthUser, cmd.AuthRevision = f.User, f.Revision
		} else {
			cmd.AuthNoLogin = true
		}
	}
	data := cmd.Encode(nil)
	timeout := s.timeouts.After(s.cfg.RequestTimeout)
	var leaderDeadline <-chan struct{}
	for {
		res, err := s.store.Propose(ctx, keys.FirstRangeID, replica.NewProposal(id, data), timeout)
		if err == nil && errors.Is(res.Err, replica.ErrNoLeader) {
			// Raft refused the command without appending it anywhere: it
			// may be proposed again, with the same request ID, once a
			// leader is known.
			if leaderDeadline == nil {
				leaderDeadline = s.timeouts.After(s.leaderWait())
			}
			if err = s.awaitLeader(ctx, leaderDeadline, timeout); err == nil {
				continue
			}
		}
		if err != nil {
			s.metrics.ProposalsFailed.Inc()
			return nil, err
		}
		return res.Resp, res.Err
	}
}

// linearize waits until this node has applied everything committed before
// the call. Without a known leader it waits for one (awaitLeader).
func (s *Server) linearize(ctx context.Context) error {
	timeout := s.timeouts.After(s.cfg.RequestTimeout)
	var leaderDeadline <-chan struct{}
	for {
		err := s.store.ReadIndex(ctx, keys.FirstRangeID, timeout)
		if !errors.Is(err, replica.ErrNoLeader) {
			return err
		}
		if leaderDeadline == nil {
			leaderDeadline = s.timeouts.After(s.leaderWait())
		}
		if err := s.awaitLeader(ctx, leaderDeadline, timeout); err != nil {
			return err
		}
	}
}

// leaderWait is how long a request that needs a leader waits for one when
// this node knows none: two election timeouts, about the time a member
// that has just started takes to hear from the leader, or an election
// (with a split vote) to end. etcd serves no client before its member has
// heard from a leader, and makes writes and linearizable reads wait for one
// up to their request timeout; answering "no leader" at once instead made
// clients of a member that had just started or restarted fail (watches
// created with WithRequireLeader end for good on that answer).
func (s *Server) leaderWait() time.Duration { return 2 * s.ElectionTimeout() }

// awaitLeader waits until this node knows a leader of the first range. It
// fails with replica.ErrNoLeader once deadline or timeout is closed (a nil
// one never is), even if a leader is known then, so that a request retried
// after each wait ends by deadline; and with ctx's error. It holds no lock.
func (s *Server) awaitLeader(ctx context.Context, deadline, timeout <-chan struct{}) error {
	known, err := s.store.LeaderKnown(keys.FirstRangeID)
	if err != nil {
		return err
	}
	select {
	case <-deadline: // the request's retries end here
		return replica.ErrNoLeader
	case <-timeout:
		return replica.ErrNoLeader
	default:
	}
	select {
	case <-known:
		return nil
	case <-deadline:
	case <-timeout:
	case <-ctx.Done():
		return ctx.Err()
	}
	return replica.ErrNoLeader
}

// WaitLeader implements etcdapi.Backend: it returns at once when this node
// knows a leader, and otherwise waits for one for up to leaderWait.
func (s *Server) WaitLeader(ctx context.Context) error {
	if s.HasLeader() {
		return nil
	}
	return s.awaitLeader(ctx, s.timeouts.After(s.leaderWait()), nil)
}

// errJoining is the answer of a member that joined a cluster and has not
// received its data yet; clients retry elsewhere.
var errJoining = status.Error(codes.Unavailable, "synod: member is joining the cluster and has no data yet")

// view returns a consistent point-in-time view of the first range and the KV
// counters that belong to exactly that view. The counters must be the view's
// own, not merely recent ones: physical compaction removes versions only
// after the compaction revision is applied, so a view that lacks them also
// says reads below that revision are compacted, and a revision newer than
// the view would let a client (a Get, then a Watch from the next revision)
// skip writes. The replica hands out its published counters when no apply
// raced with the snapshot; otherwise they are read from the view itself.
func (s *Server) view() (*replica.View, kv.Meta, error) {
	snap, err := s.store.View(keys.FirstRangeID)
	if err != nil {
		return nil, kv.Meta{}, err
	}
	if pub := snap.Pub; pub != nil && pub.Initialized {
		return snap, pub.KV, nil
	}
	st, err := replica.LoadAppliedState(snap, keys.FirstRangeID)
	if err != nil {
		snap.Close()
		if !s.Published().Initialized {
			return nil, kv.Meta{}, errJoining
		}
		return nil, kv.Meta{}, err
	}
	return snap, st.KV, nil
}

// Range implements etcdapi.Backend.
func (s *Server) Range(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	return read(ctx, s, !req.Serializable, func(snap *replica.View, m kv.Meta) (*pb.RangeResponse, error) {
		return kv.Range(snap, datarange.Index(snap.Derived()), m, req)
	})
}

// ReadTxn implements etcdapi.Backend.
func (s *Server) ReadTxn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	return read(ctx, s, true, func(snap *replica.View, m kv.Meta) (*pb.TxnResponse, error) {
		return kv.ReadTxn(snap, datarange.Index(snap.Derived()), m, req)
	})
}

// read serves fn from a view of the first range, after a ReadIndex round
// when linearizable.
func read[T any](ctx context.Context, s *Server, linearizable bool, fn func(*replica.View, kv.Meta) (T, error)) (T, error) {
	var zero T
	if linearizable {
		if err := s.linearize(ctx); err != nil {
			return zero, err
		}
	}
	snap, meta, err := s.view()
	if err != nil {
		return zero, err
	}
	defer snap.Close()
	return fn(snap, meta)
}

// WaitCompaction implements etcdapi.Backend.
func (s *Server) WaitCompaction(ctx context.Context, rev int64) error {
	return s.compactor.wait(ctx, rev)
}

// Members implements etcdapi.Backend.
func (s *Server) Members(ctx context.Context, linearizable bool) ([]cluster.Member, error) {
	if linearizable {
		if err := s.linearize(ctx); err != nil {
			return nil, err
		}
	}
	return cluster.ListMembers(s.db)
}

// Status implements etcdapi.Backend.
func (s *Server) Status(ctx context.Context) (*pb.StatusResponse, error) {
	var last uint64
	var learner bool
	err := s.store.Do(ctx, keys.FirstRangeID, func(r *replica.Replica) {
		_, last = r.LogBounds()
		st := r.Status()
		_, learner = st.Config.Learners[s.id.MemberID]
	})
	if err != nil {
		return nil, err
	}
	pub := s.Published()
	resp := &pb.StatusResponse{
		Header:  s.Header(),
		Version: APIVersion,
		// What the quota counts (see storageUsage); the files on disk,
		// write-ahead log included, are synod_storage_size_bytes.
		DbSize:           s.dbSize(),
		DbSizeInUse:      s.dbSize(),
		Leader:           pub.Lead,
		RaftIndex:        last,
		RaftTerm:         pub.Term,
		RaftAppliedIndex: pub.Applied,
		IsLearner:        learner,
		// As etcd 3.6 and later report them: the data's format version,
		// and no downgrade in progress.
		StorageVersion: APIVersion,
		DowngradeInfo:  &pb.DowngradeInfo{},
	}
	resp.Header.Revision = pub.KV.Revision
	if s.cfg.QuotaBackendBytes > 0 {
		resp.DbSizeQuota = s.cfg.QuotaBackendBytes
	}
	if pub.Lead == raft.None {
		resp.Errors = append(resp.Errors, "etcdserver: no leader")
	}
	if !pub.Initialized {
		resp.Errors = append(resp.Errors, errJoining.Error())
	}
	if alarms, err := cluster.ListAlarms(s.db); err == nil {
		for _, a := range alarms {
			resp.Errors = append(resp.Errors, fmt.Sprintf("memberID:%d alarm:%s", a.MemberID, a.Alarm))
		}
	}
	return resp, nil
}
