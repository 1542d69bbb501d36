package datarange

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/internal/auth"
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

// Transactions across data ranges (internal/txnlock): the range keeps the
// locks transactions hold in it (their spans and their writes), the
// records of the transactions whose primary key it holds, and the highest
// revision one of them committed at in it. Its own writes respect them: a
// stamped command that names a locked key fails with a LockedError, and
// one stamped below a version a transaction committed at with a
// TooOldError; the proposer resolves the lock or takes a new stamp, and
// proposes it again.

// loadTxns reads the range's locks and its highest commit revision.
func (m *Machine) loadTxns(r pebble.Reader) error {
	t := &txnlock.Table{}
	span := keys.TxnLocksSpan(m.cfg.RangeID)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: span.Start, UpperBound: span.End})
	if err != nil {
		return fmt.Errorf("read txn locks: %w", err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		l, err := txnlock.DecodeLocks(it.Value())
		if err != nil {
			_ = it.Close()
			return err
		}
		t = t.With(l)
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("read txn locks: %w", err)
	}
	m.locks = t
	m.maxCommit = 0
	v, closer, err := r.Get(keys.TxnStateKey(m.cfg.RangeID))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("read txn state: %w", err)
	}
	defer closer.Close()
	var st txnState
	if err := txnlock.DecodeCommand(v, &st); err != nil {
		return err
	}
	m.maxCommit = st.MaxCommit
	return nil
}

// txnState is what the range keeps of the transactions besides their locks
// and records.
type txnState struct {
	// MaxCommit is the highest revision a transaction committed at in the
	// range: a stamp above it meets no version above itself.
	MaxCommit int64 `json:"m"`
}

// Locks returns the locks a published state carries in its Derived field
// (Machine.Published), or nil.
func Locks(state any) *txnlock.Table {
	if p, ok := state.(*published); ok {
		return p.locks
	}
	return nil
}

// MaxCommit returns the highest revision a transaction across ranges
// committed at in the range, as a published state (Machine.Published)
// says: the range holds versions up to there, maybe above its revision.
func MaxCommit(state any) int64 {
	if p, ok := state.(*published); ok {
		return p.maxCommit
	}
	return 0
}

// published is what the machine publishes with each applied state.
type published struct {
	index     *keyindex.Snapshot
	locks     *txnlock.Table
	maxCommit int64
	desc      rangedesc.Descriptor
	// spanChanged: Machine.spanChanged.
	spanChanged bool
}

// LoadTxnState reads, before data range id's replica opens, the floor of
// its locks (0: none) and the highest revision a transaction committed at
// in it.
func LoadTxnState(r pebble.Reader, id keys.RangeID) (floor, maxCommit int64, err error) {
	m := &Machine{cfg: Config{RangeID: id}}
	if err := m.loadTxns(r); err != nil {
		return 0, 0, fmt.Errorf("range %d: %w", id, err)
	}
	return m.locks.Floor(), m.maxCommit, nil
}

// checkPrewriteFence refuses a prewrite whose transaction was authorized
// in an auth state older than the range's copy (etcd's fence, which a
// write within one range gets at apply): a permission revoked, or auth
// enabled, while the transaction ran. The client's request is checked
// again against the new state (the auth interceptor retries it on
// ErrGRPCAuthOldRevision), and runs again or is refused.
func (a *batch) checkPrewriteFence(cmd raftcmd.Command) error {
	st := a.sys.auth
	switch {
	case cmd.AuthNoLogin && st.Enabled:
		return rpctypes.ErrGRPCAuthOldRevision
	case cmd.AuthRevision != 0 && cmd.AuthRevision < st.Revision:
		return rpctypes.ErrGRPCAuthOldRevision
	}
	return nil
}

// applyTxnCommand applies one of the commands of transactions across
// ranges.
func (a *batch) applyTxnCommand(cmd raftcmd.Command) (Result, error) {
	switch cmd.Kind {
	case raftcmd.KindTxnPrewrite:
		var p txnlock.Prewrite
		if err := txnlock.DecodeCommand(cmd.Payload, &p); err != nil {
			return Result{Err: err}, nil
		}
		if err := a.checkPrewriteFence(cmd); err != nil {
			return Result{Err: err}, nil
		}
		return a.prewrite(cmd, &p)
	case raftcmd.KindTxnCommit:
		var c txnlock.Commit
		if err := txnlock.DecodeCommand(cmd.Payload, &c); err != nil {
			return Result{Err: err}, nil
		}
		return a.commitTxn(&c)
	case raftcmd.KindTxnResolve:
		var r txnlock.Resolve
		if err := txnlock.DecodeCommand(cmd.Payload, &r); err != nil {
			return Result{Err: err}, nil
		}
		if err := a.resolveTxn(r.Txn, r.Rev); err != nil {
			return Result{}, err
		}
		if r.Forget {
			if err := a.b.Delete(keys.TxnRecordKey(a.m.cfg.RangeID, r.Txn), nil); err != nil {
				return Result{}, err
			}
		}
		return Result{}, nil
	case raftcmd.KindTxnPush:
		var p txnlock.Push
		if err := txnlock.DecodeCommand(cmd.Payload, &p); err != nil {
			return Result{Err: err}, nil
		}
		return a.push(&p)
	}
	return Result{Err: fmt.Errorf("command kind %s is not a transaction's", cmd.Kind)}, nil
}

// prewrite takes a transaction's locks in the range, if no other
// transaction holds any of its spans and none changed since its read
// revision; the primary's range also writes its record.
func (a *batch) prewrite(cmd raftcmd.Command, p *txnlock.Prewrite) (Result, error) {
	if p.Txn <= 0 || (len(p.Spans) == 0 && len(p.Leases) == 0) {
		return Result{Err: fmt.Errorf("malformed prewrite of transaction %d", p.Txn)}, nil
	}
	if p.Generation != 0 && p.Generation != a.desc.Generation {
		return Result{Err: ErrRangeChanged}, nil
	}
	for _, w := range p.Writes {
		if !holds(a.desc, w.Key, nil) {
			return Result{Err: fmt.Errorf("prewrite of transaction %d writes %q outside range %d", p.Txn, w.Key, a.m.cfg.RangeID)}, nil
		}
	}
	if p.IsPrimary {
		if !holds(a.desc, p.Primary, nil) {
			return Result{Err: ErrRangeChanged}, nil
		}
		rec, ok, err := a.record(p.Txn)
		if err != nil {
			return Result{}, err
		}
		if ok && rec.Status != txnlock.Pending {
			return Result{Err: &txnlock.AbortedError{Txn: p.Txn}}, nil
		}
	}
	if a.locks.Get(p.Txn) != nil {
		return Result{}, nil // proposed again: taken already
	}
	if a.st.NoSpace && len(p.Writes) > 0 {
		return Result{Err: rpctypes.ErrGRPCNoSpace}, nil
	}
	// Only the range's own keys: the store holds the other ranges' too,
	// which each replica may have applied to a different point.
	spans := p.Spans[:0:0]
	for _, s := range p.Spans {
		if c, ok := s.Clip(a.desc.Start, end(a.desc)); ok {
			spans = append(spans, c)
		}
	}
	if len(spans) == 0 && len(p.Leases) == 0 {
		return Result{Err: fmt.Errorf("prewrite of transaction %d names no key of range %d", p.Txn, a.m.cfg.RangeID)}, nil
	}
	p.Spans = spans
	for _, s := range p.Spans {
		if l := a.locks.Conflict(s, p.Txn); l != nil {
			return Result{Err: txnlock.Locked(l)}, nil
		}
	}
	for _, s := range p.Spans {
		if p.RevokeLease != 0 {
			// A revocation reads nothing at R: it deletes the keys
			// attached when its prewrite applies (revokeWrites), which
			// its locks keep so. A version above R of a key the table
			// still names (put without the lease since) would fail it
			// as long as the key is written.
			break
		}
		newer, err := newestAbove(a.b, s, p.Txn)
		if err != nil {
			return Result{}, err
		}
		if newer > 0 {
			return Result{Err: &txnlock.ConflictError{Txn: p.Txn, Newer: newer}}, nil
		}
	}
	if len(p.Leases) > 0 {
		refused, err := a.prewriteLeases(cmd, p)
		if err != nil || refused != nil {
			return Result{Err: refused}, err
		}
	}
	if p.RevokeLease != 0 {
		p.Writes = a.revokeWrites(p.Spans, p.RevokeLease)
	}
	l := p.Locks
	l.Floor = max(p.Txn, a.st.KV.Revision, a.maxCommit)
	if err := a.b.Set(keys.TxnLocksKey(a.m.cfg.RangeID, l.Txn), txnlock.Encode(&l), nil); err != nil {
		return Result{}, err
	}
	if p.IsPrimary {
		rec := txnlock.Record{Status: txnlock.Pending, Deadline: p.Deadline, Primary: p.Primary}
		if err := a.setRecord(p.Txn, rec); err != nil {
			return Result{}, err
		}
	}
	a.locks = a.locks.With(&l)
	a.out.TxnLocksChanged = true
	return Result{}, nil
}

// commitTxn commits a transaction in its primary key's range: its record
// says committed at c.Rev, and its locks there are resolved.
func (a *batch) commitTxn(c *txnlock.Commit) (Result, error) {
	if c.Rev <= c.Txn {
		return Result{Err: fmt.Errorf("commit of transaction %d at %d, not above it", c.Txn, c.Rev)}, nil
	}
	rec, ok, err := a.record(c.Txn)
	if err != nil {
		return Result{}, err
	}
	switch {
	case !ok || rec.Status == txnlock.Aborted:
		return Result{Err: &txnlock.AbortedError{Txn: c.Txn}}, nil
	case rec.Status == txnlock.Committed:
		return Result{Resp: rec}, nil // proposed again
	}
	if l := a.locks.Get(c.Txn); l != nil && c.Rev <= l.Floor {
		return Result{Err: fmt.Errorf("commit of transaction %d at %d, not above its locks' floor %d", c.Txn, c.Rev, l.Floor)}, nil
	}
	rec = txnlock.Record{Status: txnlock.Committed, CommitRev: c.Rev, Primary: c.Primary}
	if err := a.setRecord(c.Txn, rec); err != nil {
		return Result{}, err
	}
	if err := a.resolveTxn(c.Txn, c.Rev); err != nil {
		return Result{}, err
	}
	return Result{Resp: rec}, nil
}

// resolveTxn makes transaction txn's writes in the range at rev, or drops
// them (rev 0), and releases its locks there.
func (a *batch) resolveTxn(txn, rev int64) error {
	l := a.locks.Get(txn)
	if l == nil {
		return nil
	}
	if rev != 0 {
		if rev <= l.Floor {
			// The oracle handed rev out before the locks were taken: a
			// bug (the commit was decided: the writes are made anyway).
			a.m.cfg.Logger.Error("transaction resolved at a revision not above its locks' floor", "txn", txn, "revision", rev, "floor", l.Floor)
		}
		ka := kv.Applier{Batch: a.b, Writer: a.w, Live: a.m.index, Meta: &a.st.KV, Leases: elsewhere{}}
		if a.m.keepsLeases() {
			ka.Leases = a.leases()
		}
		if err := ka.ApplyAt(rev, l.Writes); err != nil {
			return err
		}
		if err := a.resolveLeases(l); err != nil {
			return err
		}
		a.indexChanged = a.indexChanged || len(l.Writes) > 0
		a.out.Events = append(a.out.Events, ka.Events...)
		if rev > a.maxCommit {
			a.maxCommit = rev
			if err := a.b.Set(keys.TxnStateKey(a.m.cfg.RangeID), txnlock.Encode(txnState{MaxCommit: rev}), nil); err != nil {
				return err
			}
		}
	}
	if err := a.b.Delete(keys.TxnLocksKey(a.m.cfg.RangeID, txn), nil); err != nil {
		return err
	}
	a.locks = a.locks.Without(txn)
	a.out.TxnLocksChanged = true
	return nil
}

// push answers where a transaction stands, aborting it if it is pending
// past its deadline (or p.Abort asks), and recording it aborted if it has
// no record (its primary's prewrite never applied: now it never will).
func (a *batch) push(p *txnlock.Push) (Result, error) {
	if !holds(a.desc, p.Primary, nil) {
		return Result{Err: ErrRangeChanged}, nil
	}
	rec, ok, err := a.record(p.Txn)
	if err != nil {
		return Result{}, err
	}
	if !ok && !p.Abort && p.Now <= p.Deadline {
		// The primary's prewrite may still come: nothing is written.
		return Result{Resp: txnlock.Record{Status: txnlock.Pending, Deadline: p.Deadline}}, nil
	}
	if !ok || (rec.Status == txnlock.Pending && (p.Abort || p.Now > rec.Deadline)) {
		rec = txnlock.Record{Status: txnlock.Aborted, Primary: p.Primary}
		if err := a.setRecord(p.Txn, rec); err != nil {
			return Result{}, err
		}
	}
	if rec.Status == txnlock.Aborted {
		// The transaction's locks here go with it.
		if err := a.resolveTxn(p.Txn, 0); err != nil {
			return Result{}, err
		}
	}
	return Result{Resp: rec}, nil
}

func (a *batch) record(txn int64) (txnlock.Record, bool, error) {
	v, closer, err := a.b.Get(keys.TxnRecordKey(a.m.cfg.RangeID, txn))
	if errors.Is(err, pebble.ErrNotFound) {
		return txnlock.Record{}, false, nil
	}
	if err != nil {
		return txnlock.Record{}, false, fmt.Errorf("read record of transaction %d: %w", txn, err)
	}
	defer closer.Close()
	rec, err := txnlock.DecodeRecord(v)
	return rec, err == nil, err
}

func (a *batch) setRecord(txn int64, rec txnlock.Record) error {
	return a.b.Set(keys.TxnRecordKey(a.m.cfg.RangeID, txn), txnlock.Encode(rec), nil)
}

// newestAbove returns the revision of a version (tombstones included) of a
// key in s above rev, or 0 if there is none.
func newestAbove(r pebble.Reader, s txnlock.Span, rev int64) (int64, error) {
	var found int64
	errFound := errors.New("found")
	err := mvcc.ChangesSince(r, s.Start, s.End, rev+1, func(c mvcc.Change) error {
		found = c.KV.ModRevision
		return errFound
	})
	if err != nil && !errors.Is(err, errFound) {
		return 0, fmt.Errorf("read versions of [%q, %q): %w", s.Start, s.End, err)
	}
	return found, nil
}

// checkTxnLocks fails a stamped command that names a key another
// transaction holds a lock on (LockedError), or that is stamped at or
// below the highest revision a transaction committed at in the range
// (TooOldError: a stamp handed out before that commit but appended after
// it may touch a key the transaction read at its read revision, which
// would then have changed before its commit). Nothing is checked while the
// range holds no lock and the stamp is above every commit revision:
// always, with one data range.
func (a *batch) checkTxnLocks(cmd raftcmd.Command, req any) (refused, err error) {
	stamp := int64(cmd.Revision)
	if a.locks.Len() == 0 && (stamp == 0 || stamp > a.maxCommit) {
		return nil, nil
	}
	spans, err := a.spansOf(req)
	if err != nil {
		return nil, err
	}
	for _, s := range spans {
		if l := a.locks.Conflict(s, 0); l != nil {
			return txnlock.Locked(l), nil
		}
	}
	if l := a.leaseConflict(req); l != nil {
		return txnlock.Locked(l), nil
	}
	if stamp != 0 && stamp <= a.maxCommit {
		// Stamped before a transaction committed here at maxCommit, it
		// may touch a key the transaction wrote, or only read: either
		// way it must come after it.
		return &txnlock.TooOldError{Stamp: stamp, Newer: a.maxCommit}, nil
	}
	return nil, nil
}

// spansOf returns the key spans a command reads or writes.
func (a *batch) spansOf(req any) ([]txnlock.Span, error) {
	var spans []txnlock.Span
	add := func(key, end []byte) {
		s, e := kv.RangeBounds(key, end)
		spans = append(spans, txnlock.Span{Start: s, End: e})
	}
	switch r := req.(type) {
	case *etcdpb.PutRequest:
		add(r.Key, nil)
	case *etcdpb.DeleteRangeRequest:
		add(r.Key, r.RangeEnd)
	case *etcdpb.TxnRequest:
		kv.TxnKeys(r, func(key, end []byte, _ int64) bool {
			add(key, end)
			return true
		})
	case *etcdpb.LeaseRevokeRequest:
		attached, err := lease.AttachedKeys(a.b, r.ID)
		if err != nil {
			return nil, err
		}
		for _, k := range attached {
			add(k, nil)
		}
	}
	return spans, nil
}

// elsewhere is the lease table as a range that does not keep it sees it
// when it makes the writes of a transaction across ranges: the first
// range checked the leases they name at the prewrite (and holds them
// until the commit), and records the keys attached.
type elsewhere struct{}

func (elsewhere) Exists(int64) (bool, error) { return true, nil }
func (elsewhere) Attach(int64, []byte) error { return nil }
func (elsewhere) Detach(int64, []byte) error { return nil }

// prewriteLeases checks a prewrite's holds on leases (txnlock.LeaseLock),
// in the range that keeps the lease table: no other transaction holds one
// of them in a way that excludes it, each lease exists, the user may use
// it (as a put naming the lease, or its revocation, is checked at apply),
// and a revocation knows every key attached to its lease.
func (a *batch) prewriteLeases(cmd raftcmd.Command, p *txnlock.Prewrite) (refused, err error) {
	if !a.m.keepsLeases() {
		return fmt.Errorf("prewrite of transaction %d holds leases in range %d, which keeps none", p.Txn, a.m.cfg.RangeID), nil
	}
	t := a.leases()
	for _, ll := range p.Leases {
		if l := a.locks.LeaseConflict(ll.ID, ll.Revoke, p.Txn); l != nil {
			return txnlock.Locked(l), nil
		}
		ok, err := t.Exists(ll.ID)
		if err != nil {
			return nil, err
		}
		if !ok {
			return rpctypes.ErrGRPCLeaseNotFound, nil
		}
		if cmd.AuthUser != "" {
			var req any = &etcdpb.PutRequest{Lease: ll.ID}
			if ll.Revoke {
				req = &etcdpb.LeaseRevokeRequest{ID: ll.ID}
			}
			if err := auth.CheckLeaseUse(a.b, a.sys.auth, cmd.AuthUser, req); err != nil {
				if _, ok := status.FromError(err); !ok {
					return nil, err
				}
				return err, nil
			}
		}
		if !ll.Revoke {
			continue
		}
		attached, err := lease.AttachedKeys(a.b, ll.ID)
		if err != nil {
			return nil, err
		}
		known := make(map[string]bool, len(ll.Known))
		for _, k := range ll.Known {
			known[string(k)] = true
		}
		for _, k := range attached {
			if !known[string(k)] {
				// Attached since the coordinator looked.
				return &txnlock.ConflictError{Txn: p.Txn, Newer: a.st.KV.Revision}, nil
			}
		}
	}
	return nil, nil
}

// revokeWrites returns the deletions a revocation of lease id makes of the
// keys of spans (single keys) that are attached to it now.
func (a *batch) revokeWrites(spans []txnlock.Span, id int64) []txnlock.Write {
	var out []txnlock.Write
	for _, s := range spans {
		if e, ok := a.m.index.Get(s.Start); ok && e.Lease == id {
			out = append(out, txnlock.Write{Key: s.Start, Delete: true})
		}
	}
	return out
}

// resolveLeases makes, at a transaction's commit, what its holds on leases
// do: the keys it put with a lease in other ranges are recorded as
// attached, and a lease it revokes goes, with all the table kept of it (its
// keys here are deleted by its writes; those in other ranges by their
// ranges' writes at the same revision). The services are told by a
// revocation command (tellRevoked), proposed once the transaction is done
// or by the range's leader.
func (a *batch) resolveLeases(l *txnlock.Locks) error {
	if len(l.Leases) == 0 {
		return nil
	}
	t := a.leases()
	for _, ll := range l.Leases {
		for _, k := range ll.Attach {
			if err := t.Attach(ll.ID, k); err != nil {
				return err
			}
		}
		if !ll.Revoke {
			continue
		}
		left, err := lease.AttachedKeys(a.b, ll.ID)
		if err != nil {
			return err
		}
		if err := t.Delete(ll.ID, left); err != nil {
			return err
		}
		a.out.Leases = append(a.out.Leases, rangesm.LeaseChange{Kind: rangesm.LeaseRevoked, ID: ll.ID})
		if len(a.m.cfg.Extensions) > 0 {
			if err := a.b.Set(keys.LeaseHooksKey(a.m.cfg.RangeID, ll.ID), nil, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// leaseConflict returns the locks of a transaction holding a lease that a
// command names in a way the command must wait for: a put attaching a key
// to a lease being revoked, or a revocation of a lease a transaction
// attaches keys to or revokes.
func (a *batch) leaseConflict(req any) *txnlock.Locks {
	if !a.m.keepsLeases() {
		return nil
	}
	var l *txnlock.Locks
	switch r := req.(type) {
	case *etcdpb.PutRequest:
		if r.Lease != 0 {
			l = a.locks.LeaseConflict(r.Lease, false, 0)
		}
	case *etcdpb.TxnRequest:
		kv.TxnKeys(r, func(_, _ []byte, id int64) bool {
			if id != 0 {
				l = a.locks.LeaseConflict(id, false, 0)
			}
			return l == nil
		})
	case *etcdpb.LeaseRevokeRequest:
		l = a.locks.LeaseConflict(r.ID, true, 0)
	}
	return l
}
