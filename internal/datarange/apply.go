package datarange

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/lease"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangesm"
)

// authRevision is the auth revision and enabled flag as an apply batch sees
// them, read once per batch (every client write carries how it was
// authorized) and again after an auth command.
type authRevision struct {
	rev     uint64
	enabled bool
	known   bool
}

func (a *authRevision) get(b *pebble.Batch) (*authRevision, error) {
	if !a.known {
		rev, err := auth.Revision(b)
		if err != nil {
			return nil, err
		}
		on, err := auth.Enabled(b)
		if err != nil {
			return nil, err
		}
		a.rev, a.enabled, a.known = rev, on, true
	}
	return a, nil
}

// authStateAt returns the auth state in b, whose auth revision is rev.
func (m *Machine) authStateAt(b *pebble.Batch, rev uint64) (*auth.State, error) {
	if st := m.authState; st != nil && st.Revision == rev {
		return st, nil
	}
	st, err := auth.Load(b)
	if err != nil {
		return nil, err
	}
	m.authState = st
	return st, nil
}

// Apply implements rangesm.BatchApplier. Errors in the result are the
// command's own and deterministic (an undecodable payload, or one of etcd's
// gRPC errors); the command then left no write in the batch.
func (a *batch) Apply(cmd raftcmd.Command, index, term uint64) (Result, error) {
	b, st, out, authRev := a.b, a.st, a.out, &a.authRev
	ext, isExt := a.m.exts[cmd.Kind]
	var req any = cmd // an extension decodes its own commands
	if !isExt {
		var err error
		if req, err = decodeRequest(cmd); err != nil {
			return Result{Err: err}, nil
		}
	}
	if cmd.AuthRevision != 0 || cmd.AuthNoLogin {
		// A request with a login was authorized at cmd.AuthRevision: if the
		// auth state changed since, the check may no longer hold (etcd's
		// revision fence). One checked while auth was disabled must be
		// checked again if auth is enabled now (etcd refuses it then).
		ar, err := authRev.get(b)
		if err != nil {
			return Result{}, err
		}
		if cmd.AuthNoLogin && ar.enabled {
			return Result{Err: rpctypes.ErrGRPCAuthOldRevision}, nil
		}
		if cmd.AuthRevision != 0 && cmd.AuthRevision < ar.rev {
			if cmd.AuthUser == "" {
				return Result{Err: rpctypes.ErrGRPCAuthOldRevision}, nil // from before users were recorded
			}
			// Where the verdict in the current state is plain (root, auth
			// management), it decides, as etcd does: concurrent admin
			// calls, each moving the revision, do not clash.
			ast, err := a.m.authStateAt(b, ar.rev)
			if err != nil {
				return Result{}, err
			}
			if err := auth.Recheck(ast, cmd.AuthUser, req); err != nil {
				return Result{Err: err}, nil
			}
		}
	}
	if cmd.AuthUser != "" && auth.UsesLease(req) {
		// What a user may do with a lease depends on the keys attached to
		// it, checked here against the keys attached when it applies (as
		// etcd checks at apply). After the revision check above, a non-root
		// user's request applies in the auth state it was checked in.
		ar, err := authRev.get(b)
		if err != nil {
			return Result{}, err
		}
		ast, err := a.m.authStateAt(b, ar.rev)
		if err != nil {
			return Result{}, err
		}
		if err := auth.CheckLeaseUse(b, ast, cmd.AuthUser, req); err != nil {
			if _, ok := status.FromError(err); !ok {
				return Result{}, err
			}
			return Result{Err: err}, nil
		}
	}
	if isExt {
		return a.applyExtension(ext, cmd, index, term)
	}
	if st.NoSpace && addsData(req) {
		return Result{Err: rpctypes.ErrGRPCNoSpace}, nil
	}
	before := st.KV
	ka := a.kvApplier(cmd)
	var resp any
	var err error
	var change *rangesm.LeaseChange
	var tok *auth.Token
	switch req := req.(type) {
	case *etcdpb.PutRequest:
		resp, err = ka.Put(req)
	case *etcdpb.DeleteRangeRequest:
		resp, err = ka.DeleteRange(req)
	case *etcdpb.TxnRequest:
		resp, err = ka.Txn(req)
	case *etcdpb.CompactionRequest:
		if resp, err = ka.Compact(req); err == nil {
			out.Compactions = append(out.Compactions, req.Revision)
		}
	case *cluster.Member:
		err = applyMemberPublish(b, req)
	case *memberUpdate:
		err = applyMemberUpdate(b, req)
	case *etcdpb.LeaseGrantRequest:
		resp, change, err = applyLeaseGrant(ka.Leases.(lease.Table), &st.KV, req)
	case *etcdpb.LeaseRevokeRequest:
		if resp, change, err = applyLeaseRevoke(&ka, ka.Leases.(lease.Table), req); err == nil {
			err = a.leaseRevoked(&ka, cmd, index, term, req.ID)
		}
	case *etcdpb.LeaseCheckpointRequest:
		err = applyLeaseCheckpoints(ka.Leases.(lease.Table), req, out)
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
	out.Events = append(out.Events, ka.Events...)
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
// refused for lack of space. Only a member of the cluster can have an alarm
// raised.
func applyAlarm(b *pebble.Batch, st *rangesm.AppliedState, req *etcdpb.AlarmRequest) (any, error) {
	switch req.Action {
	case etcdpb.AlarmRequest_ACTIVATE, etcdpb.AlarmRequest_DEACTIVATE:
	default:
		return nil, status.Error(codes.InvalidArgument, "alarm action must be ACTIVATE or DEACTIVATE")
	}
	if req.Alarm == etcdpb.AlarmType_NONE {
		return &etcdpb.AlarmResponse{}, nil
	}
	if req.Action == etcdpb.AlarmRequest_ACTIVATE {
		// An alarm of no member could never be disarmed by the member
		// it names. Disarming any ID stays possible, to clear old ones.
		if _, ok, err := cluster.GetMember(b, req.MemberID); err != nil || !ok {
			if err == nil {
				err = rpctypes.ErrGRPCMemberNotFound
			}
			return nil, err
		}
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

// applyExtension applies a command of one of the services whose data lives
// in the range.
func (a *batch) applyExtension(ext Extension, cmd raftcmd.Command, index, term uint64) (Result, error) {
	st, out := a.st, a.out
	before := st.KV
	ka := a.kvApplier(cmd)
	env := a.env(&ka, cmd, index, term)
	res, err := ext.Apply(env, cmd)
	a.touch(ext)
	if err != nil {
		return Result{}, err
	}
	if res.Err != nil {
		st.KV = before
		return res, nil
	}
	out.Events = append(out.Events, ka.Events...)
	return res, nil
}

// leaseRevoked tells every extension that lease id is revoked, in the
// batch (and through the applier) that revokes it.
func (a *batch) leaseRevoked(ka *kv.Applier, cmd raftcmd.Command, index, term uint64, id int64) error {
	for _, ext := range a.m.cfg.Extensions {
		if err := ext.LeaseRevoked(a.env(ka, cmd, index, term), id); err != nil {
			return fmt.Errorf("%s: lease %x revoked: %w", ext.Name(), id, err)
		}
		a.touch(ext)
	}
	return nil
}

// kvApplier returns the KV applier of a command. Only the proposer answers
// the command: other members skip the reads of a txn (etcd's concurrency
// Mutex reads the whole queue in each acquisition's txn).
func (a *batch) kvApplier(cmd raftcmd.Command) kv.Applier {
	return kv.Applier{Batch: a.b, Writer: a.w, Live: a.m.index, Meta: &a.st.KV, Leases: a.leases(), NoReadResults: cmd.Proposer != a.m.cfg.NodeID}
}

func (a *batch) env(ka *kv.Applier, cmd raftcmd.Command, index, term uint64) *Env {
	return &Env{
		Batch: a.b, KV: ka, Leases: a.leases(), Term: term, Index: index,
		Local: cmd.Proposer == a.m.cfg.NodeID, NoSpace: a.st.NoSpace, Effects: a.out,
	}
}

// leases is the range's lease table as the batch sees it: its records in
// the batch, their TTLs in memory (lookups read no storage).
func (a *batch) leases() lease.Table { return lease.Table{RW: a.b, TTLs: a.m.leaseTTLs} }
