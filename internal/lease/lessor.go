package lease

import (
	"errors"
	"sort"
	"sync"
	"time"
)

// Errors of the Lessor.
var (
	// ErrNotPrimary means this node's lessor is not the leader's: the
	// request must go to the leader.
	ErrNotPrimary = errors.New("lessor is not primary")
	// ErrNotFound means the lease does not exist (or has expired).
	ErrNotFound = errors.New("lease not found")
)

// Checkpoint is the remaining TTL of one lease to record through Raft.
type Checkpoint struct {
	ID          int64
	RemainingMs int64
}

// Config configures a Lessor.
type Config struct {
	// CheckpointInterval is the drop in remaining TTL between two
	// checkpoints of a lease, and so the most a failover can lengthen a
	// lease by (default 1s).
	CheckpointInterval time.Duration
	// RevokeRetry is how long a lease handed out by Expired waits for its
	// revocation before it is handed out again (default 5s).
	RevokeRetry time.Duration
}

// Lessor tracks lease expiry on the leader. It is safe for concurrent use.
type Lessor struct {
	cfg Config

	mu struct {
		sync.Mutex
		primary bool
		term    uint64 // the Raft term the lessor was promoted in
		leases  map[int64]*timer
	}
}

type timer struct {
	ttl    time.Duration
	expiry time.Time
	// checkpointed is the remaining TTL in the replicated record (0: none).
	checkpointed time.Duration
	// revokeAt is when the lease was handed out for revocation (zero: not).
	revokeAt time.Time
}

// NewLessor returns a lessor that is not primary.
func NewLessor(cfg Config) *Lessor {
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = time.Second
	}
	if cfg.RevokeRetry <= 0 {
		cfg.RevokeRetry = 5 * time.Second
	}
	l := &Lessor{cfg: cfg}
	l.mu.leases = map[int64]*timer{}
	return l
}

// Primary reports whether the lessor is the leader's.
func (l *Lessor) Primary() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.primary
}

// Promote makes the lessor primary, for the leadership of term, with no
// leases. From then on the apply hooks (Granted, Revoked, Checkpointed) keep
// it current; the caller then reads the lease table and calls Merge, so that
// no grant applied in between is missed.
func (l *Lessor) Promote(term uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.primary = true
	l.mu.term = term
	l.mu.leases = map[int64]*timer{}
}

// Term returns the term the lessor was promoted in (0 if not primary).
// Decisions of the lessor are proposed fenced to it.
func (l *Lessor) Term() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.primary {
		return 0
	}
	return l.mu.term
}

// Merge adds leases read from the replicated table after Promote. A lease
// starts from its checkpointed remaining TTL, or its full TTL.
func (l *Lessor) Merge(now time.Time, recs []Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.primary {
		return
	}
	for _, r := range recs {
		if _, ok := l.mu.leases[r.ID]; ok {
			continue // an apply hook got there first, with newer state
		}
		t := &timer{ttl: seconds(r.TTL), checkpointed: time.Duration(r.RemainingMs) * time.Millisecond}
		t.expiry = now.Add(t.ttl)
		if t.checkpointed > 0 {
			t.expiry = now.Add(t.checkpointed)
		}
		l.mu.leases[r.ID] = t
	}
}

// Demote forgets every lease: this node is no longer the leader.
func (l *Lessor) Demote() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.primary = false
	l.mu.term = 0
	l.mu.leases = map[int64]*timer{}
}

func seconds(s int64) time.Duration { return time.Duration(s) * time.Second }

// Granted records an applied grant.
func (l *Lessor) Granted(now time.Time, id, ttlSeconds int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.primary {
		return
	}
	ttl := seconds(ttlSeconds)
	l.mu.leases[id] = &timer{ttl: ttl, expiry: now.Add(ttl)}
}

// Revoked records an applied revocation.
func (l *Lessor) Revoked(id int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.mu.leases, id)
}

// Checkpointed records an applied checkpoint (remainingMs 0: reset).
func (l *Lessor) Checkpointed(id, remainingMs int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.mu.leases[id]; ok {
		t.checkpointed = time.Duration(remainingMs) * time.Millisecond
	}
}

// NeedsReset reports whether the lease has a checkpoint that must be reset
// through Raft before a renewal is acknowledged: otherwise a failover would
// start the renewed lease from the old, shorter remaining TTL.
func (l *Lessor) NeedsReset(id int64) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, err := l.getLocked(id)
	if err != nil {
		return false, err
	}
	return t.checkpointed > 0, nil
}

func (l *Lessor) getLocked(id int64) (*timer, error) {
	if !l.mu.primary {
		return nil, ErrNotPrimary
	}
	t, ok := l.mu.leases[id]
	if !ok {
		return nil, ErrNotFound
	}
	return t, nil
}

// Renew extends a lease to its full TTL and returns the TTL in seconds. A
// lease past its expiry cannot be renewed. The caller must have reset any
// checkpoint first (NeedsReset); Renew then forgets it locally.
func (l *Lessor) Renew(now time.Time, id int64) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, err := l.getLocked(id)
	if err != nil {
		return 0, err
	}
	if !now.Before(t.expiry) {
		return 0, ErrNotFound
	}
	t.expiry = now.Add(t.ttl)
	t.checkpointed = 0
	t.revokeAt = time.Time{}
	return int64(t.ttl / time.Second), nil
}

// Remaining returns the time left before the lease expires, and its
// granted TTL in seconds.
func (l *Lessor) Remaining(now time.Time, id int64) (remaining time.Duration, ttlSeconds int64, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, err := l.getLocked(id)
	if err != nil {
		return 0, 0, err
	}
	return max(t.expiry.Sub(now), 0), int64(t.ttl / time.Second), nil
}

// Expired hands out up to limit leases past their expiry, soonest expired
// first, and marks them as being revoked. A lease whose revocation has not
// been applied within RevokeRetry is handed out again.
func (l *Lessor) Expired(now time.Time, limit int) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.primary {
		return nil
	}
	type due struct {
		id     int64
		expiry time.Time
	}
	var dues []due
	for id, t := range l.mu.leases {
		if now.Before(t.expiry) {
			continue
		}
		if !t.revokeAt.IsZero() && now.Sub(t.revokeAt) < l.cfg.RevokeRetry {
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
	out := make([]int64, len(dues))
	for i, d := range dues {
		l.mu.leases[d.id].revokeAt = now
		out[i] = d.id
	}
	return out
}

// RevokeFailed makes a lease whose revocation failed eligible again.
func (l *Lessor) RevokeFailed(id int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.mu.leases[id]; ok {
		t.revokeAt = time.Time{}
	}
}

// Checkpoints returns the remaining TTLs to record through Raft: those of
// leases unrenewed for half their TTL whose remaining time dropped by the
// checkpoint interval since their last checkpoint. Healthy leases, renewed
// every third of their TTL, never qualify.
func (l *Lessor) Checkpoints(now time.Time) []Checkpoint {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.primary {
		return nil
	}
	var out []Checkpoint
	for id, t := range l.mu.leases {
		remaining := t.expiry.Sub(now)
		if remaining <= 0 || remaining >= t.ttl/2 {
			continue
		}
		if t.checkpointed > 0 && t.checkpointed-remaining < l.cfg.CheckpointInterval {
			continue
		}
		out = append(out, Checkpoint{ID: id, RemainingMs: max(remaining.Milliseconds(), 1)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Len returns the number of leases tracked.
func (l *Lessor) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.mu.leases)
}
