package lease

import (
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

var t0 = time.Unix(1_000_000, 0)

func at(d time.Duration) time.Time { return t0.Add(d) }

func TestExpiryAndRevokeRetry(t *testing.T) {
	l := NewLessor(Config{RevokeRetry: 2 * time.Second})
	l.Promote(1)
	l.Granted(at(0), 7, 10)
	if got := l.Expired(at(9999*time.Millisecond), 10); len(got) != 0 {
		t.Fatalf("expired before its TTL: got %v", got)
	}
	if got := l.Expired(at(10*time.Second), 10); !reflect.DeepEqual(got, []int64{7}) {
		t.Fatalf("expired at its TTL: got %v, want [7]", got)
	}
	if got := l.Expired(at(11*time.Second), 10); len(got) != 0 {
		t.Fatalf("handed out again while its revocation is pending: got %v", got)
	}
	if got := l.Expired(at(12*time.Second), 10); !reflect.DeepEqual(got, []int64{7}) {
		t.Fatalf("handed out again after the retry delay: got %v, want [7]", got)
	}
	l.RevokeFailed(7)
	if got := l.Expired(at(12*time.Second), 10); !reflect.DeepEqual(got, []int64{7}) {
		t.Fatalf("after a failed revocation: got %v, want [7]", got)
	}
	l.Revoked(7)
	if got := l.Expired(at(time.Hour), 10); len(got) != 0 {
		t.Fatalf("revoked lease expired again: got %v", got)
	}
}

func TestExpiredOrderAndLimit(t *testing.T) {
	l := NewLessor(Config{})
	l.Promote(1)
	l.Granted(at(0), 1, 30)
	l.Granted(at(0), 2, 10)
	l.Granted(at(0), 3, 20)
	if got := l.Expired(at(time.Minute), 2); !reflect.DeepEqual(got, []int64{2, 3}) {
		t.Fatalf("soonest expired first, limited: got %v, want [2 3]", got)
	}
}

func TestRenew(t *testing.T) {
	l := NewLessor(Config{})
	l.Promote(1)
	l.Granted(at(0), 1, 10)
	if ttl, err := l.Renew(at(8*time.Second), 1); err != nil || ttl != 10 {
		t.Fatalf("renew: got %d, %v, want 10", ttl, err)
	}
	if got := l.Expired(at(17*time.Second), 10); len(got) != 0 {
		t.Fatalf("renewed lease expired early: got %v", got)
	}
	if _, err := l.Renew(at(18*time.Second), 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("renew after expiry: got %v, want ErrNotFound", err)
	}
	if _, err := l.Renew(at(0), 99); !errors.Is(err, ErrNotFound) {
		t.Fatalf("renew unknown lease: got %v, want ErrNotFound", err)
	}
	l.Demote()
	if _, err := l.Renew(at(0), 1); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("renew on a demoted lessor: got %v, want ErrNotPrimary", err)
	}
}

func TestCheckpointPolicy(t *testing.T) {
	l := NewLessor(Config{CheckpointInterval: time.Second})
	l.Promote(1)
	l.Granted(at(0), 1, 10)
	l.Granted(at(0), 2, 10)
	// Lease 2 is renewed like a healthy client does (every third of TTL).
	renew2 := func(d time.Duration) {
		if _, err := l.Renew(at(d), 2); err != nil {
			t.Fatal(err)
		}
	}
	renew2(3 * time.Second)
	if got := l.Checkpoints(at(4 * time.Second)); len(got) != 0 {
		t.Fatalf("checkpoints while both leases have over half their TTL: got %v", got)
	}
	renew2(6 * time.Second)
	got := l.Checkpoints(at(5500 * time.Millisecond))
	if !reflect.DeepEqual(got, []Checkpoint{{ID: 1, RemainingMs: 4500}}) {
		t.Fatalf("checkpoint of the unrenewed lease: got %v", got)
	}
	l.Checkpointed(1, 4500)
	l.CheckpointsSettled(got, true)
	if got := l.Checkpoints(at(6 * time.Second)); len(got) != 0 {
		t.Fatalf("checkpoint again before the remaining TTL dropped by the interval: got %v", got)
	}
	renew2(9 * time.Second)
	got = l.Checkpoints(at(6500 * time.Millisecond))
	if !reflect.DeepEqual(got, []Checkpoint{{ID: 1, RemainingMs: 3500}}) {
		t.Fatalf("checkpoint after the interval: got %v", got)
	}
	l.Checkpointed(1, 3500)
	l.CheckpointsSettled(got, true)
	// The client comes back: the checkpoint must be reset before renewing.
	if need, _, err := l.NeedsReset(1); err != nil || !need {
		t.Fatalf("needs reset: got %v, %v, want true", need, err)
	}
	if need, _, _ := l.NeedsReset(2); need {
		t.Fatalf("a never checkpointed lease needs no reset")
	}
	if _, err := l.Renew(at(7*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	if need, _, _ := l.NeedsReset(1); need {
		t.Fatalf("renewal did not clear the local checkpoint")
	}
}

func TestMergeStartsFromCheckpoint(t *testing.T) {
	l := NewLessor(Config{})
	if l.Primary() {
		t.Fatalf("new lessor is primary")
	}
	l.Promote(1)
	// A grant applied between Promote and Merge wins over the table read.
	l.Granted(at(0), 3, 100)
	l.Merge(at(0), []Record{
		{ID: 1, TTL: 60},
		{ID: 2, TTL: 60, RemainingMs: 5000},
		{ID: 3, TTL: 1},
	})
	check := func(id int64, want time.Duration) {
		t.Helper()
		rem, _, err := l.Remaining(at(0), id)
		if err != nil || rem != want {
			t.Fatalf("remaining of %d: got %v, %v, want %v", id, rem, err, want)
		}
	}
	check(1, 60*time.Second)
	check(2, 5*time.Second)
	check(3, 100*time.Second)
	if got := l.Expired(at(5*time.Second), 10); !reflect.DeepEqual(got, []int64{2}) {
		t.Fatalf("checkpointed lease after failover: got %v, want [2]", got)
	}
}

func TestTable(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := db.NewIndexedBatch()
	tb := Table{RW: b}
	if ok, err := tb.Exists(5); err != nil || ok {
		t.Fatalf("exists before grant: got %v, %v", ok, err)
	}
	for _, r := range []Record{{ID: 5, TTL: 10}, {ID: -3, TTL: 20, RemainingMs: 1500}} {
		if err := tb.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	_ = tb.Attach(5, []byte("b"))
	_ = tb.Attach(5, []byte("a"))
	_ = tb.Attach(-3, []byte("z"))
	_ = tb.Detach(5, []byte("b"))
	if ok, _ := tb.Exists(5); !ok {
		t.Fatalf("exists after grant: got false")
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	ks, err := AttachedKeys(db, 5)
	if err != nil || len(ks) != 1 || string(ks[0]) != "a" {
		t.Fatalf("attached keys of 5: got %q, %v, want [a]", ks, err)
	}
	recs, err := List(db)
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{{ID: 5, TTL: 10}, {ID: -3, TTL: 20, RemainingMs: 1500}}
	if !reflect.DeepEqual(recs, want) {
		t.Fatalf("list: got %+v, want %+v", recs, want)
	}
	b2 := db.NewIndexedBatch()
	if err := (Table{RW: b2}).Delete(5, [][]byte{[]byte("a")}); err != nil {
		t.Fatal(err)
	}
	_ = b2.Commit(pebble.Sync)
	if ks, _ := AttachedKeys(db, 5); len(ks) != 0 {
		t.Fatalf("attachments survive delete: %q", ks)
	}
	if ks, _ := AttachedKeys(db, -3); len(ks) != 1 {
		t.Fatalf("delete of 5 touched lease -3's attachments: %q", ks)
	}
}

// TestExpiryWorkFollowsDueLeases checks that the leader's periodic work
// (Expired every 100 ms, Checkpoints every second) looks at the leases that
// are due, not at every lease: with a million idle leases, walking them all
// each tick cost more than a core.
func TestExpiryWorkFollowsDueLeases(t *testing.T) {
	const due = 10
	bound := func(n int) int { return 3*n + 3 } // the due ones, their heap children, the stop
	for _, idle := range []int{0, 1000, 20_000} {
		l := NewLessor(Config{CheckpointInterval: time.Second, RevokeRetry: 2 * time.Second})
		l.Promote(1)
		for i := range idle {
			l.Granted(at(0), int64(1_000_000+i), 3600)
		}
		for i := range due {
			l.Granted(at(0), int64(1+i), 10)
		}
		step := func(what string, wantOut, wantDue int, f func() int) {
			t.Helper()
			before := l.mu.examined
			n := f()
			examined := l.mu.examined - before
			if n != wantOut {
				t.Fatalf("%d idle leases, %s: got %d leases out, want %d", idle, what, n, wantOut)
			}
			if examined > bound(wantDue) {
				t.Fatalf("%d idle leases, %s: examined %d leases, want at most %d (%d due)", idle, what, examined, bound(wantDue), wantDue)
			}
		}
		expired := func(d time.Duration) func() int { return func() int { return len(l.Expired(at(d), 100)) } }
		checkpoints := func(d time.Duration) func() int {
			return func() int {
				cps := l.Checkpoints(at(d))
				l.CheckpointsSettled(cps, true)
				return len(cps)
			}
		}
		step("Expired with none due", 0, 0, expired(time.Second))
		step("Checkpoints with none due", 0, 0, checkpoints(time.Second))
		step("Checkpoints past half the TTL", due, due, checkpoints(6*time.Second))
		for i := range due {
			l.Checkpointed(int64(1+i), 4000)
		}
		step("Checkpoints before the interval", 0, 0, checkpoints(6500*time.Millisecond))
		step("Checkpoints after the interval", due, due, checkpoints(7*time.Second))
		step("Expired at the TTL", due, due, expired(10*time.Second))
		step("Checkpoints of expired leases", 0, due, checkpoints(10*time.Second))
		step("Expired while revocations are pending", 0, 0, expired(11*time.Second))
		step("Expired after the retry delay", due, due, expired(12*time.Second))
		for i := range due {
			l.Revoked(int64(1 + i))
		}
		step("Expired after the revocations", 0, 0, expired(20*time.Second))
		if got, want := l.Len(), idle; got != want {
			t.Fatalf("%d idle leases: got %d leases left, want %d", idle, got, want)
		}
	}
}

// TestRenewalsMoveLeasesLazily checks that renewals cost the periodic work
// at most one look per lease and per period of renewals, however often the
// lease was renewed: a renewal leaves the lease's place in the heaps, which
// it takes up again when that place comes round.
func TestRenewalsMoveLeasesLazily(t *testing.T) {
	const n = 1000
	l := NewLessor(Config{CheckpointInterval: time.Second})
	l.Promote(1)
	for i := range n {
		l.Granted(at(0), int64(1+i), 30)
	}
	for r := 1; r <= 5; r++ {
		for i := range n {
			if _, err := l.Renew(at(time.Duration(r)*time.Second), int64(1+i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Every 100 ms until after the first expiry (30 s), the renewals put
	// the real one at 35 s; checkpoints every second until the lease is
	// unrenewed for half its TTL (20 s).
	calls := 0
	for d := 100 * time.Millisecond; d <= 34*time.Second; d += 100 * time.Millisecond {
		calls++
		if got := l.Expired(at(d), 100); len(got) != 0 {
			t.Fatalf("expired at %v: got %d leases, want none", d, len(got))
		}
		if d%time.Second == 0 && d <= 20*time.Second {
			calls++
			if got := l.Checkpoints(at(d)); len(got) != 0 {
				t.Fatalf("checkpoints at %v: got %d, want none", d, len(got))
			}
		}
	}
	// Each lease is looked at once in each heap when its old place comes
	// round; each call looks at one place that is not due.
	if want := 2*n + 3*calls; l.mu.examined > want {
		t.Fatalf("examined %d heap entries, want at most %d", l.mu.examined, want)
	}
	if got := l.Expired(at(35*time.Second), 2*n); len(got) != n {
		t.Fatalf("expired at 35s: got %d leases, want %d", len(got), n)
	}
}

// countingRW counts the reads made through it.
type countingRW struct {
	ReadWriter
	reads int
}

func (c *countingRW) Get(key []byte) ([]byte, io.Closer, error) {
	c.reads++
	return c.ReadWriter.Get(key)
}

func (c *countingRW) NewIter(o *pebble.IterOptions) (*pebble.Iterator, error) {
	c.reads++
	return c.ReadWriter.NewIter(o)
}

// TestTableTTLsAnswerLookups checks that a table with its TTLs in memory
// answers lookups (a put naming a lease, a revocation, a checkpoint) without
// reading storage, and keeps them current.
func TestTableTTLsAnswerLookups(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := db.NewIndexedBatch()
	if err := (Table{RW: b}).Put(Record{ID: 1, TTL: 10}); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	ttls, err := LoadTTLs(db)
	if err != nil {
		t.Fatal(err)
	}
	rw := &countingRW{ReadWriter: db.NewIndexedBatch()}
	tb := Table{RW: rw, TTLs: ttls}
	if ok, err := tb.Exists(1); err != nil || !ok {
		t.Fatalf("exists 1: got %v, %v, want true", ok, err)
	}
	if err := tb.Put(Record{ID: 2, TTL: 20}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id     int64
		exists bool
	}{{1, true}, {2, true}, {3, false}} {
		if ok, err := tb.Checkpoint(c.id, 500); err != nil || ok != c.exists {
			t.Fatalf("checkpoint %d: got %v, %v, want %v", c.id, ok, err, c.exists)
		}
	}
	if err := tb.Delete(1, nil); err != nil {
		t.Fatal(err)
	}
	if ok, _ := tb.Exists(1); ok {
		t.Fatalf("exists after delete: got true")
	}
	if rw.reads != 0 {
		t.Fatalf("lookups read storage %d times, want 0", rw.reads)
	}
	recs, err := List(rw)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Record{{ID: 2, TTL: 20, RemainingMs: 500}}; !reflect.DeepEqual(recs, want) || !ttls.Equal(recs) {
		t.Fatalf("table: got %+v (TTLs equal: %v), want %+v", recs, ttls.Equal(recs), want)
	}
}

// TestCheckpointInFlightBlocksRenewal checks that a checkpoint handed out
// by Checkpoints counts before it applies: a renewal must not be
// acknowledged without a reset while it may still land.
func TestCheckpointInFlightBlocksRenewal(t *testing.T) {
	l := NewLessor(Config{CheckpointInterval: time.Second})
	l.Promote(1)
	l.Granted(at(0), 1, 10)
	// The client renews; NeedsReset runs before the checkpoint is handed
	// out, Renew after.
	if need, wait, err := l.NeedsReset(1); err != nil || need || wait != nil {
		t.Fatalf("needs reset before any checkpoint: got %v, %v, %v, want false", need, wait, err)
	}
	cps := l.Checkpoints(at(6 * time.Second))
	if !reflect.DeepEqual(cps, []Checkpoint{{ID: 1, RemainingMs: 4000}}) {
		t.Fatalf("checkpoints: got %v", cps)
	}
	if _, err := l.Renew(at(6*time.Second), 1); !errors.Is(err, ErrCheckpointPending) {
		t.Fatalf("renew with a checkpoint in flight: got %v, want ErrCheckpointPending", err)
	}
	need, wait, err := l.NeedsReset(1)
	if err != nil || !need || wait == nil {
		t.Fatalf("needs reset with a checkpoint in flight: got %v, %v, %v, want true and a channel to wait on", need, wait, err)
	}
	if got := l.Checkpoints(at(7500 * time.Millisecond)); len(got) != 0 {
		t.Fatalf("checkpoints while one is in flight: got %v, want none", got)
	}
	// The checkpoint applies, then its proposal returns.
	l.Checkpointed(1, 4000)
	select {
	case <-wait:
		t.Fatal("woken before the proposal returned")
	default:
	}
	l.CheckpointsSettled(cps, true)
	select {
	case <-wait:
	default:
		t.Fatal("not woken when the proposal returned")
	}
	if need, wait, _ := l.NeedsReset(1); !need || wait != nil {
		t.Fatalf("needs reset after the checkpoint applied: got %v, %v, want true and no wait", need, wait)
	}
	// The reset applies; the renewal goes through.
	l.Checkpointed(1, 0)
	if _, err := l.Renew(at(6*time.Second), 1); err != nil {
		t.Fatalf("renew after the reset: got %v", err)
	}

	// A proposal that failed may still apply: a reset is needed.
	cps = l.Checkpoints(at(12 * time.Second))
	if len(cps) != 1 {
		t.Fatalf("checkpoints: got %v, want lease 1", cps)
	}
	l.CheckpointsSettled(cps, false)
	if need, wait, _ := l.NeedsReset(1); !need || wait != nil {
		t.Fatalf("needs reset after a failed proposal: got %v, %v, want true and no wait", need, wait)
	}
	if _, err := l.Renew(at(12*time.Second), 1); !errors.Is(err, ErrCheckpointPending) {
		t.Fatalf("renew after a failed proposal, unreset: got %v, want ErrCheckpointPending", err)
	}
	l.Checkpointed(1, 0)
	if _, err := l.Renew(at(12*time.Second), 1); err != nil {
		t.Fatalf("renew after the reset: got %v", err)
	}
}
