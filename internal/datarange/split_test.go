package datarange

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangedesc"
	"github.com/synod-io/synod/internal/rangesm"
	"github.com/synod-io/synod/internal/txnlock"
)

func (r *txnRange) split(key string, newID keys.RangeID, gen uint64) (Result, rangesm.Effects) {
	r.t.Helper()
	return r.apply(raftcmd.KindRangeSplit, rangedesc.SplitCommand{Key: []byte(key), NewID: newID, Generation: gen}.Encode(), 0)
}

func code(err error) codes.Code { return status.Code(err) }

// TestSplitRange splits a range's machine (no network): the split is
// refused for a stale generation, a key outside the range, locks of a
// transaction across ranges over the right-hand side; once applied, the range holds only the keys below the split key
// (writes above it are refused with ErrRangeChanged, its index counts only
// its own keys), both descriptors and the new range's state are stored at
// the range's revision, committed transaction records whose primary moved
// go with it, and a restart keeps the smaller span.
func TestSplitRange(t *testing.T) {
	r := newTxnRange(t)
	for i, k := range []string{"a", "k", "q", "z"} {
		if err := r.put(k, "v", int64(2+i)); err != nil {
			t.Fatal(err)
		}
	}
	if res, _ := r.split("m", 9, 7); !errors.Is(res.Err, ErrRangeChanged) {
		t.Fatalf("split at a stale generation: got %v, want ErrRangeChanged", res.Err)
	}

	// A pending transaction holds "q": the split waits.
	if res, _ := r.txnCmd(raftcmd.KindTxnPrewrite, prewrite(6, "a", true, 1<<50, []txnlock.Span{point("a"), point("q")}, txnlock.Write{Key: []byte("q"), Value: []byte("t")})); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res, _ := r.split("m", 9, 0); !errors.Is(res.Err, ErrSplitBusy) {
		t.Fatalf("split over a lock: got %v, want ErrSplitBusy", res.Err)
	}
	// Committed: its record (primary "a") stays; a second transaction
	// whose primary is above the split key commits too, and its record
	// moves with the key.
	if res, _ := r.txnCmd(raftcmd.KindTxnCommit, &txnlock.Commit{Txn: 6, Primary: []byte("a"), Rev: 7}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res, _ := r.txnCmd(raftcmd.KindTxnPrewrite, prewrite(8, "r", true, 1<<50, []txnlock.Span{point("r")}, txnlock.Write{Key: []byte("r"), Value: []byte("t")})); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res, _ := r.txnCmd(raftcmd.KindTxnCommit, &txnlock.Commit{Txn: 8, Primary: []byte("r"), Rev: 9}); res.Err != nil {
		t.Fatal(res.Err)
	}
	rev := r.st.KV.Revision
	// The commits are above the range's revision: a restart's index of
	// live keys holds them still.
	r.m = r.open()
	if e, ok := Index(r.m.Published()).Get([]byte("r")); !ok || e.ModRevision != 9 || rev >= 9 {
		t.Fatalf("index after a restart: r at %d (%v), want 9 (the range at %d)", e.ModRevision, ok, rev)
	}

	res, out := r.split("m", 9, 0)
	if res.Err != nil {
		t.Fatalf("split: %v", res.Err)
	}
	left := rangedesc.Descriptor{RangeID: 2, End: []byte("m"), Generation: 1}
	right := rangedesc.Descriptor{RangeID: 9, Start: []byte("m"), Generation: 1}
	if len(out.Splits) != 1 || out.Splits[0].Left.String() != left.String() || out.Splits[0].Right.String() != right.String() || out.Splits[0].Revision != rev {
		t.Fatalf("split effects: got %+v, want %v and %v at %d", out.Splits, left, right, rev)
	}
	for _, want := range []rangedesc.Descriptor{left, right} {
		d, ok, err := rangedesc.GetLocal(r.db, want.RangeID)
		if err != nil || !ok || d.String() != want.String() {
			t.Fatalf("own descriptor of range %d: got %v %v %v, want %v", want.RangeID, d, ok, err, want)
		}
	}
	st, err := rangesm.LoadAppliedState(r.db, 9)
	if err != nil || st.KV.Revision != rev || st.Index != splitInitialIndex {
		t.Fatalf("new range's applied state: got %+v %v, want revision %d at index %d", st, err, rev, splitInitialIndex)
	}
	if _, err := LoadSystemState(r.db, 9); err != nil {
		t.Fatal(err)
	}
	if _, mc, err := LoadTxnState(r.db, 9); err != nil || mc != 9 {
		t.Fatalf("new range's highest commit: got %d %v, want 9", mc, err)
	}
	if v, closer, err := r.db.Get(keys.TxnRecordKey(9, 8)); err != nil {
		t.Fatalf("record of txn 8 in the new range: %v", err)
	} else {
		closer.Close()
		_ = v
	}
	if _, _, err := r.db.Get(keys.TxnRecordKey(2, 8)); err == nil {
		t.Fatal("record of txn 8 left in the split range")
	}
	if _, closer, err := r.db.Get(keys.TxnRecordKey(2, 6)); err != nil {
		t.Fatalf("record of txn 6 (primary below the split) gone: %v", err)
	} else {
		closer.Close()
	}

	if err := r.put("z", "w", 10); !errors.Is(err, ErrRangeChanged) {
		t.Fatalf("put above the split key: got %v, want ErrRangeChanged", err)
	}
	if err := r.put("b", "w", 10); err != nil {
		t.Fatalf("put below the split key: %v", err)
	}
	if n := Index(r.m.Published()).Len(); n != 3 {
		t.Fatalf("live keys the range counts: got %d, want 3 (a, b, k)", n)
	}
	if res, _ := r.split("q", 10, 1); code(res.Err) != codes.InvalidArgument {
		t.Fatalf("split above the range: got %v, want InvalidArgument", res.Err)
	}
	if res, _ := r.split("m", 10, 1); code(res.Err) != codes.InvalidArgument {
		t.Fatalf("split at the range's end: got %v, want InvalidArgument", res.Err)
	}

	if res, _ := r.split("p", 10, 1); code(res.Err) != codes.InvalidArgument {
		t.Fatalf("split outside: got %v, want InvalidArgument", res.Err)
	}

	// A restart keeps the span.
	r.m = r.open()
	if err := r.put("x", "w", 12); !errors.Is(err, ErrRangeChanged) {
		t.Fatalf("put above the split key after a restart: got %v, want ErrRangeChanged", err)
	}
	if got, want := fmt.Sprint(r.m.Spans()), fmt.Sprint(keys.DataRangeSpans(2, nil, []byte("m"))); got != want {
		t.Fatalf("spans after a restart: got %v, want %v", got, want)
	}
}
