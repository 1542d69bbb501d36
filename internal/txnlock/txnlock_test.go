package txnlock

import "testing"

func span(start, end string) Span {
	s := Span{Start: []byte(start)}
	if end != "" {
		s.End = []byte(end)
	}
	return s
}

func TestSpansOverlap(t *testing.T) {
	for _, tc := range []struct {
		a, b Span
		want bool
	}{
		{span("a", "c"), span("b", "d"), true},
		{span("a", "c"), span("c", "d"), false}, // ends are exclusive
		{span("c", "d"), span("a", "c"), false},
		{span("a", "b"), span("a", "b"), true},
		{span("a", ""), span("x", "y"), true}, // to the end of the keyspace
		{span("x", "y"), span("a", ""), true},
		{span("z", ""), span("a", "b"), false},
		{span("a", "a\x00"), span("a", "b"), true}, // one key
		{span("a", "a\x00"), span("a\x00", "b"), false},
	} {
		if got := tc.a.Overlaps(tc.b); got != tc.want {
			t.Errorf("%q overlaps %q: got %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestTableIsImmutable(t *testing.T) {
	var t0 *Table
	t1 := t0.With(&Locks{Txn: 9, Floor: 12, Spans: []Span{span("a", "b")}})
	t2 := t1.With(&Locks{Txn: 5, Floor: 20, Spans: []Span{span("m", "")}})
	t3 := t2.Without(9)
	if t0.Len() != 0 || t1.Len() != 1 || t2.Len() != 2 || t3.Len() != 1 {
		t.Fatalf("lengths: got %d %d %d %d, want 0 1 2 1", t0.Len(), t1.Len(), t2.Len(), t3.Len())
	}
	if got := t2.All(); got[0].Txn != 5 || got[1].Txn != 9 {
		t.Fatalf("order: got %d, %d; want 5, 9", got[0].Txn, got[1].Txn)
	}
	if f := t2.Floor(); f != 12 {
		t.Fatalf("floor of two: got %d, want 12", f)
	}
	if f := t3.Floor(); f != 20 {
		t.Fatalf("floor after 9 left: got %d, want 20", f)
	}
	if l := t2.Conflict(span("a\x00", "a\x01"), 0); l == nil || l.Txn != 9 {
		t.Fatalf("conflict in [a, b): got %v, want 9's locks", l)
	}
	if l := t2.Conflict(span("a", "c"), 9); l != nil {
		t.Fatalf("conflict with its own locks: got %v, want none", l)
	}
	if l := t2.Conflict(span("zz", "zz\x00"), 9); l == nil || l.Txn != 5 {
		t.Fatalf("conflict past m: got %v, want 5's locks", l)
	}
	if t1.Get(5) != nil || t2.Get(5) == nil || t3.Get(9) != nil {
		t.Fatal("Get: a table changed after it was published")
	}
}
