package datarange

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangesm"
	"github.com/synod-io/synod/internal/txnlock"
)

// txnRange is a data range's machine over a fresh store, for the commands
// of transactions across ranges.
type txnRange struct {
	t     *testing.T
	db    *pebble.DB
	m     *Machine
	st    rangesm.AppliedState
	index uint64
	// start and end bound the range's keys.
	start, end []byte
	// id is the range's ID (0: the first data range's).
	id keys.RangeID
	// exts are the range's extensions.
	exts []Extension
}

func newTxnRange(t *testing.T) *txnRange { return newTxnRangeOver(t, nil, nil) }

// newTxnRangeOver is newTxnRange for a range over [start, end).
func newTxnRangeOver(t *testing.T, start, end []byte) *txnRange {
	t.Helper()
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r := &txnRange{t: t, db: db, st: rangesm.AppliedState{KV: kv.Meta{Revision: 1}}, index: 10, start: start, end: end}
	r.m = r.open()
	return r
}

func (r *txnRange) rangeID() keys.RangeID {
	if r.id == 0 {
		return keys.FirstDataRangeID
	}
	return r.id
}

// open returns a machine loaded from the store (as at a restart).
func (r *txnRange) open() *Machine {
	r.t.Helper()
	m, err := New(Config{RangeID: r.rangeID(), NodeID: 1, DB: r.db, Start: r.start, End: r.end, Extensions: r.exts})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := m.Load(r.db, &r.st); err != nil {
		r.t.Fatal(err)
	}
	return m
}

// apply applies one command in a batch of its own.
func (r *txnRange) apply(kind raftcmd.Kind, payload []byte, stamp int64) (Result, rangesm.Effects) {
	r.t.Helper()
	r.index++
	res, out := applyBatch(r.t, r.db, r.m, &r.st, r.index, raftcmd.Command{RangeID: r.rangeID(), Proposer: 1, RequestID: r.index, Kind: kind, Payload: payload, Revision: uint64(stamp)})
	return res[0], out
}

func (r *txnRange) put(key, value string, stamp int64) error {
	r.t.Helper()
	res, _ := r.apply(raftcmd.KindPut, mustMarshal(r.t, &etcdpb.PutRequest{Key: []byte(key), Value: []byte(value)}), stamp)
	return res.Err
}

func (r *txnRange) txnCmd(kind raftcmd.Kind, cmd any) (Result, rangesm.Effects) {
	r.t.Helper()
	return r.apply(kind, txnlock.EncodeCommand(cmd), 0)
}

func (r *txnRange) get(key string) string {
	r.t.Helper()
	kv, err := mvcc.Get(r.db, []byte(key), 1<<60)
	if err != nil {
		r.t.Fatal(err)
	}
	if kv == nil {
		return "<none>"
	}
	return string(kv.Value) + "@" + itoa(kv.ModRevision)
}

func itoa(v int64) string {
	if v == 0 {
		return "0"
	}
	var b []byte
	for ; v > 0; v /= 10 {
		b = append([]byte{byte('0' + v%10)}, b...)
	}
	return string(b)
}

func point(key string) txnlock.Span {
	s, e := kv.RangeBounds([]byte(key), nil)
	return txnlock.Span{Start: s, End: e}
}

func prewrite(txn int64, primary string, isPrimary bool, deadline int64, spans []txnlock.Span, writes ...txnlock.Write) *txnlock.Prewrite {
	return &txnlock.Prewrite{Locks: txnlock.Locks{Txn: txn, Primary: []byte(primary), Deadline: deadline, Spans: spans, Writes: writes}, IsPrimary: isPrimary}
}

func isErr[E error](err error) bool {
	var e E
	return errors.As(err, &e)
}

// TestTxnLocksHoldAndCommit walks one transaction through a range: its
// prewrite locks its keys against other transactions and the range's own
// writes, refuses keys changed after its read revision, and its commit
// makes its writes at the commit revision, below the range's revision,
// without moving the range's revision, then refuses a write stamped below
// it on those keys.
func TestTxnLocksHoldAndCommit(t *testing.T) {
	r := newTxnRange(t)
	if err := r.put("a", "0", 5); err != nil {
		t.Fatal(err)
	}
	if err := r.put("c", "0", 7); err != nil {
		t.Fatal(err)
	}

	// A key changed after the read revision refuses the prewrite.
	res, _ := r.txnCmd(raftcmd.KindTxnPrewrite, prewrite(6, "a", true, 1000, []txnlock.Span{point("a"), point("c")}))
	if !isErr[*txnlock.ConflictError](res.Err) {
		t.Fatalf("prewrite at 6 over c (changed at 7): got %v, want a ConflictError", res.Err)
	}
	if n := Locks(r.m.Published()).Len(); n != 0 {
		t.Fatalf("locks after a refused prewrite: got %d, want 0", n)
	}

	// Transaction 8 reads a and b, writes a.
	res, out := r.txnCmd(raftcmd.KindTxnPrewrite, prewrite(8, "a", true, 1000, []txnlock.Span{point("a"), point("b")},
		txnlock.Write{Key: []byte("a"), Value: []byte("t8")}))
	if res.Err != nil {
		t.Fatalf("prewrite of 8: %v", res.Err)
	}
	if !out.TxnLocksChanged || out.TxnLockFloor != 8 {
		t.Fatalf("effects of the prewrite: locks changed %v, floor %d; want true, 8", out.TxnLocksChanged, out.TxnLockFloor)
	}
	// Another transaction over b, and the range's own writes of a and b,
	// meet its locks; c is free.
	res, _ = r.txnCmd(raftcmd.KindTxnPrewrite, prewrite(9, "b", true, 1000, []txnlock.Span{{Start: []byte("b"), End: []byte("c")}}))
	if le := (*txnlock.LockedError)(nil); !errors.As(res.Err, &le) || le.Txn != 8 || string(le.Primary) != "a" {
		t.Fatalf("prewrite of 9 over [b, c): got %v, want locked by 8 with primary a", res.Err)
	}
	if err := r.put("b", "x", 10); !isErr[*txnlock.LockedError](err) {
		t.Fatalf("put of locked b: got %v, want a LockedError", err)
	}
	if err := r.put("c", "1", 12); err != nil {
		t.Fatalf("put of c, which no one locked: %v", err)
	}
	if got := r.st.KV.Revision; got != 12 {
		t.Fatalf("range revision: got %d, want 12", got)
	}

	// A commit at or below the locks' floor is refused; at 11 (below the
	// range's 12) it makes the write there.
	res, _ = r.txnCmd(raftcmd.KindTxnCommit, &txnlock.Commit{Txn: 8, Primary: []byte("a"), Rev: 8})
	if res.Err == nil {
		t.Fatal("commit at the read revision: got no error")
	}
	res, out = r.txnCmd(raftcmd.KindTxnCommit, &txnlock.Commit{Txn: 8, Primary: []byte("a"), Rev: 11})
	if res.Err != nil {
		t.Fatalf("commit of 8 at 11: %v", res.Err)
	}
	if rec, ok := res.Resp.(txnlock.Record); !ok || rec.Status != txnlock.Committed || rec.CommitRev != 11 {
		t.Fatalf("record after the commit: got %v, want committed at 11", res.Resp)
	}
	if got := r.get("a"); got != "t8@11" {
		t.Fatalf("a after the commit: got %s, want t8@11", got)
	}
	if len(out.Events) != 1 || out.Events[0].KV.ModRevision != 11 || out.Events[0].PrevKV.GetModRevision() != 5 {
		t.Fatalf("events of the commit: got %v, want a put at 11 over the version at 5", out.Events)
	}
	if !out.TxnLocksChanged || out.TxnLockFloor != 0 || Locks(r.m.Published()).Len() != 0 {
		t.Fatalf("locks after the commit: changed %v, floor %d, %d held; want none", out.TxnLocksChanged, out.TxnLockFloor, Locks(r.m.Published()).Len())
	}
	if got := r.st.KV.Revision; got != 12 {
		t.Fatalf("range revision after a commit below it: got %d, want 12 (it follows the stamps)", got)
	}
	if e, ok := Index(r.m.Published()).Get([]byte("a")); !ok || e.ModRevision != 11 || e.Version != 2 {
		t.Fatalf("index entry of a: got %+v (live %v), want version 2 at 11", e, ok)
	}
	// Committing again answers the same; once forgotten, the record is
	// gone, and a commit of it fails.
	if res, _ = r.txnCmd(raftcmd.KindTxnCommit, &txnlock.Commit{Txn: 8, Primary: []byte("a"), Rev: 11}); res.Err != nil {
		t.Fatalf("commit proposed again: %v", res.Err)
	}
	if res, _ = r.txnCmd(raftcmd.KindTxnResolve, &txnlock.Resolve{Txn: 8, Forget: true}); res.Err != nil {
		t.Fatalf("forget 8: %v", res.Err)
	}
	if _, ok, err := (&batch{m: r.m, b: r.db.NewIndexedBatch()}).record(8); err != nil || ok {
		t.Fatalf("record of 8 after it was forgotten: found %v (%v), want none", ok, err)
	}
	if got := r.get("a"); got != "t8@11" {
		t.Fatalf("a after its record was forgotten: got %s, want t8@11", got)
	}

	// Transaction 13 commits a at 15, above the range's revision: a write
	// stamped 14 must take a new stamp (also after a restart), whichever
	// key it names (the transaction may have read it), and one stamped 16
	// goes.
	if res, _ = r.txnCmd(raftcmd.KindTxnPrewrite, prewrite(13, "a", true, 1000, []txnlock.Span{point("a")}, txnlock.Write{Key: []byte("a"), Value: []byte("t13")})); res.Err != nil {
		t.Fatalf("prewrite of 13: %v", res.Err)
	}
	if res, _ = r.txnCmd(raftcmd.KindTxnCommit, &txnlock.Commit{Txn: 13, Primary: []byte("a"), Rev: 15}); res.Err != nil {
		t.Fatalf("commit of 13 at 15: %v", res.Err)
	}
	r.m = r.open()
	if err := r.put("a", "late", 14); !isErr[*txnlock.TooOldError](err) {
		t.Fatalf("put of a stamped 14, below its commit at 15: got %v, want a TooOldError", err)
	}
	if err := r.put("b", "late", 14); !isErr[*txnlock.TooOldError](err) {
		t.Fatalf("put of b stamped 14, below a commit at 15: got %v, want a TooOldError", err)
	}
	if err := r.put("a", "new", 16); err != nil {
		t.Fatalf("put of a stamped 16: %v", err)
	}
	if got := r.get("a"); got != "new@16" {
		t.Fatalf("a: got %s, want new@16", got)
	}
}

// TestTxnPushAbortsAndResolves checks the record's answers: pending before
// its deadline, aborted after it (its locks in the range go), aborted when
// missing (a late prewrite of the primary then fails), and that locks
// survive a restart and are dropped by an aborting resolve.
func TestTxnPushAbortsAndResolves(t *testing.T) {
	r := newTxnRange(t)
	res, _ := r.txnCmd(raftcmd.KindTxnPrewrite, prewrite(20, "p", true, 1000, []txnlock.Span{point("p")}, txnlock.Write{Key: []byte("p"), Value: []byte("v")}))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	res, _ = r.txnCmd(raftcmd.KindTxnPrewrite, prewrite(21, "elsewhere", false, 1000, []txnlock.Span{point("s")}, txnlock.Write{Key: []byte("s"), Delete: true}))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	// The locks survive a restart.
	r.m = r.open()
	if got := Locks(r.m.Published()); got.Len() != 2 || got.Floor() != 20 {
		t.Fatalf("locks after a restart: %d with floor %d, want 2 with floor 20", got.Len(), got.Floor())
	}

	push := func(txn int64, primary string, now int64, abort bool) txnlock.Record {
		t.Helper()
		res, _ := r.txnCmd(raftcmd.KindTxnPush, &txnlock.Push{Txn: txn, Primary: []byte(primary), Now: now, Abort: abort})
		if res.Err != nil {
			t.Fatalf("push of %d: %v", txn, res.Err)
		}
		return res.Resp.(txnlock.Record)
	}
	if rec := push(20, "p", 999, false); rec.Status != txnlock.Pending {
		t.Fatalf("push before the deadline: got %v, want pending", rec.Status)
	}
	if rec := push(20, "p", 1001, false); rec.Status != txnlock.Aborted {
		t.Fatalf("push after the deadline: got %v, want aborted", rec.Status)
	}
	if l := Locks(r.m.Published()); l.Get(20) != nil || l.Len() != 1 {
		t.Fatalf("locks after the abort: %d held (20's: %v), want only 21's", l.Len(), l.Get(20))
	}
	res, _ = r.txnCmd(raftcmd.KindTxnCommit, &txnlock.Commit{Txn: 20, Primary: []byte("p"), Rev: 30})
	if !isErr[*txnlock.AbortedError](res.Err) {
		t.Fatalf("commit of an aborted transaction: got %v, want an AbortedError", res.Err)
	}
	if got := r.get("p"); got != "<none>" {
		t.Fatalf("p after the abort: got %s, want none", got)
	}

	// A transaction with no record is recorded aborted: its primary's
	// prewrite, arriving late, fails.
	pushLock := func(txn int64, primary string, now, deadline int64) txnlock.Record {
		t.Helper()
		res, _ := r.txnCmd(raftcmd.KindTxnPush, &txnlock.Push{Txn: txn, Primary: []byte(primary), Now: now, Deadline: deadline})
		if res.Err != nil {
			t.Fatalf("push of %d: %v", txn, res.Err)
		}
		return res.Resp.(txnlock.Record)
	}
	if rec := pushLock(22, "q", 500, 1000); rec.Status != txnlock.Pending {
		t.Fatalf("push of a transaction without a record, before its lock's deadline: got %v, want pending", rec.Status)
	}
	if rec := pushLock(22, "q", 1001, 1000); rec.Status != txnlock.Aborted {
		t.Fatalf("push of a transaction without a record, past its lock's deadline: got %v, want aborted", rec.Status)
	}
	res, _ = r.txnCmd(raftcmd.KindTxnPrewrite, prewrite(22, "q", true, 1000, []txnlock.Span{point("q")}))
	if !isErr[*txnlock.AbortedError](res.Err) {
		t.Fatalf("late prewrite of an aborted primary: got %v, want an AbortedError", res.Err)
	}

	// An aborting resolve drops 21's locks and writes nothing.
	res, out := r.txnCmd(raftcmd.KindTxnResolve, &txnlock.Resolve{Txn: 21})
	if res.Err != nil || !out.TxnLocksChanged || len(out.Events) != 0 || Locks(r.m.Published()).Len() != 0 {
		t.Fatalf("aborting resolve: err %v, locks changed %v, %d events, %d locks left; want no error, a change, no event, none left",
			res.Err, out.TxnLocksChanged, len(out.Events), Locks(r.m.Published()).Len())
	}
}

// TestTxnPrewriteSeesOnlyItsRange: a prewrite's span may reach past its
// range; the keys of other ranges, which share the store and which each
// replica may have applied to a different point, must not decide it (a
// review found replicas disagreeing on one prewrite).
func TestTxnPrewriteSeesOnlyItsRange(t *testing.T) {
	r := newTxnRangeOver(t, nil, []byte("m"))
	// Another range's key, written above the transaction's read revision.
	b := r.db.NewBatch()
	if _, err := mvcc.PutNew(b, []byte("x"), []byte("other"), 0, 30, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	res, _ := r.txnCmd(raftcmd.KindTxnPrewrite, prewrite(20, "a", true, 1000, []txnlock.Span{{Start: []byte("a"), End: []byte("z")}}))
	if res.Err != nil {
		t.Fatalf("prewrite of [a, z) in range [, m) with x changed at 30 in another range: %v", res.Err)
	}
	l := Locks(r.m.Published()).Get(20)
	if l == nil || len(l.Spans) != 1 || string(l.Spans[0].End) != "m" {
		t.Fatalf("locks taken: got %+v, want [a, m)", l)
	}
	if err := r.put("n", "v", 40); err == nil {
		t.Fatal("put of n, outside the range: got no error")
	}
}

// TestTxnPrewriteAuthFence: a prewrite authorized in an auth state older
// than the range's copy is refused with etcd's ErrGRPCAuthOldRevision (the
// client's request is then checked again), as is one authorized with auth
// disabled once it is enabled; one at the current auth revision applies.
func TestTxnPrewriteAuthFence(t *testing.T) {
	r := newTxnRange(t)
	mirror, err := auth.EncodeMirror(&auth.State{Enabled: true, Revision: 5})
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := r.apply(raftcmd.KindSystemState, raftcmd.EncodeSystemState(raftcmd.SystemState{Index: 3, AuthMirror: mirror}), 0); res.Err != nil {
		t.Fatal(res.Err)
	}
	pw := func(txn int64, rev uint64, user string, noLogin bool) error {
		t.Helper()
		r.index++
		cmd := raftcmd.Command{RangeID: 2, Proposer: 1, RequestID: r.index, Kind: raftcmd.KindTxnPrewrite,
			Payload:      txnlock.EncodeCommand(prewrite(txn, "a", true, 1<<50, []txnlock.Span{point("a")}, txnlock.Write{Key: []byte("a"), Value: []byte("v")})),
			AuthRevision: rev, AuthUser: user, AuthNoLogin: noLogin}
		res, _ := applyBatch(r.t, r.db, r.m, &r.st, r.index, cmd)
		return res[0].Err
	}
	if err := pw(10, 4, "u", false); !errors.Is(err, rpctypes.ErrGRPCAuthOldRevision) {
		t.Fatalf("prewrite checked at auth revision 4, the range at 5: got %v, want ErrGRPCAuthOldRevision", err)
	}
	if err := pw(11, 0, "", true); !errors.Is(err, rpctypes.ErrGRPCAuthOldRevision) {
		t.Fatalf("prewrite checked with auth disabled, now enabled: got %v, want ErrGRPCAuthOldRevision", err)
	}
	if err := pw(12, 5, "u", false); err != nil {
		t.Fatalf("prewrite checked at the range's auth revision: got %v, want it applied", err)
	}
	if r.m.locks.Get(12) == nil || r.m.locks.Get(10) != nil || r.m.locks.Get(11) != nil {
		t.Fatalf("locks: got txn 10 %v, 11 %v, 12 %v, want only 12's", r.m.locks.Get(10) != nil, r.m.locks.Get(11) != nil, r.m.locks.Get(12) != nil)
	}
}
