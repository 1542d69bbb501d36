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

	"github.com/cockroachdb/pebble/v2"
	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/etcdapi"
	"github.com/synod-io/synod/internal/keyindex"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangedesc"
	"github.com/synod-io/synod/internal/replica"
	"github.com/synod-io/synod/internal/txnlock"
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
	if cr, ok := req.(*pb.CompactionRequest); ok && s.multiRange() {
		return s.compactRanges(ctx, cr)
	}
	deadline := time.Now().Add(s.cfg.RequestTimeout)
	for {
		set := s.descs.Load()
		resp, err := s.proposeRouted(ctx, set, kind, req, payload)
		if !isRangeChanged(err) {
			return resp, err
		}
		if time.Now().After(deadline) {
			return nil, rpctypes.ErrGRPCTimeout
		}
		// A split changed the ranges since the request was routed: route
		// it again once this node applied it.
		if err := s.awaitNewDescriptors(ctx, set); err != nil {
			return nil, err
		}
	}
}

// proposeRouted proposes a write in the ranges set routes it to.
func (s *Server) proposeRouted(ctx context.Context, set *rangedesc.Set, kind raftcmd.Kind, req proto.Message, payload []byte) (any, error) {
	if len(set.All()) == 1 {
		return s.proposeIn(ctx, rangeOf(kind), kind, payload, 0, quotaCost(req))
	}
	ids, cross := route(set, kind, req)
	if cross {
		switch req := req.(type) {
		case *pb.TxnRequest:
			return s.crossRangeTxn(ctx, req)
		case *pb.DeleteRangeRequest:
			// A delete over several ranges is a txn of one delete.
			resp, err := s.crossRangeTxn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: req}}}})
			if err != nil {
				return nil, err
			}
			out := resp.Responses[0].GetResponseDeleteRange()
			out.Header = resp.Header
			return out, nil
		case *pb.PutRequest:
			// A put with a lease outside the first range is a txn of one
			// put, with the first range, which keeps the lease table.
			resp, err := s.crossRangeTxn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: req}}}})
			if err != nil {
				return nil, err
			}
			out := resp.Responses[0].GetResponsePut()
			out.Header = resp.Header
			return out, nil
		}
		return nil, fmt.Errorf("a %s over several ranges", kind)
	}
	return s.proposeIn(ctx, ids[0], kind, payload, 0, quotaCost(req))
}

// contextUntil returns ctx, cancelled once done is closed too.
func contextUntil(ctx context.Context, done <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
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

// checkWritable refuses early what the replica of range id would refuse:
// writes while the node has no data (joining), and requests that add data
// (a quota cost) while a NOSPACE alarm is raised.
func (s *Server) checkWritable(id keys.RangeID, cost int64) error {
	pub := s.rangePublished(id)
	if pub == nil || !pub.Initialized {
		return errJoining
	}
	if pub.NoSpace && cost > 0 {
		return rpctypes.ErrGRPCNoSpace
	}
	return nil
}

// proposeRaw replicates one command and waits for its result on this node.
func (s *Server) proposeRaw(ctx context.Context, kind raftcmd.Kind, payload []byte) (any, error) {
	return s.propose(ctx, kind, payload, 0, 0)
}

// propose replicates a command; cost is what it may add to the replicated
// state (quotaCost), checked against the storage quota.
func (s *Server) propose(ctx context.Context, kind raftcmd.Kind, payload []byte, term uint64, cost int64) (any, error) {
	return s.proposeIn(ctx, rangeOf(kind), kind, payload, term, cost)
}

// proposeIn is propose in range rangeID (route's choice for a request
// that names keys).
func (s *Server) proposeIn(ctx context.Context, rangeID keys.RangeID, kind raftcmd.Kind, payload []byte, term uint64, cost int64) (any, error) {
	if len(payload) > s.cfg.MaxRequestBytes {
		return nil, etcdapi.ErrTooLarge
	}
	if err := s.checkWritable(rangeID, cost); err != nil {
		if !errors.Is(err, rpctypes.ErrGRPCNoSpace) {
			return nil, err
		}
		// This node may not have applied a disarm committed elsewhere
		// before the request: refuse only if it holds once caught up.
		if lerr := s.linearizeRange(ctx, rangeID); lerr != nil {
			return nil, lerr
		}
		if err := s.checkWritable(rangeID, cost); err != nil {
			return nil, err
		}
	}
	if err := s.checkQuota(cost); err != nil {
		return nil, err
	}
	cmd := raftcmd.Command{
		RangeID:  rangeID,
		Proposer: s.id.MemberID,
		Kind:     kind,
		Payload:  payload,
		Term:     term,
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
	timeout := s.timeouts.After(s.cfg.RequestTimeout)
	var leaderDeadline <-chan struct{}
	var data []byte
	for {
		if data == nil {
			// A command of our own is fenced to the term it is proposed
			// in: if a leader change loses it, the replica fails it as
			// soon as it can tell it will never apply, and it is proposed
			// again here, under a new request ID (replica.Proposal.Term).
			// A leader's decision is fenced to the term it took it in by
			// its caller, and is not proposed again.
			cmd.RequestID = s.reqIDs.Add(1)
			if term == 0 {
				cmd.Term = s.rangeTerm(rangeID)
			}
			data = cmd.Encode(nil)
		}
		p := replica.NewProposal(cmd.RequestID, data)
		p.Term = cmd.Term
		res, err := s.store.Propose(ctx, rangeID, p, timeout)
		if err == nil && (errors.Is(res.Err, replica.ErrNoLeader) || errors.Is(res.Err, replica.ErrDropped)) {
			// Raft refused the command without appending it anywhere (no
			// leader, or one handing its leadership over): it may be
			// proposed again, with the same request ID, once a leader is
			// known (the next term's, for a transfer: then the command is
			// fenced anew).
			if leaderDeadline == nil {
				leaderDeadline = s.timeouts.After(s.leaderWait())
			}
			if errors.Is(res.Err, replica.ErrDropped) {
				// A transfer ends within an election timeout; a leader
				// that drops proposals for want of room (too much
				// uncommitted data) keeps its term, and the command then
				// fails with ErrDropped ("too many requests") as before.
				err = s.awaitTermAfter(ctx, rangeID, cmd.Term, s.timeouts.After(s.ElectionTimeout()), timeout)
				if errors.Is(err, replica.ErrDropped) && (errors.Is(res.Err, replica.ErrTransferring) || errors.Is(res.Err, replica.ErrCampaigning)) && !closed(timeout) {
					// The transfer did not end in a new term (Raft gives up
					// one whose target is slow to catch up, on a loaded
					// machine): the leader takes proposals again. A
					// campaign that won no term (a pre-vote the others
					// refused, as they hear from the leader) ends as the
					// replica hears the leader again.
					err = nil
				}
				if err == nil && term == 0 {
					data = nil
				}
			} else {
				err = s.awaitLeader(ctx, rangeID, leaderDeadline, timeout)
			}
			if err == nil {
				continue
			}
		}
		if err == nil && term == 0 && errors.Is(res.Err, replica.ErrStaleLeader) {
			data = nil
			continue
		}
		if err == nil && kind.Stamped() {
			// A transaction across ranges holds a key the command names
			// (resolved, or waited for, then the command goes again), or
			// committed one above the command's stamp (it goes again, to
			// be stamped anew): see crosstxn.go.
			var locked *txnlock.LockedError
			var tooOld *txnlock.TooOldError
			switch {
			case errors.As(res.Err, &locked):
				rctx, cancel := contextUntil(ctx, timeout)
				err = s.resolveLock(rctx, rangeID, locked)
				cancel()
				if err == nil {
					data = nil
					continue
				}
				if closed(timeout) {
					err = rpctypes.ErrGRPCTimeout
				}
			case errors.As(res.Err, &tooOld):
				data = nil
				continue
			}
		}
		if err != nil {
			s.metrics.ProposalsFailed.Inc()
			return nil, err
		}
		if res.Err == nil && rangeID == keys.SystemRangeID && changesSystemState(kind) {
			// Acknowledged once every data range checks its commands
			// against the change.
			if err := s.pushSystemState(ctx); err != nil {
				s.logger.Warn("system change applied, but not yet in force on every range", "kind", kind, "err", err)
				return nil, rpctypes.ErrGRPCTimeout
			}
		}
		return res.Resp, res.Err
	}
}

// closed reports whether ch is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// rangeTerm returns the Raft term this node's replica of range id is in.
func (s *Server) rangeTerm(id keys.RangeID) uint64 {
	if pub := s.rangePublished(id); pub != nil {
		return pub.Term
	}
	return 0
}

// awaitTermAfter waits until this node's replica of range id knows a leader
// of a term after term (a leadership transfer ended), bounded as
// awaitLeader.
func (s *Server) awaitTermAfter(ctx context.Context, id keys.RangeID, term uint64, deadline, timeout <-chan struct{}) error {
	for {
		if pub := s.rangePublished(id); pub != nil && pub.Term > term && pub.Lead != 0 {
			return nil
		}
		t := time.NewTimer(s.cfg.TickInterval)
		select {
		case <-deadline:
			t.Stop()
			return replica.ErrDropped
		case <-timeout:
			t.Stop()
			return replica.ErrDropped
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// linearize waits until this node has applied everything committed in the
// data range before the call (linearizeRange).
func (s *Server) linearize(ctx context.Context) error {
	return s.linearizeRange(ctx, keys.FirstDataRangeID)
}

// linearizeRange waits until this node has applied everything committed in
// range id before the call. Without a known leader it waits for one
// (awaitLeader).
func (s *Server) linearizeRange(ctx context.Context, id keys.RangeID) error {
	return s.linearizeRangeAt(ctx, id, 0, 0)
}

// linearizeRangeAt is linearizeRange that also waits until this node has
// applied index of range id, the index a read fence of term answered (or
// an entry of a later term).
func (s *Server) linearizeRangeAt(ctx context.Context, id keys.RangeID, index, term uint64) error {
	timeout := s.timeouts.After(s.cfg.RequestTimeout)
	var leaderDeadline <-chan struct{}
	for {
		err := s.store.ReadIndexAtLeast(ctx, id, index, term, timeout)
		if !errors.Is(err, replica.ErrNoLeader) {
			return err
		}
		if leaderDeadline == nil {
			leaderDeadline = s.timeouts.After(s.leaderWait())
		}
		if err := s.awaitLeader(ctx, id, leaderDeadline, timeout); err != nil {
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

// awaitLeader waits until this node knows a leader of range id. It
// fails with replica.ErrNoLeader once deadline or timeout is closed (a nil
// one never is), even if a leader is known then, so that a request retried
// after each wait ends by deadline; and with ctx's error. It holds no lock.
func (s *Server) awaitLeader(ctx context.Context, id keys.RangeID, deadline, timeout <-chan struct{}) error {
	known, err := s.store.LeaderKnown(id)
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
// knows a leader of the data range, and otherwise waits for one for up to
// leaderWait.
func (s *Server) WaitLeader(ctx context.Context) error {
	return s.waitRangeLeader(ctx, keys.FirstDataRangeID)
}

// waitRangeLeader returns at once when this node knows a leader of range
// id, and otherwise waits for one for up to leaderWait.
func (s *Server) waitRangeLeader(ctx context.Context, id keys.RangeID) error {
	if s.rangeHasLeader(id) {
		return nil
	}
	return s.awaitLeader(ctx, id, s.timeouts.After(s.leaderWait()), nil)
}

// errJoining is the answer of a member that joined a cluster and has not
// received its data yet; clients retry elsewhere.
var errJoining = status.Error(codes.Unavailable, "synod: member is joining the cluster and has no data yet")

// view returns a consistent point-in-time view of the data range and the KV
// counters that belong to exactly that view. The counters must be the view's
// own, not merely recent ones: physical compaction removes versions only
// after the compaction revision is applied, so a view that lacks them also
// says reads below that revision are compacted, and a revision newer than
// the view would let a client (a Get, then a Watch from the next revision)
// skip writes. The replica hands out its published counters when no apply
// raced with the snapshot; otherwise they are read from the view itself.
func (s *Server) view() (*replica.View, kv.Meta, error) {
	snap, err := s.store.View(keys.FirstDataRangeID)
	if err != nil {
		return nil, kv.Meta{}, err
	}
	if pub := snap.Pub; pub != nil && pub.Initialized {
		return snap, pub.KV, nil
	}
	st, err := replica.LoadAppliedState(snap, keys.FirstDataRangeID)
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
	touched := func(set *rangedesc.Set) ([]keys.RangeID, []txnlock.Span) {
		var r router
		r.key(set, req.Key, req.RangeEnd)
		start, end := kv.RangeBounds(req.Key, req.RangeEnd)
		return r.ids, []txnlock.Span{{Start: start, End: end}}
	}
	return read(ctx, s, !req.Serializable, touched, func(r pebble.Reader, idx *keyindex.Snapshot, m kv.Meta) (*pb.RangeResponse, error) {
		return kv.Range(r, idx, m, req)
	})
}

// ReadTxn implements etcdapi.Backend.
func (s *Server) ReadTxn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	touched := func(set *rangedesc.Set) ([]keys.RangeID, []txnlock.Span) {
		var r router
		r.txn(set, req)
		return r.ids, txnSpans(req)
	}
	return read(ctx, s, true, touched, func(r pebble.Reader, idx *keyindex.Snapshot, m kv.Meta) (*pb.TxnResponse, error) {
		return kv.ReadTxn(r, idx, m, req)
	})
}

// read serves fn from a view of the first data range (its index of live
// keys with it), after a ReadIndex round when linearizable. With several
// data ranges, or ReadsAtOracleRevision, a linearizable read is served at
// a revision from the oracle after fences on the ranges it touches
// (readAtOracle), and with several a serializable one at the revision the
// node knows they are closed at (readResolved).
func read[T any](ctx context.Context, s *Server, linearizable bool, touched func(*rangedesc.Set) ([]keys.RangeID, []txnlock.Span), fn func(pebble.Reader, *keyindex.Snapshot, kv.Meta) (T, error)) (T, error) {
	deadline := time.Now().Add(s.cfg.RequestTimeout)
	for {
		set := s.descs.Load()
		out, ids, err := readOnce(ctx, s, set, linearizable, touched, fn)
		if !errors.Is(err, errRerouted) && (err != nil || s.sameRanges(set, ids)) {
			return out, err
		}
		if time.Now().After(deadline) {
			var zero T
			return zero, rpctypes.ErrGRPCTimeout
		}
		// A split changed the ranges read while the read was served:
		// read again with the new ones, once this node applied it.
		if err := s.awaitNewDescriptors(ctx, set); err != nil {
			var zero T
			return zero, err
		}
	}
}

// readOnce serves a read with the ranges set routes it to, and returns
// them.
func readOnce[T any](ctx context.Context, s *Server, set *rangedesc.Set, linearizable bool, touched func(*rangedesc.Set) ([]keys.RangeID, []txnlock.Span), fn func(pebble.Reader, *keyindex.Snapshot, kv.Meta) (T, error)) (T, []keys.RangeID, error) {
	var zero T
	if len(set.All()) > 1 || (linearizable && s.cfg.ReadsAtOracleRevision) {
		ids, spans := touched(set)
		if len(ids) == 0 {
			ids = set.IDs()[:1] // an empty span: any range answers it alike
		}
		var out T
		var err error
		if !linearizable {
			out, err = readResolved(s, ids, fn)
		} else {
			out, err = readAtOracle(ctx, s, ids, spans, fn)
		}
		return out, ids, err
	}
	ids := set.IDs()
	if linearizable {
		if err := s.linearize(ctx); err != nil {
			return zero, ids, err
		}
	}
	snap, meta, err := s.view()
	if err != nil {
		return zero, ids, err
	}
	defer snap.Close()
	if d, ok := datarange.Descriptor(snap.Derived()); ok && len(d.End) > 0 {
		// The range split after the read was routed: its index holds
		// only some of the keys.
		return zero, nil, errRerouted
	}
	out, err := fn(snap, datarange.Index(snap.Derived()), meta)
	return out, ids, err
}

// WaitCompaction implements etcdapi.Backend.
func (s *Server) WaitCompaction(ctx context.Context, rev int64) error {
	if s.multiRange() {
		// Each range compacted at most up to its own revision
		// (compactRanges), and versions go once every range did.
		rev = min(rev, s.compactedEverywhere())
	}
	return s.compactor.wait(ctx, rev)
}

// compactRanges compacts every data range at a revision, which must not
// be above the store's (one from the oracle, taken with read fences: no
// write at or below it commits afterwards in any range). Each range
// compacts at that revision itself (raftcmd.KindCompactAt: a quiet range's
// revision rises to it), so that they all share one compaction revision
// and physical compaction is not held back by an idle range. A range
// already compacted there (a call cut short before) is skipped; the
// compaction is refused as etcd does only if every range is.
func (s *Server) compactRanges(ctx context.Context, req *pb.CompactionRequest) (any, error) {
	cur, err := s.fenceDataRanges(ctx)
	if err != nil {
		return nil, err
	}
	// What transactions across ranges commit at or below the compaction
	// revision is made first, so that nothing appears below it after.
	if err := s.resolveLocksBelow(ctx, s.dataRanges(), cur, nil); err != nil {
		return nil, err
	}
	if req.Revision > cur {
		return nil, rpctypes.ErrGRPCFutureRev
	}
	var todo []keys.RangeID
	for _, id := range s.dataRanges() {
		pub := s.rangePublished(id)
		if pub == nil {
			return nil, errJoining
		}
		if req.Revision > pub.KV.CompactRevision {
			todo = append(todo, id)
		}
	}
	if len(todo) == 0 {
		return nil, rpctypes.ErrGRPCCompacted // as etcd: at or below the last compaction
	}
	payload, err := proto.Marshal(&pb.CompactionRequest{Revision: req.Revision, Physical: req.Physical})
	if err != nil {
		return nil, err
	}
	for _, id := range todo {
		if _, err := s.proposeIn(ctx, id, raftcmd.KindCompactAt, payload, 0, 0); err != nil && !errors.Is(err, rpctypes.ErrGRPCCompacted) {
			return nil, err
		}
	}
	return &pb.CompactionResponse{Header: &pb.ResponseHeader{Revision: cur}}, nil
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
	// The data range's Raft state: where the writes go, as etcd's one
	// group's.
	err := s.store.Do(ctx, keys.FirstDataRangeID, func(r *replica.Replica) {
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
