package lease

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
	"time"
)

// modelLessor is the lessor as it was first written: a map walked in full
// at every call. The Lessor must behave exactly like it.
type modelLessor struct {
	cfg    Config
	leases map[int64]*modelTimer
}

type modelTimer struct {
	ttl          time.Duration
	expiry       time.Time
	checkpointed time.Duration
	revokeAt     time.Time
	// unknown: a checkpoint was proposed and its proposal failed.
	unknown bool
}

func (m *modelLessor) granted(now time.Time, id, ttl int64) {
	m.leases[id] = &modelTimer{ttl: seconds(ttl), expiry: now.Add(seconds(ttl))}
}

func (m *modelLessor) merge(now time.Time, recs []Record) {
	for _, r := range recs {
		if _, ok := m.leases[r.ID]; ok {
			continue
		}
		t := &modelTimer{ttl: seconds(r.TTL), checkpointed: time.Duration(r.RemainingMs) * time.Millisecond}
		t.expiry = now.Add(t.ttl)
		if t.checkpointed > 0 {
			t.expiry = now.Add(t.checkpointed)
		}
		m.leases[r.ID] = t
	}
}

func (m *modelLessor) renew(now time.Time, id int64) (int64, error) {
	t, ok := m.leases[id]
	if !ok || !now.Before(t.expiry) {
		return 0, ErrNotFound
	}
	if t.unknown {
		return 0, ErrCheckpointPending
	}
	t.expiry = now.Add(t.ttl)
	t.checkpointed = 0
	t.revokeAt = time.Time{}
	return int64(t.ttl / time.Second), nil
}

func (m *modelLessor) expired(now time.Time, limit int) []int64 {
	type due struct {
		id     int64
		expiry time.Time
	}
	var dues []due
	for id, t := range m.leases {
		if now.Before(t.expiry) {
			continue
		}
		if !t.revokeAt.IsZero() && now.Sub(t.revokeAt) < m.cfg.RevokeRetry {
			continue
		}
		dues = append(dues, due{id, t.expiry})
	}
	sort.Slice(dues, func(i, j int) bool {
		if !dues[i].expiry.Equal(dues[j].expiry) {
			return dues[i].expiry.Before(dues[j].expiry)
		}
		return dues[i].id < dues[j].id
	})
	if len(dues) > limit {
		dues = dues[:limit]
	}
	var out []int64
	for _, d := range dues {
		m.leases[d.id].revokeAt = now
		out = append(out, d.id)
	}
	return out
}

func (m *modelLessor) checkpoints(now time.Time) []Checkpoint {
	var out []Checkpoint
	for id, t := range m.leases {
		remaining := t.expiry.Sub(now)
		if remaining <= 0 || remaining >= t.ttl/2 {
			continue
		}
		if t.checkpointed > 0 && t.checkpointed-remaining < m.cfg.CheckpointInterval {
			continue
		}
		out = append(out, Checkpoint{ID: id, RemainingMs: max(remaining.Milliseconds(), 1)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// TestLessorMatchesModel drives the Lessor and the model with the same
// random calls, as the server makes them (time never goes back), and
// compares every answer.
func TestLessorMatchesModel(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		cfg := Config{CheckpointInterval: time.Second, RevokeRetry: 2 * time.Second}
		l := NewLessor(cfg)
		m := &modelLessor{cfg: cfg, leases: map[int64]*modelTimer{}}
		now := t0
		l.Promote(1)
		id := func() int64 { return int64(rng.IntN(60)) - 10 }
		for step := range 3000 {
			now = now.Add(time.Duration(rng.IntN(400)) * time.Millisecond)
			fail := func(what string, got, want any) {
				t.Helper()
				t.Fatalf("seed %d step %d, %s: got %v, want %v", seed, step, what, got, want)
			}
			switch op := rng.IntN(100); {
			case op < 15:
				i, ttl := id(), int64(1+rng.IntN(20))
				l.Granted(now, i, ttl)
				m.granted(now, i, ttl)
			case op < 35:
				i := id()
				gotTTL, gotErr := l.Renew(now, i)
				wantTTL, wantErr := m.renew(now, i)
				if gotTTL != wantTTL || !errors.Is(gotErr, wantErr) && gotErr != wantErr {
					fail("renew", []any{gotTTL, gotErr}, []any{wantTTL, wantErr})
				}
			case op < 40:
				i := id()
				l.Revoked(i)
				delete(m.leases, i)
			case op < 50:
				// The server applies some of the checkpoints it proposed;
				// the proposals of the others fail.
				for _, cp := range l.Checkpoints(now) {
					applied := rng.IntN(3) > 0
					if applied {
						l.Checkpointed(cp.ID, cp.RemainingMs)
						m.leases[cp.ID].checkpointed = time.Duration(cp.RemainingMs) * time.Millisecond
						m.leases[cp.ID].unknown = false
					} else {
						m.leases[cp.ID].unknown = true
					}
					l.CheckpointsSettled([]Checkpoint{cp}, applied)
				}
			case op < 53:
				i := id()
				l.Checkpointed(i, 0)
				if mt, ok := m.leases[i]; ok {
					mt.checkpointed = 0
					mt.unknown = false
				}
			case op < 70:
				limit := 1 + rng.IntN(5)
				got, want := l.Expired(now, limit), m.expired(now, limit)
				if !reflect.DeepEqual(got, want) {
					fail("expired", got, want)
				}
				// Some revocations apply, some fail.
				for _, i := range got {
					switch rng.IntN(4) {
					case 0:
						l.Revoked(i)
						delete(m.leases, i)
					case 1:
						l.RevokeFailed(i)
						m.leases[i].revokeAt = time.Time{}
					}
				}
			case op < 80:
				got, want := l.Checkpoints(now), m.checkpoints(now)
				if !reflect.DeepEqual(got, want) {
					fail("checkpoints", got, want)
				}
				// Their proposal fails.
				l.CheckpointsSettled(got, false)
				for _, cp := range got {
					m.leases[cp.ID].unknown = true
				}
			case op < 90:
				i := id()
				gotRem, gotTTL, gotErr := l.Remaining(now, i)
				var want []any
				if mt, ok := m.leases[i]; ok {
					want = []any{max(mt.expiry.Sub(now), 0), int64(mt.ttl / time.Second), nil}
				} else {
					want = []any{time.Duration(0), int64(0), ErrNotFound}
				}
				got := []any{gotRem, gotTTL, gotErr}
				if !reflect.DeepEqual(got, want) {
					fail("remaining", got, want)
				}
				need, wait, err := l.NeedsReset(i)
				if mt, ok := m.leases[i]; ok && (err != nil || wait != nil || need != (mt.checkpointed > 0 || mt.unknown)) {
					fail("needs reset", []any{need, wait, err}, mt.checkpointed > 0 || mt.unknown)
				}
			case op < 92:
				// A failover: the new leader starts from the table.
				var recs []Record
				for i, mt := range m.leases {
					recs = append(recs, Record{ID: i, TTL: int64(mt.ttl / time.Second), RemainingMs: mt.checkpointed.Milliseconds()})
				}
				l.Demote()
				l.Promote(uint64(step))
				m.leases = map[int64]*modelTimer{}
				if len(recs) > 0 {
					// A grant applied between Promote and Merge wins.
					r := recs[0]
					l.Granted(now, r.ID, r.TTL)
					m.granted(now, r.ID, r.TTL)
				}
				l.Merge(now, recs)
				m.merge(now, recs)
			}
			if l.Len() != len(m.leases) {
				fail("len", l.Len(), len(m.leases))
			}
		}
	}
}
