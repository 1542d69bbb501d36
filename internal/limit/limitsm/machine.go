package limitsm

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/keyindex"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/limit/limitpb"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/raftcmd"
)

// Machine applies the limiters' commands in a data range. It keeps no
// state of its own but a cache of the definitions it read, each checked
// against the definition key's mod revision in the index of live keys
// before use.
type Machine struct {
	defs map[string]cachedDef
}

type cachedDef struct {
	modRev int64
	def    *limitpb.StoredLimit
}

var _ datarange.Extension = (*Machine)(nil)

// New returns the limiters' extension of a data range.
func New() *Machine { return &Machine{defs: map[string]cachedDef{}} }

// Name implements datarange.Extension.
func (m *Machine) Name() string { return "limits" }

// Kinds implements datarange.Extension.
func (m *Machine) Kinds() []raftcmd.Kind {
	return []raftcmd.Kind{KindSet, KindDelete, KindCheckpoint, KindAcquire, KindRelease}
}

// Load implements datarange.Extension: the cache is dropped.
func (m *Machine) Load(pebble.Reader) error {
	clear(m.defs)
	return nil
}

// Committed implements datarange.Extension.
func (m *Machine) Committed() {}

// LeaseRevoked implements datarange.Extension. A permit is a key attached
// to its lease, which the revocation has already deleted with the lease's
// other keys (its event wakes the waiters): nothing is left to do.
func (m *Machine) LeaseRevoked(*datarange.Env, int64) error { return nil }

// SetResult is the response of a KindSet command.
type SetResult struct {
	Revision      int64
	StateRevision int64
	Created       bool
}

// DeleteResult is the response of a KindDelete command.
type DeleteResult struct {
	Deleted  bool
	Revision int64
}

// CheckpointResult is the response of a KindCheckpoint command: the
// entries not recorded because their limit was deleted or reset since.
type CheckpointResult struct{ Skipped []int }

// ReleaseResult is the response of a KindRelease command.
type ReleaseResult struct{ Released bool }

// ErrNotFound is the error of a command naming a limit that does not exist.
func ErrNotFound(name string) error {
	return status.Errorf(codes.NotFound, "limit %q not found", name)
}

// Apply implements datarange.Extension.
func (m *Machine) Apply(env *datarange.Env, cmd raftcmd.Command) (datarange.Result, error) {
	var resp any
	var err error
	switch cmd.Kind {
	case KindSet:
		req := &limitpb.SetLimit{}
		if err := decode(cmd, req); err != nil {
			return datarange.Result{Err: err}, nil
		}
		resp, err = m.set(env, req)
	case KindDelete:
		req := &limitpb.DeleteLimit{}
		if err := decode(cmd, req); err != nil {
			return datarange.Result{Err: err}, nil
		}
		resp, err = m.delete(env, req)
	case KindCheckpoint:
		req := &limitpb.Checkpoint{}
		if err := decode(cmd, req); err != nil {
			return datarange.Result{Err: err}, nil
		}
		resp, err = m.checkpoint(env, req)
	case KindAcquire:
		req := &limitpb.Acquire{}
		if err := decode(cmd, req); err != nil {
			return datarange.Result{Err: err}, nil
		}
		resp, err = m.acquire(env, req)
	case KindRelease:
		req := &limitpb.Release{}
		if err := decode(cmd, req); err != nil {
			return datarange.Result{Err: err}, nil
		}
		resp, err = m.release(env, req)
	default:
		return datarange.Result{Err: fmt.Errorf("limits: unknown command kind %s", cmd.Kind)}, nil
	}
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return datarange.Result{Err: err}, nil
		}
		return datarange.Result{}, err
	}
	return datarange.Result{Resp: resp}, nil
}

func decode(cmd raftcmd.Command, msg proto.Message) error {
	if err := proto.Unmarshal(cmd.Payload, msg); err != nil {
		return status.Errorf(codes.InvalidArgument, "decode %s command: %v", cmd.Kind, err)
	}
	return nil
}

// def returns the stored definition of limit name, or nil.
func (m *Machine) def(env *datarange.Env, name string) (*limitpb.StoredLimit, error) {
	key := DefKey(name)
	e, ok := env.KV.Live.Get(key)
	if !ok {
		return nil, nil
	}
	if c, ok := m.defs[name]; ok && c.modRev == e.ModRevision {
		return c.def, nil
	}
	kv, err := mvcc.Get(env.Batch, key, env.KV.Meta.Revision)
	if err != nil || kv == nil {
		return nil, err
	}
	d := &limitpb.StoredLimit{}
	if err := proto.Unmarshal(kv.Value, d); err != nil || d.Limit == nil {
		return nil, fmt.Errorf("limit %q: bad definition at revision %d: %v", name, kv.ModRevision, err)
	}
	m.defs[name] = cachedDef{modRev: kv.ModRevision, def: d}
	return d, nil
}

func (m *Machine) set(env *datarange.Env, req *limitpb.SetLimit) (any, error) {
	l := req.GetLimit()
	if l == nil || ValidName(l.Name) != nil {
		return nil, status.Error(codes.InvalidArgument, "limits: set without a valid limit")
	}
	if env.NoSpace {
		return nil, rpctypes.ErrGRPCNoSpace
	}
	old, err := m.def(env, l.Name)
	if err != nil {
		return nil, err
	}
	rev := env.KV.WriteRevision() // this command's revision
	stored := &limitpb.StoredLimit{Limit: proto.Clone(l).(*synodpb.Limit), StateRevision: rev}
	stored.Limit.Revision = 0
	ops := []*etcdpb.RequestOp{}
	reset := false
	if old != nil {
		if SameState(old.Limit, l) {
			stored.StateRevision = old.StateRevision
		} else {
			reset = true
		}
		if old.Limit.Algorithm == synodpb.Limit_CONCURRENCY && l.Algorithm != synodpb.Limit_CONCURRENCY {
			ops = append(ops, deleteOp(Prefix(l.Name), "permit/"))
		}
	}
	value, err := proto.Marshal(stored)
	if err != nil {
		return nil, err
	}
	ops = append(ops, &etcdpb.RequestOp{Request: &etcdpb.RequestOp_RequestPut{RequestPut: &etcdpb.PutRequest{Key: DefKey(l.Name), Value: value}}})
	if _, err := env.KV.Txn(&etcdpb.TxnRequest{Success: ops}); err != nil {
		return nil, err
	}
	if reset {
		m.dropState(env, l.Name)
	}
	return &SetResult{Revision: env.KV.Meta.Revision, StateRevision: stored.StateRevision, Created: old == nil}, nil
}

// deleteOp deletes every key under prefix+sub.
func deleteOp(prefix []byte, sub string) *etcdpb.RequestOp {
	p := append(append([]byte{}, prefix...), sub...)
	return &etcdpb.RequestOp{Request: &etcdpb.RequestOp_RequestDeleteRange{RequestDeleteRange: &etcdpb.DeleteRangeRequest{Key: p, RangeEnd: keys.PrefixEnd(p)}}}
}

// dropState deletes the checkpointed states of every key of limit name.
func (m *Machine) dropState(env *datarange.Env, name string) {
	p := keys.ServiceStatePrefix(StatePrefix(name))
	_ = env.Batch.DeleteRange(p, keys.PrefixEnd(p), nil) // an indexed batch's writes do not fail
}

func (m *Machine) delete(env *datarange.Env, req *limitpb.DeleteLimit) (any, error) {
	old, err := m.def(env, req.Name)
	if err != nil || old == nil {
		return &DeleteResult{}, err
	}
	ops := []*etcdpb.RequestOp{
		deleteOp(DefKey(req.Name), ""),
		deleteOp(Prefix(req.Name), "permit/"),
	}
	ops[0].GetRequestDeleteRange().RangeEnd = nil // the key alone
	if _, err := env.KV.Txn(&etcdpb.TxnRequest{Success: ops}); err != nil {
		return nil, err
	}
	m.dropState(env, req.Name)
	delete(m.defs, req.Name)
	return &DeleteResult{Deleted: true, Revision: env.KV.Meta.Revision}, nil
}

func (m *Machine) checkpoint(env *datarange.Env, req *limitpb.Checkpoint) (any, error) {
	res := &CheckpointResult{}
	for i, e := range req.Entries {
		d, err := m.def(env, e.Limit)
		if err != nil {
			return nil, err
		}
		if d == nil || d.StateRevision != e.Revision || len(e.Key) > MaxKeyLen {
			res.Skipped = append(res.Skipped, i)
			continue
		}
		k := keys.ServiceStateKey(StateUserKey(e.Limit, e.Key))
		if e.State == nil {
			if err := env.Batch.Delete(k, nil); err != nil {
				return nil, err
			}
			continue
		}
		v, err := proto.Marshal(&limitpb.StoredState{Revision: e.Revision, State: e.State, At: req.At})
		if err != nil {
			return nil, err
		}
		if err := env.Batch.Set(k, v, nil); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func (m *Machine) acquire(env *datarange.Env, req *limitpb.Acquire) (any, error) {
	if env.NoSpace {
		return nil, rpctypes.ErrGRPCNoSpace
	}
	d, err := m.def(env, req.Limit)
	if err != nil {
		return nil, err
	}
	if d == nil {
		return nil, ErrNotFound(req.Limit)
	}
	if d.Limit.Algorithm != synodpb.Limit_CONCURRENCY {
		return nil, status.Errorf(codes.FailedPrecondition, "limit %q is not a concurrency limit", req.Limit)
	}
	if ValidPermit(req.Permit) != nil || len(req.Key) > MaxKeyLen || req.Lease == 0 {
		return nil, status.Error(codes.InvalidArgument, "limits: acquire needs a key, a permit ID and a lease")
	}
	key := PermitKey(req.Limit, req.Key, req.Permit)
	prefix := PermitPrefix(req.Limit, req.Key)
	var held int64
	env.KV.Live.Ascend(prefix, keys.PrefixEnd(prefix), func(*keyindex.Entry) bool { held++; return true })
	res := &limitpb.AcquireResult{Held: held, Max: d.Limit.Max}
	if e, ok := env.KV.Live.Get(key); ok {
		if e.Lease != req.Lease {
			return nil, status.Errorf(codes.AlreadyExists, "permit %q is held on another lease", req.Permit)
		}
		res.Acquired = true // a retry
		return res, nil
	}
	if held >= d.Limit.Max {
		return res, nil
	}
	if _, err := env.KV.Put(&etcdpb.PutRequest{Key: key, Lease: req.Lease}); err != nil {
		return nil, err
	}
	res.Acquired, res.Held = true, held+1
	return res, nil
}

func (m *Machine) release(env *datarange.Env, req *limitpb.Release) (any, error) {
	key := PermitKey(req.Limit, req.Key, req.Permit)
	if _, ok := env.KV.Live.Get(key); !ok {
		return &ReleaseResult{}, nil
	}
	if _, err := env.KV.DeleteRange(&etcdpb.DeleteRangeRequest{Key: key}); err != nil {
		return nil, err
	}
	return &ReleaseResult{Released: true}, nil
}
