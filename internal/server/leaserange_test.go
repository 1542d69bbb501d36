package server_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/testcluster"
)

// TestLeasesOverRanges holds keys of every data range on leases ([, g),
// [g, p), [p, ...) and, after a split, [b, g)): puts with a lease and txns
// within and across ranges attach keys anywhere; a lease that does not
// exist fails them with etcd's error; TimeToLive lists the keys still
// attached; a revocation, asked for or by expiry, deletes every key of the
// lease at one revision (a watch of every key gets them in one response),
// also after a split moved leased keys out of the first range; etcd's
// concurrency package (sessions, mutexes, elections) works on keys of any
// range; no lock or record of a transaction is left.
func TestLeasesOverRanges(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Configure: splitAt("g", "p")})
	c.WaitLeader()
	ctx := testcluster.Context(t, 60*time.Second)
	cli := c.Client()

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start, err := cli.Get(ctx, "any")
	if err != nil {
		t.Fatal(err)
	}
	wch := cli.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(start.Header.Revision+1))
	// deletions returns the keys of the next response of the watch that
	// deletes keys, and the revision they were deleted at.
	deletions := func(what string) ([]string, int64) {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case wr := <-wch:
				if err := wr.Err(); err != nil {
					t.Fatalf("%s: watch: %v", what, err)
				}
				var keys []string
				var rev int64
				for _, ev := range wr.Events {
					if ev.Type != mvccpb.DELETE {
						continue
					}
					if rev != 0 && ev.Kv.ModRevision != rev {
						t.Fatalf("%s: deletions at revisions %d and %d in one response", what, rev, ev.Kv.ModRevision)
					}
					rev = ev.Kv.ModRevision
					keys = append(keys, string(ev.Kv.Key))
				}
				if len(keys) > 0 {
					slices.Sort(keys)
					return keys, rev
				}
			case <-timeout:
				t.Fatalf("%s: no deletions watched in 20s", what)
			}
		}
	}

	l, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a1", "h1", "q1"} {
		if _, err := cli.Put(ctx, k, "v", clientv3.WithLease(l.ID)); err != nil {
			t.Fatalf("put %s with a lease: %v", k, err)
		}
	}
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut("h2", "v", clientv3.WithLease(l.ID)), clientv3.OpPut("q2", "v", clientv3.WithLease(l.ID))).Commit(); err != nil {
		t.Fatalf("txn across ranges with a lease: %v", err)
	}
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut("q3", "v", clientv3.WithLease(l.ID)), clientv3.OpPut("q4", "v", clientv3.WithLease(l.ID))).Commit(); err != nil {
		t.Fatalf("txn in another range than the first with a lease: %v", err)
	}
	if _, err := cli.Put(ctx, "q5", "v", clientv3.WithIgnoreValue(), clientv3.WithLease(l.ID)); err == nil {
		t.Fatal("put ignoring the value of a missing key succeeded")
	}
	if _, err := cli.Put(ctx, "q9", "v", clientv3.WithLease(clientv3.LeaseID(l.ID+1))); err != rpctypes.ErrLeaseNotFound {
		t.Fatalf("put with a missing lease in another range: got %v, want %v", err, rpctypes.ErrLeaseNotFound)
	}
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut("a9", "v"), clientv3.OpPut("q9", "v", clientv3.WithLease(clientv3.LeaseID(l.ID+1)))).Commit(); err != rpctypes.ErrLeaseNotFound {
		t.Fatalf("txn across ranges with a missing lease: got %v, want %v", err, rpctypes.ErrLeaseNotFound)
	}
	if resp, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithKeysOnly()); err != nil || len(resp.Kvs) != 7 {
		t.Fatalf("keys after the refused writes: got %v (%v), want the 7 leased ones", resp, err)
	}
	// q4 leaves the lease, h2 goes: TimeToLive lists what is attached.
	if _, err := cli.Put(ctx, "q4", "w"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, "h2"); err != nil {
		t.Fatal(err)
	}
	if keys, _ := deletions("delete of h2"); fmt.Sprint(keys) != "[h2]" {
		t.Fatalf("deleted: got %v, want [h2]", keys)
	}
	ttl, err := cli.TimeToLive(ctx, l.ID, clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	var attached []string
	for _, k := range ttl.Keys {
		attached = append(attached, string(k))
	}
	slices.Sort(attached)
	if got, want := strings.Join(attached, " "), "a1 h1 q1 q2 q3"; got != want {
		t.Fatalf("keys attached: got %s, want %s", got, want)
	}
	rv, err := cli.Revoke(ctx, l.ID)
	if err != nil {
		t.Fatalf("revoke a lease with keys in three ranges: %v", err)
	}
	keys, rev := deletions("revocation")
	if got, want := fmt.Sprint(keys), "[a1 h1 q1 q2 q3]"; got != want || rev != rv.Header.Revision {
		t.Fatalf("revocation deleted %s at %d, want %s at %d", got, rev, want, rv.Header.Revision)
	}
	if resp, err := cli.Get(ctx, "q4"); err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease != 0 {
		t.Fatalf("q4, put without the lease, after the revocation: got %v (%v)", resp, err)
	}
	if _, err := cli.Revoke(ctx, l.ID); err != rpctypes.ErrLeaseNotFound {
		t.Fatalf("second revocation: got %v, want %v", err, rpctypes.ErrLeaseNotFound)
	}

	// Expiry, after a split moved a leased key out of the first range.
	short, err := cli.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a2", "c2", "h3", "q6"} {
		if _, err := cli.Put(ctx, k, "v", clientv3.WithLease(short.ID)); err != nil {
			t.Fatalf("put %s with a lease: %v", k, err)
		}
	}
	if _, err := synodpb.NewRangesClient(cli.ActiveConnection()).SplitRange(ctx, &synodpb.SplitRangeRequest{Keys: [][]byte{[]byte("b")}}); err != nil {
		t.Fatalf("split the first range below a leased key: %v", err)
	}
	keys, _ = deletions("expiry")
	if got, want := fmt.Sprint(keys), "[a2 c2 h3 q6]"; got != want {
		t.Fatalf("expiry deleted %s, want %s", got, want)
	}

	// Sessions, mutexes and elections on keys of other ranges.
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatal(err)
	}
	mu := concurrency.NewMutex(sess, "q-lock/")
	if err := mu.Lock(ctx); err != nil {
		t.Fatalf("lock on a key of another range: %v", err)
	}
	other, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatal(err)
	}
	if err := concurrency.NewMutex(other, "q-lock/").TryLock(ctx); err != concurrency.ErrLocked {
		t.Fatalf("second holder: got %v, want %v", err, concurrency.ErrLocked)
	}
	e := concurrency.NewElection(other, "h-elect/")
	if err := e.Campaign(ctx, "n1"); err != nil {
		t.Fatalf("campaign on a key of another range: %v", err)
	}
	if err := mu.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if resp, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithKeysOnly()); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("keys once the sessions closed: got %v (%v), want q4 alone", resp, err)
	}
	waitNoPendingLocks(t, c, 10*time.Second, nil)
	waitNoTxnRecords(t, c)
}

// TestLeasedKeyOfAnotherRangeReadByItsRange: a key put with a lease outside
// the first range is written by a transaction across ranges, at its commit
// revision C, which does not move its range's revision; a command of that
// range alone applied next must still see the key (etcd's ignore_lease
// put, a txn's compare on its create revision as concurrency.Election's
// Resign makes). It failed while single-range commands read at the
// range's revision, below C (also for keys a txn across ranges wrote
// without a lease; a lease outside the first range makes every such put
// one): they read at the higher of it and the range's highest commit
// revision now (kv.Applier.Committed).
func TestLeasedKeyOfAnotherRangeReadByItsRange(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Configure: splitAt("m")})
	c.WaitLeader()
	ctx := testcluster.Context(t, 30*time.Second)
	cli := c.Client()
	l, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := cli.Put(ctx, "x", "1", clientv3.WithLease(l.ID))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "x", "2", clientv3.WithIgnoreLease()); err != nil {
		t.Errorf("ignore_lease put of x after its put with a lease at %d: got %v, want none", pr.Header.Revision, err)
	}
	tr, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision("x"), "=", pr.Header.Revision)).Then(clientv3.OpDelete("x")).Commit()
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Succeeded {
		t.Errorf("txn comparing x's create revision with %d: got the else branch, want the then branch", pr.Header.Revision)
	}
}

// TestWritesThatWriteNothingAnswerAtCurrentRevisions: on a split store, a
// write that writes nothing (a delete of a missing key, a txn whose branch
// only reads) answers with a revision no lower than any write acknowledged
// before it began, in any range, as etcd's one revision does; it used to
// answer with its own range's revision, which may be far behind.
func TestWritesThatWriteNothingAnswerAtCurrentRevisions(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Configure: splitAt("m")})
	c.WaitLeader()
	ctx := testcluster.Context(t, 30*time.Second)
	cli := c.Client()
	var last int64
	for i := range 5 {
		pr, err := cli.Put(ctx, fmt.Sprintf("x%d", i), "v")
		if err != nil {
			t.Fatal(err)
		}
		last = pr.Header.Revision
	}
	dr, err := cli.Delete(ctx, "a-missing")
	if err != nil {
		t.Fatal(err)
	}
	if dr.Deleted != 0 || dr.Header.Revision < last {
		t.Fatalf("delete of a missing key in another range: deleted %d at revision %d, want 0 at %d or above", dr.Deleted, dr.Header.Revision, last)
	}
	tr, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("a-missing"), "=", "x")).Then(clientv3.OpPut("a1", "v")).Else(clientv3.OpGet("a", clientv3.WithPrefix())).Commit()
	if err != nil {
		t.Fatal(err)
	}
	if tr.Succeeded || tr.Header.Revision < last || tr.Responses[0].GetResponseRange().Header.Revision < last {
		t.Fatalf("failing txn in another range: succeeded %v at revision %d (its get at %d), want the else branch at %d or above",
			tr.Succeeded, tr.Header.Revision, tr.Responses[0].GetResponseRange().Header.Revision, last)
	}
}
