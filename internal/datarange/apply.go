package datarange

import (
	"fmt"
	"math"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/lease"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangesm"
	"github.com/synod-io/synod/internal/txnlock"
)

// ErrStaleStamp is the error of a command stamped with a revision not above
// its range's (which the stamping rules exclude: a bug).
var ErrStaleStamp = status.Error(codes.Internal, "synod: command stamped with a revision not above its range's")

// Apply implements rangesm.BatchApplier. Errors in the result are the
// command's own and deterministic (an undecodable payload, or one of etcd's
// gRPC errors); the command then left no write in the batch.
func (a *batch) Apply(cmd raftcmd.Command, index, term uint64) (Result, error) {
	b, st, out := a.b, a.st, a.out
	if cmd.Revision != 0 && (cmd.Revision > math.MaxInt64 || int64(cmd.Revision) <= st.KV.Revision) {
		// The stamping rules exclude it (a range's stamps increase with
		// its log): refused, the same on every member, rather than given
		// a revision the oracle may have handed out elsewhere.
		a.m.cfg.Logger.Error("command stamped with a revision not above the range's", "kind", cmd.Kind, "stamp", cmd.Revision, "revision", st.KV.Revision)
		return Result{Err: ErrStaleStamp}, nil
	}
	switch cmd.Kind {
	case raftcmd.KindTxnPrewrite, raftcmd.KindTxnCommit, raftcmd.KindTxnResolve, raftcmd.KindTxnPush:
		return a.applyTxnCommand(cmd)
	case raftcmd.KindRangeSplit:
		return a.applySplit(cmd)
	}
	ext, isExt := a.m.exts[cmd.Kind]
	var req any = cmd // an extension decodes its own commands
	if !isExt {
		var err error
		if req, err = decodeRequest(cmd); err != nil {
			return Result{Err: err}, nil
		}
	}
	if cmd.AuthRevision != 0 || cmd.AuthNoLogin {
		// Checked against the range's copy of the auth state (the system
		// range hands it every change before acknowledging it).
		if err := auth.CheckFence(a.sys.auth, cmd.AuthRevision, cmd.AuthUser, cmd.AuthNoLogin, req); err != nil {
			return Result{Err: err}, nil
		}
	}
	if cmd.AuthUser != "" && auth.UsesLease(req) {
		// What a user may do with a lease depends on the keys attached to
		// it, checked here against the keys attached when it applies (as
		// etcd checks at apply). After the revision check above, a non-root
		// user's request applies in the auth state it was checked in.
		if err := auth.CheckLeaseUse(b, a.sys.auth, cmd.AuthUser, req); err != nil {
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
	if !inSpan(a.desc, req) {
		// The router sends a write to the range of its keys; one that
		// reaches another (a node with stale descriptors, or a split
		// applied since it was routed) writes nothing, the same on every
		// replica, and the proposer routes it again.
		return Result{Err: ErrRangeChanged}, nil
	}
	if cmd.Kind.Stamped() {
		refused, err := a.checkTxnLocks(cmd, req)
		if err != nil {
			return Result{}, err
		}
		if refused != nil {
			return Result{Err: refused}, nil
		}
	}
	before := st.KV
	ka := a.kvApplier(cmd)
	var resp any
	var err error
	var change *rangesm.LeaseChange
	switch req := req.(type) {
	case *etcdpb.PutRequest:
		resp, err = ka.Put(req)
	case *etcdpb.DeleteRangeRequest:
		resp, err = ka.DeleteRange(req)
	case *etcdpb.TxnRequest:
		resp, err = ka.Txn(req)
	case *etcdpb.CompactionRequest:
		if cmd.Kind == raftcmd.KindCompactAt {
			resp, err = ka.CompactAt(req)
		} else {
			resp, err = ka.Compact(req)
		}
		if err == nil {
			out.Compactions = append(out.Compactions, req.Revision)
		}
	case raftcmd.SystemState:
		err = a.applySystemState(req)
	case *etcdpb.LeaseGrantRequest, *etcdpb.LeaseRevokeRequest, *etcdpb.LeaseCheckpointRequest:
		if !a.m.keepsLeases() {
			return Result{Err: fmt.Errorf("command kind %s in range %d, which keeps no lease", cmd.Kind, a.m.cfg.RangeID)}, nil
		}
		t := a.leases()
		switch req := req.(type) {
		case *etcdpb.LeaseGrantRequest:
			resp, change, err = applyLeaseGrant(t, &st.KV, req)
		case *etcdpb.LeaseRevokeRequest:
			if cmd.Kind == raftcmd.KindLeaseRevoked {
				// Revoked by a transaction across ranges, which left
				// telling the services to this command.
				if err = a.tellRevoked(&ka, cmd, index, term, req.ID); err == nil {
					resp = &etcdpb.LeaseRevokeResponse{Header: &etcdpb.ResponseHeader{Revision: st.KV.Revision}}
				}
			} else if resp, change, err = applyLeaseRevoke(&ka, t, a.desc, req); err == nil {
				err = a.leaseRevoked(&ka, cmd, index, term, req.ID)
			}
		case *etcdpb.LeaseCheckpointRequest:
			err = applyLeaseCheckpoints(t, req, out)
		}
	default:
		return Result{Err: fmt.Errorf("command kind %s is not a data range's", cmd.Kind)}, nil
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
	case raftcmd.KindCompact, raftcmd.KindCompactAt:
		msg = &etcdpb.CompactionRequest{}
	case raftcmd.KindLeaseGrant:
		msg = &etcdpb.LeaseGrantRequest{}
	case raftcmd.KindLeaseRevoke, raftcmd.KindLeaseRevoked:
		msg = &etcdpb.LeaseRevokeRequest{}
	case raftcmd.KindLeaseCheckpoint:
		msg = &etcdpb.LeaseCheckpointRequest{}
	case raftcmd.KindSystemState:
		return raftcmd.DecodeSystemState(cmd.Payload)
	default:
		return nil, fmt.Errorf("unknown command kind %s", cmd.Kind)
	}
	if err := proto.Unmarshal(cmd.Payload, msg); err != nil {
		return nil, fmt.Errorf("decode %s command: %w", cmd.Kind, err)
	}
	return msg, nil
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

// applyExtension applies a command of one of the services whose data lives
// in the range.
func (a *batch) applyExtension(ext Extension, cmd raftcmd.Command, index, term uint64) (Result, error) {
	st, out := a.st, a.out
	before := st.KV
	ka := a.kvApplier(cmd)
	env := a.env(&ka, cmd, index, term)
	var held *heldLeases
	if a.m.keepsLeases() && a.locks.Len() > 0 {
		// The services' commands name leases in their own payloads,
		// which checkTxnLocks cannot read: they meet a lease a
		// transaction revokes here, as they look it up.
		held = &heldLeases{Table: a.leases(), locks: a.locks}
		ka.Leases, env.Leases = held, held
	}
	res, err := ext.Apply(env, cmd)
	a.touch(ext)
	if err != nil {
		return Result{}, err
	}
	if res.Err != nil {
		st.KV = before
		if held != nil && held.met != nil {
			// It needed a lease being revoked: it goes again once the
			// revocation is done (the proposer resolves the lock).
			res.Err = txnlock.Locked(held.met)
		}
		return res, nil
	}
	out.Events = append(out.Events, ka.Events...)
	return res, nil
}

// heldLeases is the lease table as a service's command sees it while
// transactions across ranges hold leases: a lease a transaction revokes
// does not exist (nothing is attached to it: the revocation deleted the
// keys attached when its prewrite applied, and drops every record of the
// lease's keys at its commit), and met keeps the hold, for the command to
// wait for it.
type heldLeases struct {
	lease.Table
	locks *txnlock.Table
	met   *txnlock.Locks
}

// Exists implements kv.Leases.
func (h *heldLeases) Exists(id int64) (bool, error) {
	if l := h.locks.LeaseConflict(id, false, 0); l != nil {
		h.met = l
		return false, nil
	}
	return h.Table.Exists(id)
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
	ka := kv.Applier{Batch: a.b, Writer: a.w, Live: a.m.index, Meta: &a.st.KV, NoReadResults: cmd.Proposer != a.m.cfg.NodeID,
		Revision: int64(cmd.Revision), Committed: a.maxCommit}
	if cmd.Revision != 0 && (len(a.desc.Start) > 0 || len(a.desc.End) > 0) {
		// One of several ranges: revisions are the cluster's, and the
		// range holds no version between its own revision and the
		// stamp but commits (at most maxCommit, below the stamp). A
		// command that writes nothing answers at the stamp's
		// predecessor, not at the range's older revision, which may lie
		// below what other ranges answered before it began.
		ka.Committed = max(ka.Committed, int64(cmd.Revision)-1)
	}
	if a.m.keepsLeases() {
		// Elsewhere a command names no lease (the router sends a put with
		// one as a transaction with the first range: it would fail with
		// "requested lease not found"), and a key's deletion or
		// overwrite leaves the table's record of it, which revocations
		// check against the key.
		ka.Leases = a.leases()
	}
	return ka
}

func (a *batch) env(ka *kv.Applier, cmd raftcmd.Command, index, term uint64) *Env {
	return &Env{
		Batch: a.b, KV: ka, Leases: a.leases(), Term: term, Index: index,
		Local: cmd.Proposer == a.m.cfg.NodeID, NoSpace: a.st.NoSpace, Effects: a.out,
		Start: a.desc.Start, End: end(a.desc),
	}
}

// leases is the range's lease table as the batch sees it: its records in
// the batch, their TTLs in memory (lookups read no storage).
func (a *batch) leases() lease.Table { return lease.Table{RW: a.b, TTLs: a.m.leaseTTLs} }
