package datarange

import (
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/keyindex"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/lease"
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
	DB *pebble.DB
	// Extensions apply the commands of the services whose data lives in
	// data ranges (job queues, rate limiters): a new instance of each for
	// every data range.
	Extensions []Extension
	Logger     *slog.Logger
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
	// leaseTTLs holds the leases of the applied state, kept up to date by
	// apply.
	leaseTTLs *lease.TTLs
	// exts maps the extensions' command kinds to them.
	exts map[raftcmd.Kind]Extension
}

var _ rangesm.StateMachine = (*Machine)(nil)

// New returns the state machine of a data range; Load gives it its state.
// It fails if two extensions claim the same command kind.
func New(cfg Config) (*Machine, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	exts, err := extensionKinds(cfg.Extensions)
	if err != nil {
		return nil, err
	}
	return &Machine{cfg: cfg, exts: exts}, nil
}

// Load implements rangesm.StateMachine: it builds the index of the live
// keys from r, which must hold exactly the applied state st.
func (m *Machine) Load(r pebble.Reader, st *rangesm.AppliedState) error {
	x, err := kv.BuildIndex(r, st.KV.Revision)
	if err != nil {
		return err
	}
	ttls, err := lease.LoadTTLs(r)
	if err != nil {
		return err
	}
	m.index, m.indexSnap, m.leaseTTLs = x, x.Snapshot(), ttls
	m.authState = nil
	for _, ext := range m.cfg.Extensions {
		if err := ext.Load(r); err != nil {
			return fmt.Errorf("load %s: %w", ext.Name(), err)
		}
	}
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
	// touched are the extensions that applied something in this batch.
	touched []Extension
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
	for _, ext := range a.touched {
		ext.Committed()
	}
	return nil
}

// touch records that ext applied something in this batch.
func (a *batch) touch(ext Extension) {
	for _, t := range a.touched {
		if t == ext {
			return
		}
	}
	a.touched = append(a.touched, ext)
}

// Close implements rangesm.BatchApplier.
func (a *batch) Close() { _ = a.w.Close() }

// LeaseTTLs returns the TTLs of the range's leases the machine keeps in
// memory (tests compare them with the table).
func (m *Machine) LeaseTTLs() *lease.TTLs { return m.leaseTTLs }
