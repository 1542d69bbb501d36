package oracle

import "testing"

func TestAllocatorHandsOutUnderTheCeiling(t *testing.T) {
	a := NewAllocator(10)
	if _, ok := a.Take(1); ok {
		t.Fatalf("took a revision before Start")
	}
	if err := a.Start(3, 100); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Take(1); ok {
		t.Fatalf("took revision 101 above the stored ceiling 100")
	}
	up, ok := a.Raise(4)
	if !ok || up != 114 {
		t.Fatalf("Raise(4): got %d, %v, want 114, true", up, ok)
	}
	a.Raised(2, 1000) // another term's ceiling gives nothing
	if _, ok := a.Take(1); ok {
		t.Fatalf("took a revision under a ceiling of another term")
	}
	a.Raised(3, up)
	if first, ok := a.Take(4); !ok || first != 101 {
		t.Fatalf("Take(4): got %d, %v, want 101, true", first, ok)
	}
	if first, ok := a.Take(10); !ok || first != 105 {
		t.Fatalf("Take(10): got %d, %v, want 105, true", first, ok)
	}
	if _, ok := a.Raise(0); ok {
		t.Fatalf("Raise(0) asked for a ceiling with none needed")
	}
	if _, ok := a.Take(1); ok {
		t.Fatalf("took revision 115 above the ceiling 114")
	}
	if up, ok := a.Raise(1); !ok || up != 125 {
		t.Fatalf("Raise(1): got %d, %v, want 125, true", up, ok)
	}
}

// TestAllocatorStartsAboveTheStoredCeiling checks the failover rule: a new
// term's first revision is above every one a former leader could hand out.
func TestAllocatorStartsAboveTheStoredCeiling(t *testing.T) {
	old := NewAllocator(50)
	if err := old.Start(1, 0); err != nil {
		t.Fatal(err)
	}
	up, _ := old.Raise(1)
	old.Raised(1, up)
	var last uint64
	for {
		first, ok := old.Take(7)
		if !ok {
			break
		}
		last = first + 6
	}
	// The new leader reads the stored ceiling after applying term 1.
	a := NewAllocator(50)
	if err := a.Start(2, up); err != nil {
		t.Fatal(err)
	}
	up2, _ := a.Raise(1)
	a.Raised(2, up2)
	first, ok := a.Take(1)
	if !ok || first <= last || first <= up {
		t.Fatalf("first revision of term 2: got %d (ok %v), want above %d and the ceiling %d", first, ok, last, up)
	}
	if err := a.Start(2, up2); err == nil {
		t.Fatalf("Start in the term already served: got no error")
	}
}

func TestAllocatorSkipsAboveAFloor(t *testing.T) {
	a := NewAllocator(10)
	if err := a.Start(1, 0); err != nil {
		t.Fatal(err)
	}
	a.SkipTo(500)
	up, ok := a.Raise(2)
	if !ok || up != 512 {
		t.Fatalf("Raise(2) above floor 500: got %d, %v, want 512, true", up, ok)
	}
	a.Raised(1, up)
	if first, ok := a.Take(2); !ok || first != 501 {
		t.Fatalf("Take(2): got %d, %v, want 501, true", first, ok)
	}
	a.SkipTo(100) // a lower floor changes nothing
	if first, ok := a.Take(1); !ok || first != 503 {
		t.Fatalf("Take(1): got %d, %v, want 503, true", first, ok)
	}
}
