package datarange

import (
	"errors"
	"fmt"
	"testing"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/lease"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangesm"
	"github.com/synod-io/synod/internal/txnlock"
)

// TestLeaseKeysInAnotherRange runs the first range's part of leases whose
// keys lie in another range (no network; the two ranges share one store, as
// on a node): a transaction attaching a key of the other range holds the
// lease shared, so that a revocation (a command or a transaction) waits for
// it, and records the key at its commit; the first range then refuses to
// revoke the lease alone; a revoking transaction holds it exclusively
// (attaching puts wait), must know every attached key, deletes in the
// other range the keys still attached when its prewrite applies, and at
// its commit the lease and the table's record of its keys go. A lease that
// is gone fails a prewrite with etcd's "requested lease not found".
func TestLeaseKeysInAnotherRange(t *testing.T) {
	first, other := newLeaseRanges(t)
	if res, _ := first.apply(raftcmd.KindPut, mustMarshal(t, &etcdpb.PutRequest{Key: []byte("a"), Value: []byte("v"), Lease: 7}), 2); res.Err != nil {
		t.Fatal(res.Err)
	}
	// A range that keeps no lease refuses a put naming one.
	if res, _ := other.apply(raftcmd.KindPut, mustMarshal(t, &etcdpb.PutRequest{Key: []byte("x"), Value: []byte("v"), Lease: 7}), 3); !errors.Is(res.Err, rpctypes.ErrGRPCLeaseNotFound) {
		t.Fatalf("put with a lease in another range: got %v, want lease not found", res.Err)
	}

	// Transaction 10 puts x (in the other range, its primary) with lease 7.
	put := txnlock.Write{Key: []byte("x"), Value: []byte("t"), Lease: 7}
	if res, _ := other.txnCmd(raftcmd.KindTxnPrewrite, prewrite(10, "x", true, 1<<50, []txnlock.Span{point("x")}, put)); res.Err != nil {
		t.Fatal(res.Err)
	}
	attach := &txnlock.Prewrite{Locks: txnlock.Locks{Txn: 10, Primary: []byte("x"), Deadline: 1 << 50, Leases: []txnlock.LeaseLock{{ID: 7, Attach: [][]byte{[]byte("x")}}}}}
	if res, _ := first.txnCmd(raftcmd.KindTxnPrewrite, attach); res.Err != nil {
		t.Fatalf("prewrite holding lease 7: %v", res.Err)
	}
	// Shared: another put with the lease goes on; a revocation waits.
	if res, _ := first.apply(raftcmd.KindPut, mustMarshal(t, &etcdpb.PutRequest{Key: []byte("b"), Value: []byte("v"), Lease: 7}), 3); res.Err != nil {
		t.Fatalf("put with a lease a transaction attaches to: %v", res.Err)
	}
	revokeCmd := mustMarshal(t, &etcdpb.LeaseRevokeRequest{ID: 7})
	if res, _ := first.apply(raftcmd.KindLeaseRevoke, revokeCmd, 4); !isErr[*txnlock.LockedError](res.Err) {
		t.Fatalf("revocation while a transaction attaches a key: got %v, want LockedError", res.Err)
	}
	revoke := func(txn int64, known ...string) *txnlock.Prewrite {
		var ks [][]byte
		var spans []txnlock.Span
		for _, k := range known {
			ks = append(ks, []byte(k))
			if k < "m" {
				spans = append(spans, point(k))
			}
		}
		return &txnlock.Prewrite{Locks: txnlock.Locks{Txn: txn, Primary: []byte{}, Deadline: 1 << 50, Spans: spans, RevokeLease: 7,
			Leases: []txnlock.LeaseLock{{ID: 7, Revoke: true, Known: ks}}}, IsPrimary: true}
	}
	if res, _ := first.txnCmd(raftcmd.KindTxnPrewrite, revoke(11, "a", "b")); !isErr[*txnlock.LockedError](res.Err) {
		t.Fatalf("revoking prewrite while a transaction attaches a key: got %v, want LockedError", res.Err)
	}

	// Transaction 10 commits at 12: x carries the lease, and the table
	// records it.
	if res, _ := other.txnCmd(raftcmd.KindTxnCommit, &txnlock.Commit{Txn: 10, Primary: []byte("x"), Rev: 12}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res, _ := first.txnCmd(raftcmd.KindTxnResolve, &txnlock.Resolve{Txn: 10, Rev: 12}); res.Err != nil {
		t.Fatal(res.Err)
	}
	attached, err := lease.AttachedKeys(first.db, 7)
	if err != nil || string(joinKeys(attached)) != "a,b,x" {
		t.Fatalf("keys attached to lease 7: got %q (%v), want a,b,x", joinKeys(attached), err)
	}
	if e, ok := Index(other.m.Published()).Get([]byte("x")); !ok || e.Lease != 7 || e.ModRevision != 12 {
		t.Fatalf("x in the other range: got %+v (%v), want lease 7 at 12", e, ok)
	}

	// The first range cannot revoke it alone now.
	if res, _ := first.apply(raftcmd.KindLeaseRevoke, revokeCmd, 13); !errors.Is(res.Err, ErrLeaseSpansRanges) {
		t.Fatalf("revocation of a lease with a key in another range: got %v, want ErrLeaseSpansRanges", res.Err)
	}
	// A revocation that does not know x runs again.
	if res, _ := first.txnCmd(raftcmd.KindTxnPrewrite, revoke(14, "a", "b")); !isErr[*txnlock.ConflictError](res.Err) {
		t.Fatalf("revoking prewrite missing a key: got %v, want ConflictError", res.Err)
	}
	if res, _ := first.txnCmd(raftcmd.KindTxnPrewrite, revoke(15, "a", "b", "x")); res.Err != nil {
		t.Fatalf("revoking prewrite: %v", res.Err)
	}
	// Exclusive: a put attaching a key to the lease waits, a transaction
	// attaching one too.
	if res, _ := first.apply(raftcmd.KindPut, mustMarshal(t, &etcdpb.PutRequest{Key: []byte("c"), Value: []byte("v"), Lease: 7}), 16); !isErr[*txnlock.LockedError](res.Err) {
		t.Fatalf("put with a lease being revoked: got %v, want LockedError", res.Err)
	}
	attach.Txn = 17
	if res, _ := first.txnCmd(raftcmd.KindTxnPrewrite, attach); !isErr[*txnlock.LockedError](res.Err) {
		t.Fatalf("prewrite attaching to a lease being revoked: got %v, want LockedError", res.Err)
	}
	// In the other range, x is deleted at the commit: still attached.
	otherPart := &txnlock.Prewrite{Locks: txnlock.Locks{Txn: 15, Primary: []byte{}, Deadline: 1 << 50, Spans: []txnlock.Span{point("x")}, RevokeLease: 7}}
	if res, _ := other.txnCmd(raftcmd.KindTxnPrewrite, otherPart); res.Err != nil {
		t.Fatal(res.Err)
	}
	if l := Locks(other.m.Published()).Get(15); l == nil || len(l.Writes) != 1 || string(l.Writes[0].Key) != "x" || !l.Writes[0].Delete {
		t.Fatalf("the revocation's writes in the other range: got %+v, want the deletion of x", l)
	}

	res, out := first.txnCmd(raftcmd.KindTxnCommit, &txnlock.Commit{Txn: 15, Primary: []byte{}, Rev: 20})
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if len(out.Leases) != 1 || out.Leases[0].Kind != rangesm.LeaseRevoked || out.Leases[0].ID != 7 {
		t.Fatalf("lease changes of the commit: got %+v, want lease 7 revoked", out.Leases)
	}
	if len(out.Events) != 2 || out.Events[0].KV.ModRevision != 20 || out.Events[1].KV.ModRevision != 20 {
		t.Fatalf("events of the commit in the first range: got %v, want the deletions of a and b at 20", out.Events)
	}
	if res, out := other.txnCmd(raftcmd.KindTxnResolve, &txnlock.Resolve{Txn: 15, Rev: 20}); res.Err != nil || len(out.Events) != 1 || string(out.Events[0].KV.Key) != "x" || out.Events[0].KV.ModRevision != 20 {
		t.Fatalf("resolve in the other range: got %v, events %v; want the deletion of x at 20", res.Err, out.Events)
	}
	if ok, err := first.m.leasesExist(7); err != nil || ok {
		t.Fatalf("lease 7 after its revocation: exists %v (%v)", ok, err)
	}
	if attached, _ := lease.AttachedKeys(first.db, 7); len(attached) != 0 {
		t.Fatalf("keys attached to a revoked lease: %q", joinKeys(attached))
	}
	for _, k := range []string{"a", "b", "x"} {
		r := first
		if k > "m" {
			r = other
		}
		if got := r.get(k); got != "<none>" {
			t.Fatalf("%s after the revocation: got %s, want none", k, got)
		}
	}
	attach.Txn = 21
	if res, _ := first.txnCmd(raftcmd.KindTxnPrewrite, attach); !errors.Is(res.Err, rpctypes.ErrGRPCLeaseNotFound) {
		t.Fatalf("prewrite attaching to a revoked lease: got %v, want lease not found", res.Err)
	}
}

// TestLeaseRevokedAcrossRangesTellsServices: a transaction that revokes a
// lease marks it for the services (extensions), which a revocation command
// of kind KindLeaseRevoked tells, once.
func TestLeaseRevokedAcrossRangesTellsServices(t *testing.T) {
	first := newTxnRangeOver(t, nil, []byte("m"))
	x := &tally{}
	first.exts = []Extension{x}
	first.m = first.open()
	if res, _ := first.apply(raftcmd.KindLeaseGrant, mustMarshal(t, &etcdpb.LeaseGrantRequest{ID: 7, TTL: 10}), 0); res.Err != nil {
		t.Fatal(res.Err)
	}
	revoke := &txnlock.Prewrite{Locks: txnlock.Locks{Txn: 3, Primary: []byte{}, Deadline: 1 << 50, RevokeLease: 7,
		Leases: []txnlock.LeaseLock{{ID: 7, Revoke: true}}}, IsPrimary: true}
	if res, _ := first.txnCmd(raftcmd.KindTxnPrewrite, revoke); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res, _ := first.txnCmd(raftcmd.KindTxnCommit, &txnlock.Commit{Txn: 3, Primary: []byte{}, Rev: 4}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if ids, err := LeasesToTell(first.db, keys.FirstDataRangeID); err != nil || fmt.Sprint(ids) != "[7]" || len(x.revoked) != 0 {
		t.Fatalf("after the commit: leases to tell %v (%v), told %v; want [7], none told", ids, err, x.revoked)
	}
	tell := mustMarshal(t, &etcdpb.LeaseRevokeRequest{ID: 7})
	for i, stamp := range []int64{5, 6} {
		if res, _ := first.apply(raftcmd.KindLeaseRevoked, tell, stamp); res.Err != nil {
			t.Fatalf("tell %d: %v", i, res.Err)
		}
		if ids, err := LeasesToTell(first.db, keys.FirstDataRangeID); err != nil || len(ids) != 0 || fmt.Sprint(x.revoked) != "[7]" {
			t.Fatalf("after tell %d: leases to tell %v (%v), told %v; want none, [7]", i, ids, err, x.revoked)
		}
	}
}

// newLeaseRanges returns the first data range, [, m), with exts, and
// another, [m, ...), over one store, with lease 7 granted.
func newLeaseRanges(t *testing.T, exts ...Extension) (first, other *txnRange) {
	t.Helper()
	first = newTxnRangeOver(t, nil, []byte("m"))
	if len(exts) > 0 {
		first.exts = exts
		first.m = first.open()
	}
	other = &txnRange{t: t, db: first.db, st: rangesm.AppliedState{KV: kv.Meta{Revision: 1}}, index: 10, start: []byte("m"), id: 9}
	other.m = other.open()
	if res, _ := first.apply(raftcmd.KindLeaseGrant, mustMarshal(t, &etcdpb.LeaseGrantRequest{ID: 7, TTL: 10}), 0); res.Err != nil {
		t.Fatal(res.Err)
	}
	return first, other
}

// attachInOther runs transaction txn, which puts keys of the other range
// with lease 7 (the first key its primary), to its commit at rev and its
// resolution in the first range.
func attachInOther(t *testing.T, first, other *txnRange, txn, rev int64, keys ...string) {
	t.Helper()
	var spans []txnlock.Span
	var puts []txnlock.Write
	var attach [][]byte
	for _, k := range keys {
		spans = append(spans, point(k))
		puts = append(puts, txnlock.Write{Key: []byte(k), Value: []byte("t"), Lease: 7})
		attach = append(attach, []byte(k))
	}
	if res, _ := other.txnCmd(raftcmd.KindTxnPrewrite, prewrite(txn, keys[0], true, 1<<50, spans, puts...)); res.Err != nil {
		t.Fatal(res.Err)
	}
	held := &txnlock.Prewrite{Locks: txnlock.Locks{Txn: txn, Primary: []byte(keys[0]), Deadline: 1 << 50, Leases: []txnlock.LeaseLock{{ID: 7, Attach: attach}}}}
	if res, _ := first.txnCmd(raftcmd.KindTxnPrewrite, held); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res, _ := other.txnCmd(raftcmd.KindTxnCommit, &txnlock.Commit{Txn: txn, Primary: []byte(keys[0]), Rev: rev}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res, _ := first.txnCmd(raftcmd.KindTxnResolve, &txnlock.Resolve{Txn: txn, Rev: rev}); res.Err != nil {
		t.Fatal(res.Err)
	}
}

func joinKeys(ks [][]byte) []byte {
	var out []byte
	for i, k := range ks {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, k...)
	}
	return out
}

// leasesExist reports whether lease id exists in the machine's table (in
// memory, as apply sees it).
func (m *Machine) leasesExist(id int64) (bool, error) {
	return lease.Table{RW: m.cfg.DB, TTLs: m.leaseTTLs}.Exists(id)
}

// leasedPut is a toy extension whose command puts the key its payload
// names with lease 7, through the KV applier, as the rate limiters'
// acquire puts a permit with the client's lease.
type leasedPut struct{ tally }

func (x *leasedPut) Apply(env *Env, cmd raftcmd.Command) (Result, error) {
	resp, err := env.KV.Put(&etcdpb.PutRequest{Key: cmd.Payload, Value: []byte("p"), Lease: 7})
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return Result{Err: err}, nil
		}
		return Result{}, err
	}
	return Result{Resp: resp}, nil
}

// TestExtensionLeaseUseWaitsForRevocation: a service's command (a rate
// limiter's permit, a job queue's put) that attaches a key to a lease a
// transaction across ranges is revoking waits for the revocation, as a
// put does: attached in between, the key would outlive the lease (the
// revocation's deletions were computed at its prewrite, and the commit
// drops the table's record of every key attached to the lease).
func TestExtensionLeaseUseWaitsForRevocation(t *testing.T) {
	first, other := newLeaseRanges(t, &leasedPut{})
	// Transaction 10 puts x, in the other range, with lease 7.
	attachInOther(t, first, other, 10, 12, "x")

	// Transaction 15 revokes lease 7: its prewrites hold the lease and x.
	revoke := &txnlock.Prewrite{Locks: txnlock.Locks{Txn: 15, Primary: []byte{}, Deadline: 1 << 50, RevokeLease: 7,
		Leases: []txnlock.LeaseLock{{ID: 7, Revoke: true, Known: [][]byte{[]byte("x")}}}}, IsPrimary: true}
	if res, _ := first.txnCmd(raftcmd.KindTxnPrewrite, revoke); res.Err != nil {
		t.Fatal(res.Err)
	}
	otherPart := &txnlock.Prewrite{Locks: txnlock.Locks{Txn: 15, Primary: []byte{}, Deadline: 1 << 50, Spans: []txnlock.Span{point("x")}, RevokeLease: 7}}
	if res, _ := other.txnCmd(raftcmd.KindTxnPrewrite, otherPart); res.Err != nil {
		t.Fatal(res.Err)
	}
	// The service's command waits.
	if res, _ := first.apply(raftcmd.KindQueueFirst, []byte("p"), 16); !isErr[*txnlock.LockedError](res.Err) {
		t.Fatalf("service's put with a lease being revoked: got %v, want LockedError", res.Err)
	}
	if res, _ := first.txnCmd(raftcmd.KindTxnCommit, &txnlock.Commit{Txn: 15, Primary: []byte{}, Rev: 20}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res, _ := other.txnCmd(raftcmd.KindTxnResolve, &txnlock.Resolve{Txn: 15, Rev: 20}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := first.get("p"); got != "<none>" {
		e, _ := Index(first.m.Published()).Get([]byte("p"))
		t.Fatalf("p after lease 7's revocation: got %s (lease %d), want none", got, e.Lease)
	}
	// Proposed again, it finds the lease gone.
	if res, _ := first.apply(raftcmd.KindQueueFirst, []byte("p"), 21); !errors.Is(res.Err, rpctypes.ErrGRPCLeaseNotFound) {
		t.Fatalf("service's put with a revoked lease: got %v, want lease not found", res.Err)
	}
}

// TestRevocationIgnoresVersionsAboveItsRead: a revocation across ranges
// reads nothing at its read revision (each range decides at its prewrite
// which keys are still attached, and its locks keep them so), so a
// version of a key it names written since does not fail its prewrite:
// with one, a key once put with the lease and now written often without
// it (the table's record of it stays until the lease goes) kept the lease,
// and every key attached to it, from being revoked while the writes went
// on.
func TestRevocationIgnoresVersionsAboveItsRead(t *testing.T) {
	first, other := newLeaseRanges(t)
	// Transaction 10 puts x and y, in the other range, with lease 7.
	attachInOther(t, first, other, 10, 12, "x", "y")
	// The revocation reads at 15; y is written at 17, without the lease
	// (the table keeps its record until the lease goes).
	if err := other.put("y", "u", 17); err != nil {
		t.Fatal(err)
	}
	revoke := &txnlock.Prewrite{Locks: txnlock.Locks{Txn: 15, Primary: []byte{}, Deadline: 1 << 50, RevokeLease: 7,
		Leases: []txnlock.LeaseLock{{ID: 7, Revoke: true, Known: [][]byte{[]byte("x"), []byte("y")}}}}, IsPrimary: true}
	if res, _ := first.txnCmd(raftcmd.KindTxnPrewrite, revoke); res.Err != nil {
		t.Fatal(res.Err)
	}
	otherPart := &txnlock.Prewrite{Locks: txnlock.Locks{Txn: 15, Primary: []byte{}, Deadline: 1 << 50, Spans: []txnlock.Span{point("x"), point("y")}, RevokeLease: 7}}
	if res, _ := other.txnCmd(raftcmd.KindTxnPrewrite, otherPart); res.Err != nil {
		t.Fatalf("revoking prewrite in the other range after writes above its read revision: got %v, want none", res.Err)
	}
	if res, _ := first.txnCmd(raftcmd.KindTxnCommit, &txnlock.Commit{Txn: 15, Primary: []byte{}, Rev: 20}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res, _ := other.txnCmd(raftcmd.KindTxnResolve, &txnlock.Resolve{Txn: 15, Rev: 20}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := other.get("x"); got != "<none>" {
		t.Fatalf("x, attached to lease 7, after its revocation: got %s, want none", got)
	}
	if got := other.get("y"); got != "u@17" {
		t.Fatalf("y, put without the lease, after the revocation: got %s, want u@17", got)
	}
}
