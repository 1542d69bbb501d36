package lease

import (
	"cmp"
	"errors"
	"math"
	"slices"
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
	// ErrCheckpointPending means the lease has a checkpoint proposed whose
	// outcome is not known yet, or one that was not reset: renewing it now
	// could let that checkpoint land after the renewal (see NeedsReset).
	ErrCheckpointPending = errors.New("lease checkpoint pending")
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
//
// Its periodic work costs what is due, not what exists. Leases wait in
// indexed min-heaps: the expiry heap (by expiry) until they are handed out
// for revocation, then the pending heap (by when) until RevokeRetry; and
// the checkpoint heap (by when they next need a checkpoint) until they are
// seen there past their expiry. Expired and Checkpoints look only at the
// tops of the heaps that are due.
//
// A renewal only moves a lease's expiry later: it leaves the lease's place
// in the heaps alone (O(1)), and the heaps keep the earlier time as a lower
// bound. When that time comes round, the lease is put back at its real
// time (O(log n)), once per renewal at most: the heap work follows the
// keep-alive rate, and Expired and Checkpoints still see the leases in the
// order of their real times. An applied checkpoint moves the lease in the
// checkpoint heap at once.
type Lessor struct {
	cfg Config

	mu struct {
		sync.Mutex
		primary bool
		term    uint64 // the Raft term the lessor was promoted in
		leases  map[int64]*timer
		// base is the time the timers' offsets count from: the first
		// time the lessor was given (an offset is a third of a time.Time).
		base     time.Time
		hasBase  bool
		expiry   timerHeap // leases not handed out, by expiry
		pending  timerHeap // leases handed out for revocation, by when
		cps      timerHeap // leases not seen expired, by next checkpoint
		examined int       // heap entries looked at by Expired and Checkpoints (tests)
		// settled is closed (and cleared) when a proposal of checkpoints
		// returns, to wake renewals waiting on one (NeedsReset).
		settled chan struct{}
	}
}

// cpState is where a lease's last checkpoint handed out by Checkpoints is.
type cpState uint8

const (
	cpIdle     cpState = iota // none handed out, or its outcome is known
	cpProposed                // handed out, its proposal not returned yet
	cpUnknown                 // its proposal failed: it may still apply
)

// timer is one lease. Times are nanoseconds since the lessor's base.
type timer struct {
	id     int64
	ttl    time.Duration
	expiry int64
	// checkpointed is the remaining TTL in the replicated record (0: none).
	checkpointed time.Duration
	// idx is the lease's position in the expiry heap if it is 0 or more,
	// or -idx-1 in the pending heap.
	idx int32
	// cpIdx is its position in the checkpoint heap (-1: not in it).
	cpIdx int32
	// cp is where the last checkpoint handed out is.
	cp cpState
}

func (t *timer) pending() bool { return t.idx < 0 }

// checkpointAt is the first time the lease needs a checkpoint: once its
// remaining TTL is below half its TTL and, if it has a checkpoint, that
// has dropped by interval. It is due only while the lease has not expired.
func (t *timer) checkpointAt(interval time.Duration) int64 {
	at := add(sub(t.expiry, int64(t.ttl/2)), 1)
	if t.checkpointed > 0 {
		at = max(at, add(sub(t.expiry, int64(t.checkpointed)), int64(interval)))
	}
	return at
}

// add and sub saturate: a TTL may be 285 years.
func add(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	if b < 0 && a < math.MinInt64-b {
		return math.MinInt64
	}
	return a + b
}

func sub(a, b int64) int64 {
	if b == math.MinInt64 {
		return add(add(a, math.MaxInt64), 1)
	}
	return add(a, -b)
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
	l.resetLocked()
	return l
}

func (l *Lessor) resetLocked() {
	l.wakeLocked()
	l.mu.leases = map[int64]*timer{}
	l.mu.expiry = timerHeap{kind: expiryHeap}
	l.mu.pending = timerHeap{kind: pendingHeap}
	l.mu.cps = timerHeap{kind: checkpointHeap}
}

// offsetLocked converts a time to the timers' offsets.
func (l *Lessor) offsetLocked(now time.Time) int64 {
	if !l.mu.hasBase {
		l.mu.base, l.mu.hasBase = now, true
	}
	return int64(now.Sub(l.mu.base))
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
	l.resetLocked()
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
	off := l.offsetLocked(now)
	for _, r := range recs {
		if _, ok := l.mu.leases[r.ID]; ok {
			continue // an apply hook got there first, with newer state
		}
		t := &timer{id: r.ID, ttl: seconds(r.TTL), checkpointed: time.Duration(r.RemainingMs) * time.Millisecond}
		t.expiry = add(off, int64(t.ttl))
		if t.checkpointed > 0 {
			t.expiry = add(off, int64(t.checkpointed))
		}
		l.mu.leases[r.ID] = t
		l.mu.expiry.append(t, t.expiry)
		l.mu.cps.append(t, t.checkpointAt(l.cfg.CheckpointInterval))
	}
	// Building the heaps at once is linear in the number of leases.
	l.mu.expiry.init()
	l.mu.cps.init()
}

// Demote forgets every lease: this node is no longer the leader.
func (l *Lessor) Demote() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.primary = false
	l.mu.term = 0
	l.resetLocked()
}

func seconds(s int64) time.Duration { return time.Duration(s) * time.Second }

// Granted records an applied grant.
func (l *Lessor) Granted(now time.Time, id, ttlSeconds int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.primary {
		return
	}
	if old, ok := l.mu.leases[id]; ok {
		l.removeLocked(old)
	}
	ttl := seconds(ttlSeconds)
	t := &timer{id: id, ttl: ttl, expiry: add(l.offsetLocked(now), int64(ttl))}
	l.mu.leases[id] = t
	l.mu.expiry.push(t, t.expiry)
	l.mu.cps.push(t, t.checkpointAt(l.cfg.CheckpointInterval))
}

// removeLocked takes a lease out of the map and the heaps.
func (l *Lessor) removeLocked(t *timer) {
	delete(l.mu.leases, t.id)
	if t.pending() {
		l.mu.pending.remove(int(-t.idx - 1))
	} else {
		l.mu.expiry.remove(int(t.idx))
	}
	if t.cpIdx >= 0 {
		l.mu.cps.remove(int(t.cpIdx))
	}
}

// Revoked records an applied revocation.
func (l *Lessor) Revoked(id int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.mu.leases[id]; ok {
		l.removeLocked(t)
	}
}

// Checkpointed records an applied checkpoint (remainingMs 0: reset).
func (l *Lessor) Checkpointed(id, remainingMs int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.mu.leases[id]; ok {
		t.checkpointed = time.Duration(remainingMs) * time.Millisecond
		if t.cp == cpUnknown {
			// A failed proposal is either in the log before this
			// checkpoint or never will be (see NeedsReset).
			t.cp = cpIdle
		}
		if t.cpIdx >= 0 {
			i := int(t.cpIdx)
			l.mu.cps.e[i].at = t.checkpointAt(l.cfg.CheckpointInterval)
			l.mu.cps.fix(i)
		}
	}
}

// earlierLocked moves a lease up in the heaps whose real time for it is
// now earlier than its place there; later times are left for the heap's
// top to find.
func (l *Lessor) earlierLocked(t *timer) {
	if !t.pending() {
		if i := int(t.idx); t.expiry < l.mu.expiry.e[i].at {
			l.mu.expiry.e[i].at = t.expiry
			l.mu.expiry.up(i)
		}
	}
	if t.cpIdx >= 0 {
		i := int(t.cpIdx)
		if at := t.checkpointAt(l.cfg.CheckpointInterval); at < l.mu.cps.e[i].at {
			l.mu.cps.e[i].at = at
			l.mu.cps.up(i)
		}
	}
}

// NeedsReset reports whether the lease has a checkpoint that must be reset
// through Raft before a renewal is acknowledged: otherwise a failover would
// start the renewed lease from the old, shorter remaining TTL.
//
// A checkpoint handed out by Checkpoints counts from then on, before it
// applies: a renewal acknowledged while it is in flight would otherwise see
// no checkpoint, and the checkpoint would land after the renewal. While its
// proposal has not returned, wait is non-nil: the caller waits for it and
// asks again, so that the reset it then proposes follows the checkpoint in
// the log. A checkpoint whose proposal failed may still apply; it is in the
// log by then or never will be, and a reset proposed after it follows it.
func (l *Lessor) NeedsReset(id int64) (need bool, wait <-chan struct{}, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, err := l.getLocked(id)
	if err != nil {
		return false, nil, err
	}
	switch t.cp {
	case cpProposed:
		if l.mu.settled == nil {
			l.mu.settled = make(chan struct{})
		}
		return true, l.mu.settled, nil
	case cpUnknown:
		return true, nil, nil
	}
	return t.checkpointed > 0, nil, nil
}

// CheckpointsSettled records that the proposal of cps, handed out by
// Checkpoints, returned: applied says whether it applied. It wakes the
// renewals waiting on them (NeedsReset).
func (l *Lessor) CheckpointsSettled(cps []Checkpoint, applied bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, cp := range cps {
		if t, ok := l.mu.leases[cp.ID]; ok && t.cp == cpProposed {
			if applied {
				t.cp = cpIdle
			} else {
				t.cp = cpUnknown
			}
		}
	}
	l.wakeLocked()
}

// wakeLocked wakes the renewals waiting for a checkpoint's proposal.
func (l *Lessor) wakeLocked() {
	if l.mu.settled != nil {
		close(l.mu.settled)
		l.mu.settled = nil
	}
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
// checkpoint first (NeedsReset); Renew then forgets it locally. A lease
// with a checkpoint handed out since, whose outcome is not known, is not
// renewed (ErrCheckpointPending): the caller asks NeedsReset again. It
// moves nothing in the heaps (see Lessor).
func (l *Lessor) Renew(now time.Time, id int64) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, err := l.getLocked(id)
	if err != nil {
		return 0, err
	}
	off := l.offsetLocked(now)
	if off >= t.expiry {
		return 0, ErrNotFound
	}
	if t.cp != cpIdle {
		return 0, ErrCheckpointPending
	}
	t.expiry = add(off, int64(t.ttl))
	t.checkpointed = 0
	if t.pending() {
		// Handed out for revocation although not expired: only a clock
		// going back (in tests) gets here.
		l.mu.pending.remove(int(-t.idx - 1))
		l.mu.expiry.push(t, t.expiry)
	}
	if t.cpIdx < 0 {
		l.mu.cps.push(t, t.checkpointAt(l.cfg.CheckpointInterval))
	}
	// A lease renewed with its checkpoint not reset may need its next
	// checkpoint sooner than its place says (and so may any lease when the
	// clock goes back, in tests).
	l.earlierLocked(t)
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
	return time.Duration(max(sub(t.expiry, l.offsetLocked(now)), 0)), int64(t.ttl / time.Second), nil
}

// Expired hands out up to limit leases past their expiry, soonest expired
// first, and marks them as being revoked. A lease whose revocation has not
// been applied within RevokeRetry is handed out again. It looks only at the
// leases it hands out, those whose retry is due, and renewed leases whose
// former expiry has come.
func (l *Lessor) Expired(now time.Time, limit int) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.primary {
		return nil
	}
	off := l.offsetLocked(now)
	retry := int64(l.cfg.RevokeRetry)
	// Revocations not applied in time become eligible again, keeping
	// their place by expiry.
	for l.mu.pending.len() > 0 {
		l.mu.examined++
		top := l.mu.pending.e[0]
		if sub(off, top.at) < retry {
			break
		}
		l.mu.pending.remove(0)
		l.mu.expiry.push(top.t, top.t.expiry)
	}
	var out []int64
	for len(out) < limit && l.mu.expiry.len() > 0 {
		l.mu.examined++
		top := l.mu.expiry.e[0]
		if off < top.at {
			break
		}
		if t := top.t; top.at < t.expiry {
			// Renewed since it took this place: move it to its expiry.
			l.mu.expiry.e[0].at = t.expiry
			l.mu.expiry.down(0)
			continue
		}
		l.mu.expiry.remove(0)
		l.mu.pending.push(top.t, off)
		out = append(out, top.t.id)
	}
	return out
}

// RevokeFailed makes a lease whose revocation failed eligible again.
func (l *Lessor) RevokeFailed(id int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.mu.leases[id]; ok && t.pending() {
		l.mu.pending.remove(int(-t.idx - 1))
		l.mu.expiry.push(t, t.expiry)
	}
}

// Checkpoints returns the remaining TTLs to record through Raft, ordered by
// lease ID: those of leases unrenewed for half their TTL whose remaining
// time dropped by the checkpoint interval since their last checkpoint.
// Healthy leases, renewed every third of their TTL, never qualify. The
// caller proposes them and reports the outcome (CheckpointsSettled); until
// then they are not returned again, and are in flight for NeedsReset. A
// lease stays due, and is returned again once settled, until its
// checkpoint is applied (Checkpointed). It looks only at the due leases, renewed leases whose
// former checkpoint time has come, and the heap children that bound them.
func (l *Lessor) Checkpoints(now time.Time) []Checkpoint {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.primary {
		return nil
	}
	off := l.offsetLocked(now)
	h := &l.mu.cps
	var out []Checkpoint
	var gone, later []*timer
	// Every lease due has its place in the subtree of places due under the
	// root: walk it without popping, since a due lease stays due.
	stack := []int{0}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if i >= h.len() {
			continue
		}
		l.mu.examined++
		e := h.e[i]
		if e.at > off {
			continue
		}
		stack = append(stack, 2*i+1, 2*i+2)
		t := e.t
		switch remaining := sub(t.expiry, off); {
		case t.checkpointAt(l.cfg.CheckpointInterval) > off:
			later = append(later, t) // renewed since it took this place
		case remaining <= 0:
			gone = append(gone, t) // expired: never checkpointed again
		case t.cp == cpProposed:
			// Its proposal has not returned: not twice in flight.
		default:
			t.cp = cpProposed
			out = append(out, Checkpoint{ID: t.id, RemainingMs: max(time.Duration(remaining).Milliseconds(), 1)})
		}
	}
	for _, t := range later {
		i := int(t.cpIdx)
		h.e[i].at = t.checkpointAt(l.cfg.CheckpointInterval)
		h.down(i)
	}
	for _, t := range gone {
		h.remove(int(t.cpIdx))
	}
	slices.SortFunc(out, func(a, b Checkpoint) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Len returns the number of leases tracked.
func (l *Lessor) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.mu.leases)
}

// heapKind says which of a timer's positions a heap keeps.
type heapKind uint8

const (
	expiryHeap heapKind = iota
	pendingHeap
	checkpointHeap
)

// entry is a place in a heap: a lease and its time there, which for the
// expiry and checkpoint heaps may be earlier than the lease's real time
// (see Lessor), never later. Keeping the time in the entry keeps sifting
// within the heap's array.
type entry struct {
	at int64
	t  *timer
}

// timerHeap is a min-heap of entries by time, then lease ID, that keeps
// each timer's position in it up to date.
type timerHeap struct {
	kind heapKind
	e    []entry
}

func (h *timerHeap) len() int { return len(h.e) }

func (h *timerHeap) less(i, j int) bool {
	a, b := &h.e[i], &h.e[j]
	if a.at != b.at {
		return a.at < b.at
	}
	return a.t.id < b.t.id
}

func (h *timerHeap) setPos(i int) {
	t := h.e[i].t
	switch h.kind {
	case expiryHeap:
		t.idx = int32(i)
	case pendingHeap:
		t.idx = int32(-i - 1)
	case checkpointHeap:
		t.cpIdx = int32(i)
	}
}

func (h *timerHeap) swap(i, j int) {
	h.e[i], h.e[j] = h.e[j], h.e[i]
	h.setPos(i)
	h.setPos(j)
}

// append adds an entry without restoring the heap order (see init).
func (h *timerHeap) append(t *timer, at int64) {
	h.e = append(h.e, entry{at: at, t: t})
	h.setPos(len(h.e) - 1)
}

func (h *timerHeap) init() {
	for i := len(h.e)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *timerHeap) push(t *timer, at int64) {
	h.append(t, at)
	h.up(len(h.e) - 1)
}

// remove takes out the entry at i.
func (h *timerHeap) remove(i int) {
	n := len(h.e) - 1
	t := h.e[i].t
	if i != n {
		h.swap(i, n)
	}
	h.e[n] = entry{}
	h.e = h.e[:n]
	if i != n {
		h.fix(i)
	}
	if h.kind == checkpointHeap {
		t.cpIdx = -1
	}
}

// fix restores the order after the time of the entry at i changed.
func (h *timerHeap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h *timerHeap) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		j = i
	}
}

// down sifts the entry at i0 down and reports whether it moved.
func (h *timerHeap) down(i0 int) bool {
	n := len(h.e)
	i := i0
	for {
		j := 2*i + 1
		if j >= n || j < 0 {
			break
		}
		if r := j + 1; r < n && h.less(r, j) {
			j = r
		}
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		i = j
	}
	return i > i0
}
