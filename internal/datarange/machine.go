package datarange

import (
	"bytes"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/synod-io/synod/internal/keyindex"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/lease"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangedesc"
	"github.com/synod-io/synod/internal/rangesm"
	"github.com/synod-io/synod/internal/txnlock"
)

// Result is the outcome of an applied command.
type Result = rangesm.Result

// Config configures a Machine.
type Config struct {
	// RangeID is the range the machine applies the commands of.
	RangeID keys.RangeID
	// NodeID is this node's member ID: the commands it proposed are the
	// ones whose reads it answers.
	NodeID uint64
	// DB is the node's Pebble instance, from which the index of live keys
	// is rebuilt when it is found out of step (a bug).
	DB *pebble.DB
	// Start and End bound the user keys the range holds, [Start, End) (an
	// empty End: to the end of the keyspace; both empty: every key), and
	// Generation is its descriptor's: the range's descriptor until its
	// state holds one of its own (written by a split, carried by
	// snapshots), which then wins.
	Start, End []byte
	Generation uint64
	// Extensions apply the commands of the services whose data lives in
	// data ranges (job queues, rate limiters): a new instance of each for
	// every data range.
	Extensions []Extension
	Logger     *slog.Logger
}

// Machine is the state machine of a data range: it applies etcd's KV and
// lease commands, checked against the range's copy of the system state
// (auth, NOSPACE), and keeps the index of the range's live keys. Not safe
// for concurrent use: the replica's goroutine drives it.
type Machine struct {
	cfg Config

	// index holds the keys live in the applied state, kept up to date by
	// apply; indexSnap is its frozen copy that goes out with the published
	// state.
	index     *keyindex.Index
	indexSnap *keyindex.Snapshot
	// sys is the range's copy of the system state, as applied.
	sys sysState
	// leaseTTLs holds the leases of the applied state, kept up to date by
	// apply.
	leaseTTLs *lease.TTLs
	// exts maps the extensions' command kinds to them.
	exts map[raftcmd.Kind]Extension
	// locks are the locks transactions across ranges hold in the applied
	// state (immutable: published as they are), and maxCommit the highest
	// revision one of them committed at here (txn.go).
	locks     *txnlock.Table
	maxCommit int64
	// desc is the range's descriptor as applied: its span and generation;
	// spans are the Pebble spans of its replicated state, for any
	// goroutine (Spans).
	desc  rangedesc.Descriptor
	spans atomic.Pointer[[]keys.Span]
	// loaded is set once Load ran; spanChanged when the last Load (a
	// snapshot's install) changed the range's span, until the next batch.
	loaded, spanChanged bool
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
	m := &Machine{cfg: cfg, exts: exts}
	m.setDesc(rangedesc.Descriptor{RangeID: cfg.RangeID, Start: cfg.Start, End: cfg.End, Generation: cfg.Generation})
	return m, nil
}

// setDesc makes d the range's descriptor.
func (m *Machine) setDesc(d rangedesc.Descriptor) {
	m.desc = d
	spans := keys.DataRangeSpans(d.RangeID, d.Start, d.End)
	m.spans.Store(&spans)
}

// Partial implements rangesm.Partial: whether the range holds less than
// the whole keyspace, as applied.
func (m *Machine) Partial() bool { return len(m.desc.Start) > 0 || len(m.desc.End) > 0 }

// Spans implements rangesm.Spanner: the Pebble spans of the range's
// replicated state, which follow its span.
func (m *Machine) Spans() []keys.Span { return *m.spans.Load() }

// Load implements rangesm.StateMachine: it builds the index of the live
// keys from r, which must hold exactly the applied state st.
func (m *Machine) Load(r pebble.Reader, st *rangesm.AppliedState) error {
	d, ok, err := rangedesc.GetLocal(r, m.cfg.RangeID)
	if err != nil {
		return err
	}
	if ok {
		m.spanChanged = m.loaded && d.Generation != m.desc.Generation
		m.setDesc(d)
	}
	m.loaded = true
	// The locks and commits of transactions across ranges first: the
	// range holds versions up to its highest commit.
	if err := m.loadTxns(r); err != nil {
		return err
	}
	x, err := kv.BuildIndexUpTo(r, st.KV.Revision, m.maxCommit, m.desc.Start, m.desc.End)
	if err != nil {
		return err
	}
	ttls := lease.NoTTLs()
	if m.keepsLeases() {
		if ttls, err = lease.LoadTTLs(r); err != nil {
			return err
		}
	}
	m.index, m.indexSnap, m.leaseTTLs = x, x.Snapshot(), ttls
	if m.sys, err = loadSysState(r, m.cfg.RangeID); err != nil {
		return err
	}
	for _, ext := range m.cfg.Extensions {
		if err := ext.Load(r); err != nil {
			return fmt.Errorf("load %s: %w", ext.Name(), err)
		}
	}
	return nil
}

// Published implements rangesm.StateMachine: the index of the keys live in
// the state being published, and the transactions' locks (Index, Locks).
func (m *Machine) Published() any {
	return &published{index: m.indexSnap, locks: m.locks, maxCommit: m.maxCommit, desc: m.desc, spanChanged: m.spanChanged}
}

// SpanChangedByInstall reports whether the state a published state
// (Machine.Published) carries was installed by a snapshot that changed the
// range's span: it split since this replica last applied its log.
func SpanChangedByInstall(state any) bool {
	p, ok := state.(*published)
	return ok && p.spanChanged
}

// Descriptor returns the range's descriptor a published state carries in
// its Derived field (Machine.Published): its span and generation as
// applied.
func Descriptor(state any) (rangedesc.Descriptor, bool) {
	if p, ok := state.(*published); ok {
		return p.desc, true
	}
	return rangedesc.Descriptor{}, false
}

// end is d's end bound for spans (nil: none).
func end(d rangedesc.Descriptor) []byte {
	if len(d.End) == 0 {
		return nil
	}
	return d.End
}

// Index returns the index of live keys a published state carries in its
// Derived field (Machine.Published), or nil.
func Index(state any) *keyindex.Snapshot {
	if p, ok := state.(*published); ok {
		return p.index
	}
	return nil
}

// Begin implements rangesm.StateMachine.
func (m *Machine) Begin(b *pebble.Batch, st *rangesm.AppliedState, out *rangesm.Effects) rangesm.BatchApplier {
	return &batch{m: m, b: b, w: mvcc.NewWriter(b), st: st, out: out, sys: m.sys, locks: m.locks, maxCommit: m.maxCommit, desc: m.desc}
}

// batch applies one batch of committed entries.
type batch struct {
	m   *Machine
	b   *pebble.Batch
	w   *mvcc.Writer
	st  *rangesm.AppliedState
	out *rangesm.Effects
	// sys is the copy of the system state as the batch has made it so far.
	sys sysState
	// touched are the extensions that applied something in this batch.
	touched []Extension
	// locks and maxCommit are the machine's, as the batch made them.
	locks     *txnlock.Table
	maxCommit int64
	// indexChanged is set when a transaction's writes changed the index
	// of live keys without moving its revision.
	indexChanged bool
	// desc is the range's descriptor as the batch has made it (a split
	// shrinks it).
	desc rangedesc.Descriptor
}

// ConfChange implements rangesm.BatchApplier: a data range keeps no member
// records (the system range does).
func (a *batch) ConfChange(*pb.ConfChangeV2, raftcmd.Command) error { return nil }

// Finish implements rangesm.BatchApplier: the MVCC writer's last writes go
// into the batch.
func (a *batch) Finish() error {
	if a.out.TxnLocksChanged {
		a.out.TxnLockFloor = a.locks.Floor()
	}
	return a.w.Close()
}

// Committed implements rangesm.BatchApplier: the index, which apply kept
// current, is frozen for the state about to be published.
func (a *batch) Committed() error {
	m := a.m
	m.spanChanged = false
	m.sys = a.sys
	m.locks, m.maxCommit = a.locks, a.maxCommit
	if a.desc.Generation != m.desc.Generation {
		// A split: the index keeps only the keys the range still holds.
		m.setDesc(a.desc)
		x, err := kv.BuildIndexUpTo(m.cfg.DB, a.st.KV.Revision, m.maxCommit, m.desc.Start, m.desc.End)
		if err != nil {
			return fmt.Errorf("rebuild index of live keys after a split: %w", err)
		}
		m.index, m.indexSnap = x, x.Snapshot()
		for _, ext := range a.touched {
			ext.Committed()
		}
		return nil
	}
	if m.index.Revision() != a.st.KV.Revision {
		// Every write moves the index with it; this is a bug, and reads
		// would silently stop using the index: rebuild it and say so.
		m.cfg.Logger.Error("index of live keys out of step with the applied state: rebuilding it",
			"index revision", m.index.Revision(), "revision", a.st.KV.Revision)
		x, err := kv.BuildIndexUpTo(m.cfg.DB, a.st.KV.Revision, m.maxCommit, m.desc.Start, m.desc.End)
		if err != nil {
			return fmt.Errorf("rebuild index of live keys: %w", err)
		}
		m.index, m.indexSnap = x, x.Snapshot()
		return nil
	}
	if m.indexSnap.Revision() != m.index.Revision() || a.indexChanged {
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

// keepsLeases reports whether the range keeps the lease table: the first
// data range does (the leases' records, and every key attached to one, in
// any range).
func (m *Machine) keepsLeases() bool { return m.cfg.RangeID == keys.FirstDataRangeID }

// inSpan reports whether every key a write names lies in the range's span
// (always true for a range over every key, and for commands that name no
// key).
func (m *Machine) inSpan(req any) bool { return inSpan(m.desc, req) }

// spanHolds is holds with the range's applied descriptor.
func (m *Machine) spanHolds(key, end []byte) bool { return holds(m.desc, key, end) }

func inSpan(d rangedesc.Descriptor, req any) bool {
	if len(d.Start) == 0 && len(d.End) == 0 {
		return true
	}
	switch r := req.(type) {
	case *etcdpb.PutRequest:
		return holds(d, r.Key, nil)
	case *etcdpb.DeleteRangeRequest:
		return holds(d, r.Key, r.RangeEnd)
	case *etcdpb.TxnRequest:
		return kv.TxnKeys(r, func(key, end []byte, _ int64) bool { return holds(d, key, end) })
	}
	return true
}

// holds reports whether the etcd key range [key, end) (key alone when
// end is empty, every key from key on when end is "\x00") lies in d's
// span; an empty key range does.
func holds(d rangedesc.Descriptor, key, end []byte) bool {
	if bytes.Compare(key, d.Start) < 0 {
		return len(end) > 0 && !(len(end) == 1 && end[0] == 0) && bytes.Compare(end, key) <= 0
	}
	switch {
	case len(end) == 0:
		return len(d.End) == 0 || bytes.Compare(key, d.End) < 0
	case len(end) == 1 && end[0] == 0:
		return len(d.End) == 0
	case bytes.Compare(end, key) <= 0:
		return true
	}
	return len(d.End) == 0 || bytes.Compare(end, d.End) <= 0
}
