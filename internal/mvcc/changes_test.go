package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

func changeString(c Change) string {
	return fmt.Sprintf("%v %s prev=%s sub=%d", c.Type, kvString(c.KV), kvString(c.PrevKV), c.Sub)
}

// changes lists what ChangesSince must report, in its order.
func (m *model) changes(key, end []byte, fromRev int64) []string {
	return m.changesBetween(key, end, fromRev, math.MaxInt64)
}

// changesBetween lists what ChangesBetween must report with a fixed bound.
func (m *model) changesBetween(key, end []byte, fromRev, toRev int64) []string {
	var out []string
	for _, k := range m.sortedKeys() {
		if bytes.Compare([]byte(k), key) < 0 || (end != nil && bytes.Compare([]byte(k), end) >= 0) {
			continue
		}
		vs := m.versions[k]
		for i := len(vs) - 1; i >= 0 && vs[i].rev >= fromRev; i-- {
			if vs[i].rev > toRev {
				continue
			}
			c := Change{Sub: vs[i].sub, KV: vs[i].kv}
			if vs[i].tombstone {
				c.Type = mvccpb.Event_DELETE
				c.KV = &mvccpb.KeyValue{Key: []byte(k), ModRevision: vs[i].rev}
			}
			if i > 0 && !vs[i-1].tombstone {
				c.PrevKV = vs[i-1].kv
			}
			out = append(out, changeString(c))
		}
	}
	return out
}

func TestChangesSinceRandomized(t *testing.T) {
	for seed := range uint64(10) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 9))
			db := openDB(t)
			m, last := randomHistory(t, rng, db, 30)
			for range 50 {
				key, end := randomBounds(rng)
				from := rng.Int64N(last + 2)
				var got []string
				err := ChangesSince(db, key, end, from, func(c Change) error {
					got = append(got, changeString(c))
					return nil
				})
				if err != nil {
					t.Fatalf("changes: %v", err)
				}
				want := m.changes(key, end, from)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("changes [%q, %q) from %d:\ngot  %q\nwant %q", key, end, from, got, want)
				}
				to := from + rng.Int64N(last+2-from)
				got = nil
				err = ChangesBetween(db, key, end, from, func() int64 { return to }, func(c Change) error {
					got = append(got, changeString(c))
					return nil
				})
				if err != nil {
					t.Fatalf("changes between: %v", err)
				}
				want = m.changesBetween(key, end, from, to)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("changes [%q, %q) from %d to %d:\ngot  %q\nwant %q", key, end, from, to, got, want)
				}
			}
		})
	}
}

func TestChangesSinceStopsOnError(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	db := openDB(t)
	randomHistory(t, rng, db, 10)
	stop := errors.New("stop")
	calls := 0
	err := ChangesSince(db, nil, nil, 1, func(Change) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("got error %v after %d calls, want stop after 1", err, calls)
	}
}

// TestChangesBetweenShrinkingBound lowers the bound from fn, as a caller
// that keeps the lowest revisions up to a budget does: every version up to
// the final bound must still be reported.
func TestChangesBetweenShrinkingBound(t *testing.T) {
	for seed := range uint64(10) {
		rng := rand.New(rand.NewPCG(seed, 3))
		db := openDB(t)
		m, last := randomHistory(t, rng, db, 30)
		for range 20 {
			key, end := randomBounds(rng)
			from := rng.Int64N(last + 2)
			to := int64(math.MaxInt64)
			got := map[string]bool{}
			err := ChangesBetween(db, key, end, from, func() int64 { return to }, func(c Change) error {
				if c.KV.ModRevision > to {
					t.Fatalf("change at %d reported above the bound %d", c.KV.ModRevision, to)
				}
				got[changeString(c)] = true
				if rng.IntN(4) == 0 {
					// Below this version, even below older versions of its
					// key still to come.
					to = min(to, from+rng.Int64N(c.KV.ModRevision-from+1))
				}
				return nil
			})
			if err != nil {
				t.Fatalf("changes between: %v", err)
			}
			for _, want := range m.changesBetween(key, end, from, to) {
				if !got[want] {
					t.Fatalf("changes [%q, %q) from %d, bound lowered to %d: got %d changes without %q, want it among them", key, end, from, to, len(got), want)
				}
			}
		}
	}
}
