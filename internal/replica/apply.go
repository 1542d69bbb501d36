package replica

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/lease"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/raftcmd"
)

type appliedResult struct {
	requestID uint64
	res       Result
}

// apply applies committed entries in one indexed batch, with the new applied
// state and, when due, the truncation of the log. Results are handed to
// waiting proposals only after the batch is committed, so a client that sees
// its write acknowledged can read it back. A non-nil hs is a HardState
// (of a new commit index only) to write in the same batch.
func (r *Replica) apply(ents []*pb.Entry, hs *pb.HardState, out *ApplyOutput) error {
	if len(ents) == 0 {
		return nil
	}
	b := r.db.NewIndexedBatch()
	defer b.Close()
	w := mvcc.NewWriter(b)
	defer w.Close()
	st := r.state
	var results []appliedResult
	var authRev authRevision
	var agreedTrunc uint64 // the highest truncation applied in the batch
	for _, e := range ents {
		if e.GetIndex() <= st.Index {
			continue // already applied (replayed after a restart)
		}
		if e.GetIndex() != st.Index+1 {
			return fmt.Errorf("range %d: applying entry %d after %d leaves a gap", r.cfg.RangeID, e.GetIndex(), st.Index)
		}
		switch e.GetType() {
		case pb.EntryNormal:
			if len(e.GetData()) == 0 {
				break // the empty entry a new leader appends
			}
			cmd, err := raftcmd.Decode(e.GetData())
			if err != nil {
				// Every replica reaches the same verdict on the same bytes.
				r.logger.Error("skipping undecodable command", "index", e.GetIndex(), "err", err)
				break
			}
			if cmd.Kind == raftcmd.KindTruncateLog {
				agreedTrunc = max(agreedTrunc, r.truncationOf(cmd, st.Index))
				break
			}
			res, err := r.applyCommand(b, w, &authRev, &st, cmd, e.GetTerm(), out)
			if err != nil {
				return fmt.Errorf("range %d: apply %s at %d: %w", r.cfg.RangeID, cmd.Kind, e.GetIndex(), err)
			}
			res.Index = e.GetIndex()
			if cmd.Proposer == r.id {
				results = append(results, appliedResult{cmd.RequestID, res})
			}
		case pb.EntryConfChange, pb.EntryConfChangeV2:
			res, err := r.applyConfChange(b, &st, e)
			if err != nil {
				return err
			}
			out.ConfChanged = true
			if res.requestID != 0 {
				res.res.Index = e.GetIndex()
				results = append(results, res)
			}
		}
		st.Index, st.Term = e.GetIndex(), e.GetTerm()
	}
	out.KV = st.KV
	if err := w.Close(); err != nil {
		return fmt.Errorf("range %d: %w", r.cfg.RangeID, err)
	}
	if err := writeAppliedState(b, r.cfg.RangeID, &st); err != nil {
		return fmt.Errorf("write applied state of range %d: %w", r.cfg.RangeID, err)
	}
	if err := r.maybeTruncateLog(b, st.Index, agreedTrunc); err != nil {
		return err
	}
	if hs != nil {
		if err := r.log.SetHardState(b, hs); err != nil {
			return fmt.Errorf("save hard state of range %d: %w", r.cfg.RangeID, err)
		}
	}
	// Odd until the batch's state is published; it stays odd if the commit
	// fails (see Replica.View).
	r.stateSeq.Add(1)
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("commit applied batch of range %d: %w", r.cfg.RangeID, err)
	}
	r.state = st
	r.log.SetConfState(st.ConfState)
	if r.index.Revision() != st.KV.Revision {
		// Every write moves the index with it; this is a bug, and reads
		// would silently stop using the index: rebuild it and say so.
		r.logger.Error("index of live keys out of step with the applied state: rebuilding it",
			"index revision", r.index.Revision(), "revision", st.KV.Revision)
		if err := r.rebuildIndex(); err != nil {
			return fmt.Errorf("range %d: %w", r.cfg.RangeID, err)
		}
	} else if r.indexSnap.Revision() != r.index.Revision() {
		// The batch wrote: publish the index as it now is.
		r.indexSnap = r.index.Snapshot()
	}
	r.publish()
	r.stateChanged()
	for _, ar := range results {
		if p, ok := r.proposals[ar.requestID]; ok {
			delete(r.proposals, ar.requestID)
			out.completions = append(out.completions, completion{p, ar.res})
		}
	}
	return nil
}

// authRevision is the auth revision as an apply batch sees it, read once
// per batch (every write is stamped with one once auth has been used) and
// again after an auth command.
type authRevision struct {
	rev   uint64
	known bool
}

func (a *authRevision) get(b *pebble.Batch) (uint64, error) {
	if !a.known {
		rev, err := auth.Revision(b)
		if err != nil {
			return 0, err
		}
		a.rev, a.known = rev, true
	}
	return a.rev, nil
}

// applyCommand applies one command. Errors in the result are the command's
// own and deterministic (an undecodable payload, or one of etcd's gRPC
// errors); the command then left no write in b. The returned error is a
// storage failure that may have left part of the command in b: the batch
// must be discarded and the replica stopped.
func (r *Replica) applyCommand(b *pebble.Batch, w *mvcc.Writer, authRev *authRevision, st *AppliedState, cmd raftcmd.Command, term uint64, out *ApplyOutput) (Result, error) {
	if cmd.RangeID != r.cfg.RangeID {
		return Result{Err: fmt.Errorf("command for range %d applied on range %d", cmd.RangeID, r.cfg.RangeID)}, nil
	}
	if cmd.Term != 0 && cmd.Term != term {
		return Result{Err: ErrStaleLeader}, nil
	}
	if cmd.AuthRevision != 0 {
		// The request was authorized at cmd.AuthRevision: if the auth state
		// changed since, the check may no longer hold (etcd's revision fence).
		rev, err := authRev.get(b)
		if err != nil {
			return Result{}, err
		}
		if cmd.AuthRevision < rev {
			return Result{Err: rpctypes.ErrGRPCAuthOldRevision}, nil
		}
	}
	req, err := decodeRequest(cmd)
	if err != nil {
		return Result{Err: err}, nil
	}
	if st.NoSpace && addsData(req) {
		return Result{Err: rpctypes.ErrGRPCNoSpace}, nil
	}
	before := st.KV
	// Only the proposer answers the command: other members skip the reads
	// of a txn (etcd's concurrency Mutex reads the whole queue in each
	// acquisition's txn).
	leases := lease.Table{RW: b, TTLs: r.leaseTTLs}
	a := kv.Applier{Batch: b, Writer: w, Live: r.index, Meta: &st.KV, Leases: leases, NoReadResults: cmd.Proposer != r.id}
	var resp any
	var change *LeaseChange
	var tok *auth.Token
	switch req := req.(type) {
	case *etcdpb.PutRequest:
		resp, err = a.Put(req)
	case *etcdpb.DeleteRangeRequest:
		resp, err = a.DeleteRange(req)
	case *etcdpb.TxnRequest:
		resp, err = a.Txn(req)
	case *etcdpb.CompactionRequest:
		if resp, err = a.Compact(req); err == nil {
			out.Compactions = append(out.Compactions, req.Revision)
		}
	case *cluster.Member:
		err = applyMemberPublish(b, req)
	case *memberUpdate:
		err = applyMemberUpdate(b, req)
	case *etcdpb.LeaseGrantRequest:
		resp, change, err = applyLeaseGrant(leases, &st.KV, req)
	case *etcdpb.LeaseRevokeRequest:
		resp, change, err = applyLeaseRevoke(&a, leases, req)
	case *etcdpb.LeaseCheckpointRequest:
		err = applyLeaseCheckpoints(leases, req, out)
	case *etcdpb.AlarmRequest:
		resp, err = applyAlarm(b, st, req)
	default:
		if auth.IsCommand(req) {
			resp, tok, err = auth.Apply(b, req)
			authRev.known = false
			out.AuthChanged = true
		}
	}
	if err != nil {
		if _, ok := status.FromError(err); !ok {
			return Result{}, err
		}
		st.KV = before
		return Result{Err: err}, nil
	}
	out.Events = append(out.Events, a.Events...)
	if change != nil {
		out.Leases = append(out.Leases, *change)
	}
	if tok != nil {
		out.AuthTokens = append(out.AuthTokens, *tok)
	}
	return Result{Resp: resp}, nil
}

// decodeRequest decodes the payload of a command into the request its kind
// names.
func decodeRequest(cmd raftcmd.Command) (any, error) {
	var msg proto.Message
	switch cmd.Kind {
	case raftcmd.KindPut:
		msg = &etcdpb.PutRequest{}
	case raftcmd.KindDeleteRange:
		msg = &etcdpb.DeleteRangeRequest{}
	case raftcmd.KindTxn:
		msg = &etcdpb.TxnRequest{}
	case raftcmd.KindCompact:
		msg = &etcdpb.CompactionRequest{}
	case raftcmd.KindLeaseGrant:
		msg = &etcdpb.LeaseGrantRequest{}
	case raftcmd.KindLeaseRevoke:
		msg = &etcdpb.LeaseRevokeRequest{}
	case raftcmd.KindLeaseCheckpoint:
		msg = &etcdpb.LeaseCheckpointRequest{}
	case raftcmd.KindAlarm:
		msg = &etcdpb.AlarmRequest{}
	case raftcmd.KindAuthEnable:
		msg = &etcdpb.AuthEnableRequest{}
	case raftcmd.KindAuthDisable:
		msg = &etcdpb.AuthDisableRequest{}
	case raftcmd.KindAuthenticate:
		msg = &etcdpb.InternalAuthenticateRequest{}
	case raftcmd.KindUserAdd:
		msg = &etcdpb.AuthUserAddRequest{}
	case raftcmd.KindUserDelete:
		msg = &etcdpb.AuthUserDeleteRequest{}
	case raftcmd.KindUserChangePassword:
		msg = &etcdpb.AuthUserChangePasswordRequest{}
	case raftcmd.KindUserGrantRole:
		msg = &etcdpb.AuthUserGrantRoleRequest{}
	case raftcmd.KindUserRevokeRole:
		msg = &etcdpb.AuthUserRevokeRoleRequest{}
	case raftcmd.KindRoleAdd:
		msg = &etcdpb.AuthRoleAddRequest{}
	case raftcmd.KindRoleDelete:
		msg = &etcdpb.AuthRoleDeleteRequest{}
	case raftcmd.KindRoleGrantPermission:
		msg = &etcdpb.AuthRoleGrantPermissionRequest{}
	case raftcmd.KindRoleRevokePermission:
		msg = &etcdpb.AuthRoleRevokePermissionRequest{}
	case raftcmd.KindMemberPublish:
		m, err := cluster.DecodeMember(cmd.Payload)
		if err != nil {
			return nil, err
		}
		return &m, nil
	case raftcmd.KindMemberUpdate:
		m, err := cluster.DecodeMember(cmd.Payload)
		if err != nil {
			return nil, err
		}
		return (*memberUpdate)(&m), nil
	default:
		return nil, fmt.Errorf("unknown command kind %s", cmd.Kind)
	}
	if err := proto.Unmarshal(cmd.Payload, msg); err != nil {
		return nil, fmt.Errorf("decode %s command: %w", cmd.Kind, err)
	}
	return msg, nil
}

// applyMemberPublish records the name and client URLs a member announces
// when it starts. Unknown members are ignored: they may have been removed.
func applyMemberPublish(b *pebble.Batch, m *cluster.Member) error {
	cur, ok, err := cluster.GetMember(b, m.ID)
	if err != nil || !ok {
		return err
	}
	cur.Name = m.Name
	cur.ClientURLs = m.ClientURLs
	return cluster.PutMember(b, cur)
}

// addsData reports whether a request may grow the store: what a NOSPACE
// alarm refuses (as etcd: puts, txns with puts, lease grants). Deletes,
// compactions and revocations, which free space, go on.
func addsData(req any) bool {
	switch r := req.(type) {
	case *etcdpb.PutRequest, *etcdpb.LeaseGrantRequest:
		return true
	case *etcdpb.TxnRequest:
		return txnHasPuts(r)
	}
	return false
}

func txnHasPuts(r *etcdpb.TxnRequest) bool {
	for _, ops := range [][]*etcdpb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			switch o := op.Request.(type) {
			case *etcdpb.RequestOp_RequestPut:
				return true
			case *etcdpb.RequestOp_RequestTxn:
				if txnHasPuts(o.RequestTxn) {
					return true
				}
			}
		}
	}
	return false
}

// applyAlarm raises or disarms an alarm and recomputes whether writes are
// refused for lack of space.
func applyAlarm(b *pebble.Batch, st *AppliedState, req *etcdpb.AlarmRequest) (any, error) {
	switch req.Action {
	case etcdpb.AlarmRequest_ACTIVATE, etcdpb.AlarmRequest_DEACTIVATE:
	default:
		return nil, status.Error(codes.InvalidArgument, "alarm action must be ACTIVATE or DEACTIVATE")
	}
	if req.Alarm == etcdpb.AlarmType_NONE {
		return &etcdpb.AlarmResponse{}, nil
	}
	if err := cluster.SetAlarm(b, req.MemberID, req.Alarm, req.Action == etcdpb.AlarmRequest_ACTIVATE); err != nil {
		return nil, err
	}
	noSpace, err := cluster.NoSpace(b)
	if err != nil {
		return nil, err
	}
	st.NoSpace = noSpace
	return &etcdpb.AlarmResponse{Alarms: []*etcdpb.AlarmMember{{MemberID: req.MemberID, Alarm: req.Alarm}}}, nil
}

// memberUpdate is a change of a member's peer URLs.
type memberUpdate cluster.Member

// applyMemberUpdate sets the peer URLs of an existing member; the result
// tells the proposer whether the member exists.
func applyMemberUpdate(b *pebble.Batch, m *memberUpdate) error {
	cur, ok, err := cluster.GetMember(b, m.ID)
	if err != nil {
		return err
	}
	if !ok {
		return rpctypes.ErrGRPCMemberNotFound
	}
	cur.PeerURLs = m.PeerURLs
	return cluster.PutMember(b, cur)
}

func (r *Replica) applyConfChange(b *pebble.Batch, st *AppliedState, e *pb.Entry) (appliedResult, error) {
	var cc pb.ConfChangeI
	if e.GetType() == pb.EntryConfChange {
		var c pb.ConfChange
		if err := proto.Unmarshal(e.GetData(), &c); err != nil {
			return appliedResult{}, fmt.Errorf("decode conf change at %d: %w", e.GetIndex(), err)
		}
		cc = &c
	} else {
		var c pb.ConfChangeV2
		if err := proto.Unmarshal(e.GetData(), &c); err != nil {
			return appliedResult{}, fmt.Errorf("decode conf change at %d: %w", e.GetIndex(), err)
		}
		cc = &c
	}
	st.ConfState = r.rn.ApplyConfChange(cc)
	// A conf change proposed by a Synod node carries a command in its context:
	// the member record to add (membership is part of the replicated state),
	// and the request ID that lets the proposer learn the outcome.
	v2 := cc.AsV2()
	var cmd raftcmd.Command
	if len(v2.GetContext()) > 0 {
		var err error
		if cmd, err = raftcmd.Decode(v2.GetContext()); err != nil {
			r.logger.Error("conf change with undecodable context", "index", e.GetIndex(), "err", err)
		}
	}
	if err := applyMemberChanges(b, v2, cmd); err != nil {
		return appliedResult{}, err
	}
	if cmd.Proposer != r.id || cmd.RequestID == 0 {
		return appliedResult{}, nil
	}
	return appliedResult{requestID: cmd.RequestID, res: Result{Resp: st.ConfState}}, nil
}

// applyMemberChanges keeps the member records in step with the Raft
// configuration: an added member gets the record its command carries (or a
// bare one), a promoted learner becomes a voter, a removed member loses its
// record and is marked removed.
func applyMemberChanges(b *pebble.Batch, cc *pb.ConfChangeV2, cmd raftcmd.Command) error {
	var rec *cluster.Member
	if cmd.Kind == raftcmd.KindMemberChange {
		if m, err := cluster.DecodeMember(cmd.Payload); err == nil {
			rec = &m
		}
	}
	for _, c := range cc.GetChanges() {
		id := c.GetNodeId()
		switch c.GetType() {
		case pb.ConfChangeAddNode, pb.ConfChangeAddLearnerNode:
			cur, ok, err := cluster.GetMember(b, id)
			if err != nil {
				return err
			}
			if !ok {
				cur = cluster.Member{ID: id}
				if rec != nil && rec.ID == id {
					cur = *rec
				}
			}
			cur.IsLearner = c.GetType() == pb.ConfChangeAddLearnerNode
			if err := cluster.PutMember(b, cur); err != nil {
				return err
			}
		case pb.ConfChangeRemoveNode:
			if err := cluster.DeleteMember(b, id); err != nil {
				return err
			}
			if err := cluster.MarkRemoved(b, id); err != nil {
				return err
			}
		}
	}
	return nil
}

// maybeTruncateLog stages the removal of old applied entries: up to agreed,
// the highest index an applied KindTruncateLog command named (0 if none),
// and, once the log holds more than LogTruncateThreshold applied entries
// anyway, all but LogKeepEntries of them.
func (r *Replica) maybeTruncateLog(b *pebble.Batch, applied, agreed uint64) error {
	to := agreed
	if agreed != 0 {
		r.truncProposed = false
	}
	if trunc := r.log.Truncated().Index; applied-trunc > r.cfg.LogTruncateThreshold {
		to = max(to, applied-r.cfg.LogKeepEntries)
	}
	if err := r.log.Truncate(b, to); err != nil {
		return fmt.Errorf("truncate log of range %d: %w", r.cfg.RangeID, err)
	}
	return nil
}

// truncationOf returns the index up to which a KindTruncateLog command
// removes entries on this replica, whose applied index is applied: never
// beyond it (the leader named an index it had applied, so this is a guard),
// and 0 for a command that is not valid.
func (r *Replica) truncationOf(cmd raftcmd.Command, applied uint64) uint64 {
	if cmd.RangeID != r.cfg.RangeID {
		return 0
	}
	index, err := raftcmd.DecodeTruncateLog(cmd.Payload)
	if err != nil {
		r.logger.Error("skipping undecodable log truncation", "err", err)
		return 0
	}
	return min(index, applied)
}

// maybeProposeTruncation has the leader propose the removal of the entries
// every member holds and this one has applied, once there are
// LogTruncateStep of them. A truncation applied by all members at once,
// soon after the entries were written, removes most of them while they are
// still in Pebble's memtable, so that no flush or compaction writes them
// again; a member that lags holds the point back (its Match does), and the
// log then grows until LogTruncateThreshold. One proposal is outstanding at
// a time; a lost one is replaced after an election timeout.
func (r *Replica) maybeProposeTruncation() {
	if r.lead != r.id || r.state.Index == 0 {
		return
	}
	if r.truncProposed && r.tick-r.truncProposedTick <= uint64(r.cfg.ElectionTicks) {
		return
	}
	to := r.state.Index
	r.rn.WithProgress(func(_ uint64, _ raft.ProgressType, pr tracker.Progress) {
		to = min(to, pr.Match)
	})
	if to < r.log.Truncated().Index+r.cfg.LogTruncateStep {
		return
	}
	cmd := raftcmd.Command{RangeID: r.cfg.RangeID, Kind: raftcmd.KindTruncateLog, Payload: raftcmd.EncodeTruncateLog(to)}
	if err := r.rn.Propose(cmd.Encode(nil)); err != nil {
		return // no longer leader, or a leadership transfer: the next tick decides again
	}
	r.truncProposed, r.truncProposedTick = true, r.tick
}
