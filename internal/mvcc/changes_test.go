package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

func changeString(c Change) string {
	return fmt.Sprintf("%v %s prev=%s sub=%d", c.Type, kvString(c.KV), kvString(c.PrevKV), c.Sub)
}

// modelChanges lists what ChangesSince must report, in its order.
func (m *model) changes(key, end []byte, fromRev int64) []string {
	var out []string
	for _, k := range m.sortedKeys() {
		if bytes.Compare([]byte(k), key) < 0 || (end != nil && bytes.Compare([]byte(k), end) >= 0) {
			continue
		}
		vs := m.versions[k]
		for i := len(vs) - 1; i >= 0 && vs[i].rev >= fromRev; i-- {
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
