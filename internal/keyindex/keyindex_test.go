package keyindex

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
)

func keysOf(s *Snapshot, start, end []byte, desc bool) string {
	var got []string
	fn := func(e *Entry) bool { got = append(got, string(e.Key)); return true }
	if desc {
		s.Descend(start, end, fn)
	} else {
		s.Ascend(start, end, fn)
	}
	return strings.Join(got, ",")
}

func TestAscendDescendBounds(t *testing.T) {
	x := New(1)
	for _, k := range []string{"a", "b", "b\x00", "c", "d"} {
		x.Put(&Entry{Key: []byte(k)})
	}
	s := x.Snapshot()
	for _, tc := range []struct {
		start, end string
		endNil     bool
		want       string
	}{
		{start: "a", end: "c", want: "a,b,b\x00"},
		{start: "b", end: "b\x00", want: "b"},
		{start: "", endNil: true, want: "a,b,b\x00,c,d"},
		{start: "c", endNil: true, want: "c,d"},
		{start: "c", end: "c", want: ""},
		{start: "d", end: "a", want: ""},
		{start: "bb", end: "z", want: "c,d"},
	} {
		var end []byte
		if !tc.endNil {
			end = []byte(tc.end)
		}
		if got := keysOf(s, []byte(tc.start), end, false); got != tc.want {
			t.Errorf("ascend [%q, %q): got %q, want %q", tc.start, end, got, tc.want)
		}
		parts := strings.Split(tc.want, ",")
		slices.Reverse(parts)
		if got, want := keysOf(s, []byte(tc.start), end, true), strings.Join(parts, ","); got != want {
			t.Errorf("descend [%q, %q): got %q, want %q", tc.start, end, got, want)
		}
	}
}

// TestSnapshotsStayFrozen writes to an index while goroutines read its
// earlier snapshots (run with -race): each snapshot must keep exactly the
// keys it was taken with.
func TestSnapshotsStayFrozen(t *testing.T) {
	x := New(0)
	rng := rand.New(rand.NewPCG(1, 2))
	live := map[string]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for rev := int64(1); rev <= 200; rev++ {
		for range 20 {
			k := fmt.Sprintf("k%03d", rng.IntN(300))
			if rng.IntN(3) == 0 {
				x.Delete([]byte(k))
				delete(live, k)
			} else {
				x.Put(&Entry{Key: []byte(k), ModRevision: rev})
				live[k] = true
			}
		}
		x.SetRevision(rev)
		s := x.Snapshot()
		want := make([]string, 0, len(live))
		for k := range live {
			want = append(want, k)
		}
		sort.Strings(want)
		wg.Go(func() {
			for range 3 {
				if got := keysOf(s, nil, nil, false); got != strings.Join(want, ",") {
					errs <- fmt.Errorf("snapshot at revision %d: got keys %.60q..., want %d keys", s.Revision(), got, len(want))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestGetAndFrozenEntries(t *testing.T) {
	x := New(3)
	x.Put(&Entry{Key: []byte("a"), CreateRevision: 2, ModRevision: 3, Version: 2, Lease: 7})
	if e, ok := x.Get([]byte("a")); !ok || e.Version != 2 || e.Lease != 7 {
		t.Fatalf("get a: got %+v, %v, want version 2, lease 7", e, ok)
	}
	s := x.Snapshot()
	x.Delete([]byte("a"))
	if _, ok := x.Get([]byte("a")); ok {
		t.Fatalf("get a after delete: got it, want none")
	}
	var got []Entry
	s.Ascend([]byte("a"), nil, func(e *Entry) bool { got = append(got, *e); return true })
	if len(got) != 1 || got[0].ModRevision != 3 || got[0].Lease != 7 {
		t.Fatalf("a in the snapshot taken before the delete: got %+v, want mod revision 3, lease 7", got)
	}
	if got, want := s.Revision(), int64(3); got != want {
		t.Fatalf("revision: got %d, want %d", got, want)
	}
}

// TestLookupsDoNotAllocate: Get runs for every put an apply batch writes.
func TestLookupsDoNotAllocate(t *testing.T) {
	x := New(0)
	x.Put(&Entry{Key: []byte("a"), ModRevision: 1})
	key := []byte("a")
	if got := testing.AllocsPerRun(100, func() {
		if e, ok := x.Get(key); !ok || e.ModRevision != 1 {
			t.Fatalf("a: got %v, %v, want the entry at 1", e, ok)
		}
	}); got != 0 {
		t.Fatalf("Get: got %v allocations, want 0", got)
	}
}
