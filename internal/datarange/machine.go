package datarange

import (
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/keyindex"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangesm"
)

// Result is the outcome of an applied command.
type Result = rangesm.Result

// Config configures a Machine.
type Config struct {
	// NodeID is this node's member ID: the commands it proposed are the
	// ones whose reads it answers.
	NodeID uint64
	// DB is the node's Pebble instance, from which the index of live keys
	// is rebuilt when it is found out of step (a bug).
	DB     *pebble.DB
	Logger *slog.Logger
}

// Machine is the state machine of a data range: it applies etcd's KV and
// lease commands (and, until the system range has its own, the system
// state's: members, alarms, auth) and keeps the index of the range's live
// keys. Not safe for concurrent use: the replica's goroutine drives it.
type Machine struct {
	cfg Config

	// index holds the keys live in the applied state, kept up to date by
	// apply; indexSnap is its frozen copy that goes out with the published
	// state.
	index     *keyindex.Index
	indexSnap *keyindex.Snapshot
	// authState is the auth state the last permission check at apply used,
	// reused while the auth revision stays (every change moves it).
	authState *auth.State
}

var _ rangesm.StateMachine = (*Machine)(nil)

// New returns the state machine of a data range; Load gives it its state.
func New(cfg Config) *Machine {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Machine{cfg: cfg}
}

// Load implements rangesm.StateMachine: it builds the index of the live
// keys from r, which must hold exactly the applied state st.
func (m *Machine) Load(r pebble.Reader, st *rangesm.AppliedState) error {
	x, err := kv.BuildIndex(r, st.KV.Revision)
	if err != nil {
		return err
	}
	m.index, m.indexSnap = x, x.Snapshot()
	m.authState = nil
	return nil
}

// Published implements rangesm.StateMachine: the index of the keys live in
// the state being published (*keyindex.Snapshot).
func (m *Machine) Published() any { return m.indexSnap }

// Index returns the index of live keys a published state carries in its
// Derived field (Machine.Published), or nil.
func Index(state any) *keyindex.Snapshot {
	x, _ := state.(*keyindex.Snapshot)
	return x
}

// Begin implements rangesm.StateMachine.
func (m *Machine) Begin(b *pebble.Batch, st *rangesm.AppliedState, out *rangesm.Effects) rangesm.BatchApplier {
	return &batch{m: m, b: b, w: mvcc.NewWriter(b), st: st, out: out}
}

// batch applies one batch of committed entries.
type batch struct {
	m   *Machine
	b   *pebble.Batch
	w   *mvcc.Writer
	st  *rangesm.AppliedState
	out *rangesm.Effects
	// authRev is the auth state as this batch sees it.
	authRev authRevision
}

// ConfChange implements rangesm.BatchApplier: the member records follow the
// Raft configuration.
func (a *batch) ConfChange(cc *pb.ConfChangeV2, cmd raftcmd.Command) error {
	return applyMemberChanges(a.b, cc, cmd)
}

// Finish implements rangesm.BatchApplier: the MVCC writer's last writes go
// into the batch.
func (a *batch) Finish() error { return a.w.Close() }

// Committed implements rangesm.BatchApplier: the index, which apply kept
// current, is frozen for the state about to be published.
func (a *batch) Committed() error {
	m := a.m
	if m.index.Revision() != a.st.KV.Revision {
		// Every write moves the index with it; this is a bug, and reads
		// would silently stop using the index: rebuild it and say so.
		m.cfg.Logger.Error("index of live keys out of step with the applied state: rebuilding it",
			"index revision", m.index.Revision(), "revision", a.st.KV.Revision)
		x, err := kv.BuildIndex(m.cfg.DB, a.st.KV.Revision)
		if err != nil {
			return fmt.Errorf("rebuild index of live keys: %w", err)
		}
		m.index, m.indexSnap = x, x.Snapshot()
		return nil
	}
	if m.indexSnap.Revision() != m.index.Revision() {
		// The batch wrote: publish the index as it now is.
		m.indexSnap = m.index.Snapshot()
	}
	return nil
}

// Close implements rangesm.BatchApplier.
func (a *batch) Close() { _ = a.w.Close() }
