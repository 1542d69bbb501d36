package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	raftpb "go.etcd.io/raft/v3/raftpb"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/replica"
)

// The system range and the data ranges are separate Raft groups on the same
// members. What the data ranges need of the system state, and what keeps
// their configurations and leaders in step with the system range's, is here.

// changesSystemState reports whether a system command of kind may change
// what data ranges check their commands against: the auth state, or
// whether a NOSPACE alarm refuses writes.
func changesSystemState(kind raftcmd.Kind) bool {
	return kind == raftcmd.KindAlarm ||
		(kind >= raftcmd.KindAuthEnable && kind <= raftcmd.KindRoleRevokePermission && kind != raftcmd.KindAuthenticate)
}

// readSystemState reads the system state data ranges keep a copy of, as
// this node's replica of the system range has applied it.
func (s *Server) readSystemState() (raftcmd.SystemState, error) {
	snap := s.db.NewSnapshot()
	defer snap.Close()
	st, err := replica.LoadAppliedState(snap, keys.SystemRangeID)
	if err != nil {
		return raftcmd.SystemState{}, err
	}
	as, err := auth.Load(snap)
	if err != nil {
		return raftcmd.SystemState{}, err
	}
	mirror, err := auth.EncodeMirror(as)
	if err != nil {
		return raftcmd.SystemState{}, err
	}
	noSpace, err := cluster.NoSpace(snap)
	if err != nil {
		return raftcmd.SystemState{}, err
	}
	return raftcmd.SystemState{Index: st.Index, AuthMirror: mirror, NoSpace: noSpace}, nil
}

// sameSystemState reports whether two copies of the system state say the
// same (their indexes aside).
func sameSystemState(a, b raftcmd.SystemState) (bool, error) {
	if a.NoSpace != b.NoSpace {
		return false, nil
	}
	x, err := auth.DecodeMirror(a.AuthMirror)
	if err != nil {
		return false, err
	}
	y, err := auth.DecodeMirror(b.AuthMirror)
	if err != nil {
		return false, err
	}
	return x.Revision == y.Revision && x.Enabled == y.Enabled, nil
}

// pushSystemState hands every data range whose copy of the system state
// (as this node applied it) differs from the system range's (as this node
// applied it) the current one, and waits until each applied it here. A
// system command that changes it is acknowledged only after this: a
// permission revoked, auth enabled, a NOSPACE alarm raised are then in force
// on every range for every command applied later.
func (s *Server) pushSystemState(ctx context.Context) error {
	ss, err := s.readSystemState()
	if err != nil {
		return fmt.Errorf("read the system state: %w", err)
	}
	for _, id := range s.dataRanges() {
		cur, err := datarange.LoadSystemState(s.db, id)
		if err != nil {
			return err
		}
		if same, err := sameSystemState(cur, ss); err != nil || same {
			if err != nil {
				return err
			}
			continue
		}
		if _, err := s.proposeTo(ctx, id, raftcmd.KindSystemState, raftcmd.EncodeSystemState(ss), 0); err != nil {
			return fmt.Errorf("hand range %d the system state: %w", id, err)
		}
	}
	return nil
}

// rangesLoop runs on every node; where this node leads the system range,
// it keeps the data ranges in step with it: their copies of the system
// state (a change cut short by a crash before every range had it), their
// configurations (a membership change made in the system range but not yet
// in a data range), and their leadership, which follows the system range's
// so that the node that runs membership changes, the lessor and (later)
// the revision oracle is one and the same.
func (s *Server) rangesLoop(ctx context.Context) {
	period := s.ElectionTimeout() / 2
	lastTransfer := map[keys.RangeID]time.Time{}
	rounds := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(period):
		case <-s.descsWake:
		}
		// Every node: ranges that splits made and this node learned of
		// only from the meta copies (it took a snapshot of the split
		// range from after the split).
		s.refreshDescriptors()
		if !s.isRangeLeader(keys.SystemRangeID) {
			continue
		}
		s.storeMetaDescriptors(ctx)
		if rounds++; rounds%4 == 0 {
			s.splitLargeRanges(ctx)
		}
		if err := s.pushSystemState(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("hand the data ranges the system state", "err", err)
		}
		for _, id := range s.dataRanges() {
			if !s.isRangeLeader(id) {
				// Leadership follows the system range's; not more often than
				// once per election timeout per range, so that a transfer
				// under way is not asked for again, and not while this node
				// hands every range over itself (MoveLeader, or removing
				// itself), which it would undo.
				if pub := s.rangePublished(id); pub != nil && pub.Lead != 0 && time.Since(lastTransfer[id]) > s.ElectionTimeout() &&
					time.Now().UnixNano() > s.handingOver.Load() {
					lastTransfer[id] = time.Now()
					_ = s.store.Do(ctx, id, func(r *replica.Replica) { r.TransferLeader(s.id.MemberID) })
				}
				continue
			}
			// Not while a membership change is under way: it changes the
			// data ranges itself, and a change of ours in between would
			// undo its first step (a member removed from a data range but
			// not yet from the system range would be added back).
			if !s.confMu.TryLock() {
				continue
			}
			err := s.reconcileConfig(ctx, id)
			s.confMu.Unlock()
			if err != nil && ctx.Err() == nil {
				s.logger.Warn("bring a data range's configuration in step with the system range's", "range", uint64(id), "err", err)
			}
		}
	}
}

// reconcileConfig makes one change to data range id's Raft configuration
// towards the system range's, if they differ: a member added (as a
// learner first), promoted or removed in the system range is added,
// promoted or removed in the data range.
func (s *Server) reconcileConfig(ctx context.Context, id keys.RangeID) error {
	sys, data := s.systemPublished(), s.rangePublished(id)
	if data == nil {
		return nil
	}
	in := func(ids []uint64, m uint64) bool { return slices.Contains(ids, m) }
	for _, m := range sys.Voters {
		switch {
		case in(data.Voters, m):
		case in(data.Learners, m):
			// A voter of the system range, still a learner here: promoted
			// once it holds nearly all of this range's log (a node that
			// just joined has this range's snapshot to receive first), so
			// that it never counts in this range's quorums empty-handed.
			ready, err := s.learnerReady(ctx, id, m)
			if err != nil {
				return err
			}
			if !ready {
				continue
			}
			return s.proposeRangeConfChange(ctx, id, raftpb.ConfChangeAddNode, cluster.Member{ID: m})
		default:
			return s.proposeRangeConfChange(ctx, id, raftpb.ConfChangeAddLearnerNode, cluster.Member{ID: m, IsLearner: true})
		}
	}
	for _, m := range sys.Learners {
		if !in(data.Voters, m) && !in(data.Learners, m) {
			return s.proposeRangeConfChange(ctx, id, raftpb.ConfChangeAddLearnerNode, cluster.Member{ID: m, IsLearner: true})
		}
	}
	for _, m := range append(slices.Clone(data.Voters), data.Learners...) {
		if !in(sys.Voters, m) && !in(sys.Learners, m) {
			return s.proposeRangeConfChange(ctx, id, raftpb.ConfChangeRemoveNode, cluster.Member{ID: m})
		}
	}
	return nil
}

// learnerReady reports whether learner m holds nearly all of range id's
// log, as this node (its leader) sees it.
func (s *Server) learnerReady(ctx context.Context, id keys.RangeID, m uint64) (bool, error) {
	st, err := s.rangeRaftStatus(ctx, id)
	if err != nil {
		return false, err
	}
	return caughtUp(st, s.id.MemberID, m), nil
}

// caughtUp reports whether learner m holds nearly all of the log of leader
// (learnerReadyFraction), as the leader's status st has it.
func caughtUp(st raft.Status, leader, m uint64) bool {
	pr, ok := st.Progress[m]
	return ok && pr.Match > 0 && float64(pr.Match) >= learnerReadyFraction*float64(st.Progress[leader].Match)
}

// proposeTo replicates one command of the node's own (no client request,
// so no auth fence) to range id and waits for its result here. A nonzero
// term fences it to that term: it applies only if appended in it (a
// decision this node took as the leader of term). An unfenced command that
// Raft refused without appending it (no leader, or one whose term ended
// or that hands its leadership over) is proposed again once there is a
// leader, within the request timeout.
func (s *Server) proposeTo(ctx context.Context, id keys.RangeID, kind raftcmd.Kind, payload []byte, term uint64) (any, error) {
	timeout := s.timeouts.After(s.cfg.RequestTimeout)
	leaderDeadline := s.timeouts.After(s.leaderWait())
	for {
		reqID := s.reqIDs.Add(1)
		cmd := raftcmd.Command{RangeID: id, Proposer: s.id.MemberID, RequestID: reqID, Kind: kind, Payload: payload, Term: term}
		p := replica.NewProposal(reqID, cmd.Encode(nil))
		p.Term = term
		proposedIn := s.rangeTerm(id)
		res, err := s.store.Propose(ctx, id, p, timeout)
		if err != nil {
			return nil, err
		}
		switch {
		case term == 0 && errors.Is(res.Err, replica.ErrNoLeader):
			err = s.awaitLeader(ctx, id, leaderDeadline, timeout)
		case term == 0 && errors.Is(res.Err, replica.ErrDropped):
			err = s.awaitTermAfter(ctx, id, proposedIn, s.timeouts.After(s.ElectionTimeout()), timeout)
		default:
			return res.Resp, res.Err
		}
		if err != nil {
			return nil, err
		}
	}
}
