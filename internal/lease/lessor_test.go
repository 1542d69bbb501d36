package lease

import (
	"errors"
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
	if got := l.Checkpoints(at(6 * time.Second)); len(got) != 0 {
		t.Fatalf("checkpoint again before the remaining TTL dropped by the interval: got %v", got)
	}
	renew2(9 * time.Second)
	if got := l.Checkpoints(at(6500 * time.Millisecond)); !reflect.DeepEqual(got, []Checkpoint{{ID: 1, RemainingMs: 3500}}) {
		t.Fatalf("checkpoint after the interval: got %v", got)
	}
	l.Checkpointed(1, 3500)
	// The client comes back: the checkpoint must be reset before renewing.
	if need, err := l.NeedsReset(1); err != nil || !need {
		t.Fatalf("needs reset: got %v, %v, want true", need, err)
	}
	if need, _ := l.NeedsReset(2); need {
		t.Fatalf("a never checkpointed lease needs no reset")
	}
	if _, err := l.Renew(at(7*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	if need, _ := l.NeedsReset(1); need {
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
	if err := (Table{RW: b2}).Delete(5); err != nil {
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
