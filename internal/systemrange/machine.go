package systemrange

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangedesc"
	"github.com/synod-io/synod/internal/rangesm"
)

// Result is the outcome of an applied command.
type Result = rangesm.Result

// Config configures a Machine.
type Config struct {
	Logger *slog.Logger
}

// Machine is the state machine of the system range: it applies the member
// records (with the Raft configuration changes they follow), alarms, the
// revision oracle's ceiling and the auth state, whose commands it checks against the auth state as it applies
// them (etcd's revision fence). Not safe for concurrent use: the replica's
// goroutine drives it.
type Machine struct {
	cfg Config
	// auth is the applied auth state.
	auth *auth.State
}

var _ rangesm.StateMachine = (*Machine)(nil)

// New returns the state machine of the system range; Load gives it its
// state.
func New(cfg Config) *Machine {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Machine{cfg: cfg}
}

// Load implements rangesm.StateMachine.
func (m *Machine) Load(r pebble.Reader, _ *rangesm.AppliedState) error {
	st, err := auth.Load(r)
	if err != nil {
		return err
	}
	m.auth = st
	return nil
}

// Published implements rangesm.StateMachine: readers of the system range
// read its keys.
func (m *Machine) Published() any { return nil }

// Begin implements rangesm.StateMachine.
func (m *Machine) Begin(b *pebble.Batch, st *rangesm.AppliedState, out *rangesm.Effects) rangesm.BatchApplier {
	return &batch{m: m, b: b, st: st, out: out, auth: m.auth}
}

// batch applies one batch of committed entries.
type batch struct {
	m   *Machine
	b   *pebble.Batch
	st  *rangesm.AppliedState
	out *rangesm.Effects
	// auth is the auth state as the batch has made it so far.
	auth *auth.State
}

// Apply implements rangesm.BatchApplier.
func (a *batch) Apply(cmd raftcmd.Command, _, _ uint64) (Result, error) {
	req, err := decodeRequest(cmd)
	if err != nil {
		return Result{Err: err}, nil
	}
	if cmd.AuthRevision != 0 || cmd.AuthNoLogin {
		if err := auth.CheckFence(a.auth, cmd.AuthRevision, cmd.AuthUser, cmd.AuthNoLogin, req); err != nil {
			return Result{Err: err}, nil
		}
	}
	var resp any
	var tok *auth.Token
	switch req := req.(type) {
	case *cluster.Member:
		err = applyMemberPublish(a.b, req)
	case *memberUpdate:
		err = applyMemberUpdate(a.b, req)
	case *etcdpb.AlarmRequest:
		resp, err = applyAlarm(a.b, a.st, req)
	case oracleCeiling:
		resp, err = applyOracleCeiling(a.b, uint64(req))
	case rangeIDAlloc:
		resp, err = applyRangeIDAlloc(a.b, uint64(req))
	case rangeDescs:
		err = applyRangeDescs(a.b, req)
	default:
		if !auth.IsCommand(req) {
			return Result{Err: fmt.Errorf("command kind %s is not the system range's", cmd.Kind)}, nil
		}
		if resp, tok, err = auth.Apply(a.b, req); err == nil {
			a.out.AuthChanged = true
			if a.auth, err = auth.Load(a.b); err != nil {
				return Result{}, err
			}
		}
	}
	if err != nil {
		if _, ok := status.FromError(err); !ok {
			return Result{}, err
		}
		return Result{Err: err}, nil
	}
	if tok != nil {
		a.out.AuthTokens = append(a.out.AuthTokens, *tok)
	}
	return Result{Resp: resp}, nil
}

// ConfChange implements rangesm.BatchApplier: the member records follow the
// Raft configuration.
func (a *batch) ConfChange(cc *pb.ConfChangeV2, cmd raftcmd.Command) error {
	return applyMemberChanges(a.b, cc, cmd)
}

// Finish implements rangesm.BatchApplier.
func (a *batch) Finish() error { return nil }

// Committed implements rangesm.BatchApplier.
func (a *batch) Committed() error {
	a.m.auth = a.auth
	return nil
}

// Close implements rangesm.BatchApplier.
func (a *batch) Close() {}

// decodeRequest decodes the payload of a system command into the request
// its kind names.
func decodeRequest(cmd raftcmd.Command) (any, error) {
	var msg proto.Message
	switch cmd.Kind {
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
	case raftcmd.KindAlarm:
		msg = &etcdpb.AlarmRequest{}
	case raftcmd.KindOracleCeiling:
		v, err := raftcmd.DecodeOracleCeiling(cmd.Payload)
		if err != nil {
			return nil, err
		}
		return oracleCeiling(v), nil
	case raftcmd.KindRangeIDAlloc:
		v, err := raftcmd.DecodeOracleCeiling(cmd.Payload)
		if err != nil {
			return nil, err
		}
		return rangeIDAlloc(v), nil
	case raftcmd.KindRangeDescs:
		ds, err := rangedesc.DecodeList(cmd.Payload)
		if err != nil {
			return nil, err
		}
		return rangeDescs(ds), nil
	default:
		var ok bool
		if msg, ok = auth.RequestOf(cmd.Kind); !ok {
			return nil, fmt.Errorf("unknown command kind %s", cmd.Kind)
		}
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

// oracleCeiling is a ceiling the revision oracle's leader asks to store.
type oracleCeiling uint64

// applyOracleCeiling raises the stored ceiling to c (never lowers it) and
// returns the stored one: the oracle hands out revisions up to it.
func applyOracleCeiling(b *pebble.Batch, c uint64) (uint64, error) {
	cur, err := OracleCeiling(b)
	if err != nil {
		return 0, err
	}
	if c <= cur {
		return cur, nil
	}
	if err := b.Set(keys.OracleCeilingKey(), binary.BigEndian.AppendUint64(nil, c), nil); err != nil {
		return 0, fmt.Errorf("store the oracle ceiling: %w", err)
	}
	return c, nil
}

// rangeDescs are descriptors to store in the meta copies.
type rangeDescs []rangedesc.Descriptor

// applyRangeDescs stores each descriptor unless the meta copy of its range
// is of its generation or newer.
func applyRangeDescs(b *pebble.Batch, ds rangeDescs) error {
	for _, d := range ds {
		cur, ok, err := rangedesc.Get(b, d.RangeID)
		if err != nil {
			return err
		}
		if ok && cur.Generation >= d.Generation {
			continue
		}
		if err := rangedesc.Put(b, d); err != nil {
			return err
		}
	}
	return nil
}

// rangeIDAlloc asks for n new range IDs.
type rangeIDAlloc uint64

// applyRangeIDAlloc hands out n range IDs above every one handed out or
// in a descriptor, and returns the first.
func applyRangeIDAlloc(b *pebble.Batch, n uint64) (uint64, error) {
	if n > 1<<20 {
		return 0, status.Errorf(codes.InvalidArgument, "synod: %d range IDs asked for at once", n)
	}
	var last uint64
	v, closer, err := b.Get(keys.NextRangeIDKey())
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return 0, fmt.Errorf("read the range ID counter: %w", err)
	default:
		if len(v) == 8 {
			last = binary.BigEndian.Uint64(v)
		}
		closer.Close()
	}
	ds, err := rangedesc.Load(b)
	if err != nil {
		return 0, err
	}
	for _, d := range ds {
		last = max(last, uint64(d.RangeID))
	}
	if err := b.Set(keys.NextRangeIDKey(), binary.BigEndian.AppendUint64(nil, last+n), nil); err != nil {
		return 0, fmt.Errorf("store the range ID counter: %w", err)
	}
	return last + 1, nil
}

// OracleCeiling reads the revision oracle's stored ceiling: no revision
// above it was ever handed out. Zero when none was stored.
func OracleCeiling(r pebble.Reader) (uint64, error) {
	v, closer, err := r.Get(keys.OracleCeilingKey())
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the oracle ceiling: %w", err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("oracle ceiling of %d bytes, want 8", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
