package algo

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"time"
)

// Kind is a rate-limiting algorithm.
type Kind int

// The algorithms.
const (
	// GCRA is the generic cell rate algorithm: a token bucket holding up
	// to Burst tokens, refilled at Limit tokens per Period, kept as one
	// time (the theoretical arrival time of the next token).
	GCRA Kind = iota + 1
	// SlidingWindow is the sliding-window counter: the count of the
	// current window plus the previous window's weighted by the part of it
	// still inside a window ending now, at most Limit.
	SlidingWindow
	// FixedWindow allows Limit per window of Period, windows aligned on
	// the Unix epoch.
	FixedWindow
	// CalendarWindow allows Limit per calendar minute, hour, day, week
	// (from Monday) or month, in a time zone.
	CalendarWindow
)

func (k Kind) String() string {
	switch k {
	case GCRA:
		return "gcra"
	case SlidingWindow:
		return "sliding-window"
	case FixedWindow:
		return "fixed-window"
	case CalendarWindow:
		return "calendar-window"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Unit is the length of a calendar window.
type Unit int

// Calendar units.
const (
	Minute Unit = iota + 1
	Hour
	Day
	Week
	Month
)

func (u Unit) String() string {
	switch u {
	case Minute:
		return "minute"
	case Hour:
		return "hour"
	case Day:
		return "day"
	case Week:
		return "week"
	case Month:
		return "month"
	}
	return fmt.Sprintf("unit(%d)", int(u))
}

// Bounds on parameters, so that no computation overflows.
const (
	// MaxLimit is the largest Limit and Burst.
	MaxLimit = 1 << 40
	// MaxPeriod is the longest Period: 400 days.
	MaxPeriod = 400 * 24 * int64(time.Hour)
	// maxDrain bounds Burst times GCRA's emission interval: how far ahead
	// of now the bucket's time may be.
	maxDrain = 1 << 61
	// maxTime bounds GCRA's time (year 2116): forced charges stop there
	// rather than overflow.
	maxTime = 1 << 62
)

// Params are a limit's parameters.
type Params struct {
	Kind Kind
	// Limit is the number of tokens per Period (GCRA's rate) or per window.
	Limit int64
	// Period is GCRA's rate period or the window's length, in nanoseconds
	// (not used by CalendarWindow).
	Period int64
	// Burst is GCRA's bucket size (default Limit).
	Burst int64
	// Unit and Location define CalendarWindow's windows (default UTC).
	Unit     Unit
	Location *time.Location
}

// ErrCostTooLarge is returned for a cost above a limit's capacity: it could
// never be allowed.
var ErrCostTooLarge = errors.New("cost exceeds the limit's capacity")

// Validate checks the parameters.
func (p *Params) Validate() error {
	if p.Limit < 1 || p.Limit > MaxLimit {
		return fmt.Errorf("limit must be between 1 and %d, got %d", int64(MaxLimit), p.Limit)
	}
	switch p.Kind {
	case GCRA, SlidingWindow, FixedWindow:
		if p.Period < 1 || p.Period > MaxPeriod {
			return fmt.Errorf("period must be between 1ns and %s, got %s", time.Duration(MaxPeriod), time.Duration(p.Period))
		}
	case CalendarWindow:
		if p.Unit < Minute || p.Unit > Month {
			return fmt.Errorf("calendar window needs a unit (minute, hour, day, week or month)")
		}
	default:
		return fmt.Errorf("unknown algorithm %d", int(p.Kind))
	}
	if p.Kind == GCRA {
		if p.Burst < 0 || p.Burst > MaxLimit {
			return fmt.Errorf("burst must be between 1 and %d, got %d", int64(MaxLimit), p.Burst)
		}
		if p.Limit > p.Period || p.interval() > maxDrain/p.Capacity() {
			return fmt.Errorf("rate %d per %s with burst %d is out of range", p.Limit, time.Duration(p.Period), p.Capacity())
		}
	} else if p.Burst != 0 {
		return fmt.Errorf("burst applies to gcra only")
	}
	return nil
}

// Capacity is the most a key may take at once: GCRA's burst, a window's
// limit.
func (p *Params) Capacity() int64 {
	if p.Kind == GCRA && p.Burst > 0 {
		return p.Burst
	}
	return p.Limit
}

// interval is GCRA's emission interval, the time one token takes to come
// back: Period/Limit, rounded up so that the rate is never exceeded.
func (p *Params) interval() int64 {
	return (p.Period + p.Limit - 1) / p.Limit
}

// RatePerSecond is the long-run rate the limit allows (for windows, Limit
// per window length; a calendar month counts 30 days).
func (p *Params) RatePerSecond() float64 {
	switch p.Kind {
	case GCRA:
		return float64(time.Second) / float64(p.interval())
	case CalendarWindow:
		return float64(p.Limit) / unitLength(p.Unit).Seconds()
	}
	return float64(p.Limit) / (float64(p.Period) / float64(time.Second))
}

func unitLength(u Unit) time.Duration {
	switch u {
	case Minute:
		return time.Minute
	case Hour:
		return time.Hour
	case Day:
		return 24 * time.Hour
	case Week:
		return 7 * 24 * time.Hour
	}
	return 30 * 24 * time.Hour
}

// State is a key's state. The zero State is a key that took nothing.
type State struct {
	// TAT is GCRA's theoretical arrival time: the bucket is full at and
	// after it, and holds Burst-(TAT-now)/interval tokens before.
	TAT int64
	// Start is the start of the current window; Prev, Cur and Next the
	// tokens taken in the previous, current and next window (Next holds
	// reservations); NextAt the earliest time a reservation in Next is for.
	Start, Prev, Cur, Next, NextAt int64
}

// Decision is the outcome of a request.
type Decision struct {
	Allowed bool
	// Remaining is what the key could still take now (after this request,
	// if allowed).
	Remaining int64
	// RetryAfter, for a refused request, is how long until the same cost
	// would be allowed if nothing else were taken meanwhile (exact, never
	// early).
	RetryAfter int64
	// ResetAfter is how long until the key is back to its full capacity,
	// if nothing else were taken meanwhile.
	ResetAfter int64
	// Wait, for an allowed reservation, is how long the caller must wait
	// before acting on it.
	Wait int64
}

// CeilMillis converts nanoseconds to milliseconds, rounding up.
func CeilMillis(ns int64) int64 {
	if ns <= 0 {
		return 0
	}
	return (ns + int64(time.Millisecond) - 1) / int64(time.Millisecond)
}

// Take decides a request of cost at now. With consume false it only looks
// (peek): the state is returned unchanged. With maxWait > 0 a request that
// would be refused now but allowed within maxWait is allowed as a
// reservation: the tokens are taken now and Decision.Wait says when they
// may be used. It returns ErrCostTooLarge for a cost above the capacity.
func Take(p *Params, s State, now, cost, maxWait int64, consume bool) (State, Decision, error) {
	if cost < 0 {
		return s, Decision{}, errors.New("negative cost")
	}
	if cost > p.Capacity() {
		return s, Decision{}, ErrCostTooLarge
	}
	switch p.Kind {
	case GCRA:
		s2, d := takeGCRA(p, s, now, cost, maxWait)
		if !consume {
			s2 = s
		}
		return s2, d, nil
	case SlidingWindow:
		s2, d := takeSliding(p, s, now, cost, maxWait)
		if !consume {
			s2 = s
		}
		return s2, d, nil
	case FixedWindow, CalendarWindow:
		s2, d := takeFixed(p, s, now, cost, maxWait)
		if !consume {
			s2 = s
		}
		return s2, d, nil
	}
	return s, Decision{}, fmt.Errorf("unknown algorithm %d", int(p.Kind))
}

// Refund gives cost tokens back to a key at now (a request that did not
// use them). Windows give back from the current window first, then the
// next (reservations), then the previous. The state never holds more than
// full capacity.
func Refund(p *Params, s State, now, cost int64) State {
	if cost <= 0 {
		return s
	}
	switch p.Kind {
	case GCRA:
		tat := max(s.TAT, now)
		back := mulCap(cost, p.interval(), maxDrain)
		if tat-back <= now {
			return State{}
		}
		s.TAT = tat - back
		return s
	case SlidingWindow, FixedWindow, CalendarWindow:
		s = roll(p, s, now)
		for _, c := range []*int64{&s.Cur, &s.Next, &s.Prev} {
			n := min(*c, cost)
			*c -= n
			cost -= n
		}
		if s.Next == 0 {
			s.NextAt = 0
		}
		return s
	}
	return s
}

// Force takes cost tokens at now whether or not the key has them. A new
// owner charges each key this way for what its predecessor may have
// allowed since its last checkpoint.
func Force(p *Params, s State, now, cost int64) State {
	if cost <= 0 {
		return s
	}
	switch p.Kind {
	case GCRA:
		s.TAT = min(max(s.TAT, now)+mulCap(cost, p.interval(), maxDrain), maxTime)
		return s
	case SlidingWindow, FixedWindow, CalendarWindow:
		s = roll(p, s, now)
		s.Cur += cost
		return s
	}
	return s
}

// Full reports whether the key is back to its full capacity at now, with
// nothing reserved: its state may be forgotten.
func Full(p *Params, s State, now int64) bool {
	switch p.Kind {
	case GCRA:
		return s.TAT <= now
	case SlidingWindow, FixedWindow, CalendarWindow:
		s = roll(p, s, now)
		return s.Cur == 0 && s.Next == 0 && (s.Prev == 0 || p.Kind != SlidingWindow)
	}
	return true
}

// Normalize returns s as of now, with what has expired dropped (the zero
// State when the key is full): equal keys compare equal.
func Normalize(p *Params, s State, now int64) State {
	if Full(p, s, now) {
		return State{}
	}
	if p.Kind != GCRA {
		s = roll(p, s, now)
	}
	return s
}

// --- GCRA ---

func takeGCRA(p *Params, s State, now, cost, maxWait int64) (State, Decision) {
	t := p.interval()
	capacity := p.Capacity() * t // <= maxDrain (Validate)
	tat := max(s.TAT, now)
	newTAT := tat + cost*t
	// Allowed once newTAT - capacity <= now: the bucket then holds cost.
	at := newTAT - capacity
	switch {
	case at <= now:
		return State{TAT: newTAT}, Decision{
			Allowed:    true,
			Remaining:  (capacity - (newTAT - now)) / t,
			ResetAfter: newTAT - now,
		}
	case maxWait > 0 && at-now <= maxWait:
		return State{TAT: newTAT}, Decision{
			Allowed:    true,
			Wait:       at - now,
			ResetAfter: newTAT - now,
		}
	}
	return s, Decision{
		Remaining:  max(0, capacity-(tat-now)) / t,
		RetryAfter: at - now,
		ResetAfter: tat - now,
	}
}

// --- windows ---

// window returns the bounds [start, end) of the window holding t.
func window(p *Params, t int64) (int64, int64) {
	if p.Kind == CalendarWindow {
		return calendarWindow(p, t)
	}
	start := t - mod(t, p.Period)
	return start, start + p.Period
}

// next returns the end of the window starting at start, which is the start
// of the following one.
func next(p *Params, start int64) int64 {
	if p.Kind == CalendarWindow {
		_, end := calendarWindow(p, start)
		return end
	}
	return start + p.Period
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

func calendarWindow(p *Params, t int64) (int64, int64) {
	loc := p.Location
	if loc == nil {
		loc = time.UTC
	}
	tm := time.Unix(0, t).In(loc)
	var start, end time.Time
	y, mo, d := tm.Date()
	switch p.Unit {
	case Minute:
		start = time.Date(y, mo, d, tm.Hour(), tm.Minute(), 0, 0, loc)
		end = start.Add(time.Minute)
	case Hour:
		start = time.Date(y, mo, d, tm.Hour(), 0, 0, 0, loc)
		end = start.Add(time.Hour)
	case Day:
		start = time.Date(y, mo, d, 0, 0, 0, 0, loc)
		end = time.Date(y, mo, d+1, 0, 0, 0, 0, loc)
	case Week:
		back := (int(tm.Weekday()) + 6) % 7 // days since Monday
		start = time.Date(y, mo, d-back, 0, 0, 0, 0, loc)
		end = time.Date(y, mo, d-back+7, 0, 0, 0, 0, loc)
	default:
		start = time.Date(y, mo, 1, 0, 0, 0, 0, loc)
		end = time.Date(y, mo+1, 1, 0, 0, 0, 0, loc)
	}
	// A day that starts inside a DST gap begins at the gap's end; the
	// start of a window is never after t.
	if start.UnixNano() > t {
		start = time.Unix(0, t)
	}
	return start.UnixNano(), end.UnixNano()
}

// roll moves a window state to the window holding now. A time before the
// state's window (a clock behind the one that wrote the state) counts as
// in it.
func roll(p *Params, s State, now int64) State {
	if s.Start == 0 && s.Prev == 0 && s.Cur == 0 && s.Next == 0 {
		start, _ := window(p, now)
		return State{Start: start}
	}
	end := next(p, s.Start)
	if now < end {
		return s
	}
	if now < next(p, end) {
		return State{Start: end, Prev: s.Cur, Cur: s.Next}
	}
	start, _ := window(p, now)
	if start == next(p, end) {
		// Two windows on: the reservations are now the previous window.
		return State{Start: start, Prev: s.Next}
	}
	return State{Start: start}
}

func takeFixed(p *Params, s State, now, cost, maxWait int64) (State, Decision) {
	s = roll(p, s, now)
	end := next(p, s.Start)
	reset := func(st State) int64 {
		switch {
		case st.Next > 0:
			return next(p, end) - now
		case st.Cur > 0:
			return end - now
		}
		return 0
	}
	if s.Cur+cost <= p.Limit {
		s.Cur += cost
		return s, Decision{Allowed: true, Remaining: p.Limit - s.Cur, ResetAfter: reset(s)}
	}
	if s.Next+cost <= p.Limit {
		if maxWait > 0 && end-now <= maxWait {
			s.Next += cost
			s.NextAt = end
			return s, Decision{Allowed: true, Wait: end - now, ResetAfter: reset(s)}
		}
		return s, Decision{Remaining: p.Limit - s.Cur, RetryAfter: end - now, ResetAfter: reset(s)}
	}
	return s, Decision{Remaining: p.Limit - s.Cur, RetryAfter: next(p, end) - now, ResetAfter: reset(s)}
}

// The sliding-window counter at time t of the window [S, S+W) estimates
// prev*(S+W-t)/W + cur, and allows a request when the estimate with its
// cost is at most Limit. Reservations for the next window sit in Next; a
// request in the current window must also leave room for them at the
// earliest time one is for (NextAt), where the current window weighs most.
func takeSliding(p *Params, s State, now, cost, maxWait int64) (State, Decision) {
	s = roll(p, s, now)
	w, l := p.Period, p.Limit
	start := s.Start
	at := max(now, start) // a clock behind the state's counts as its window start
	lw := mul(l, w)
	// The estimate after taking cost now, times W.
	fits := func(prev, cur, elapsed int64) bool {
		return add(mul(prev, w-elapsed), mul(cur, w)).le(lw)
	}
	bookingsFit := func(cur int64) bool {
		// The reservations still fit with the current window at cur.
		return s.Next == 0 || fits(cur, s.Next, s.NextAt-(start+w))
	}
	reset := func(st State) int64 {
		switch {
		case st.Next > 0:
			return start + 3*w - now
		case st.Cur > 0:
			return start + 2*w - now
		case st.Prev > 0:
			return start + w - now
		}
		return 0
	}
	remaining := func(st State) int64 {
		// l - ceil(prev*(S+W-at)/W) - cur, at least 0.
		used := ceilMulDiv(st.Prev, w-(at-start), w) + st.Cur
		return max(0, l-used)
	}
	if fits(s.Prev, s.Cur+cost, at-start) && bookingsFit(s.Cur+cost) {
		s.Cur += cost
		return s, Decision{Allowed: true, Remaining: remaining(s), ResetAfter: reset(s)}
	}
	refused := Decision{Remaining: remaining(s), ResetAfter: reset(s)}
	// When would it fit? In this window, as the previous one weighs less:
	// prev*(S+W-t) <= (l-cur-cost)*W.
	if room := l - s.Cur - cost; room >= 0 && s.Prev > 0 && bookingsFit(s.Cur+cost) && start+w-mulDivFloorCap(room, w, s.Prev, w) < start+w {
		t := start + w - mulDivFloorCap(room, w, s.Prev, w)
		t = max(t, at)
		if maxWait > 0 && t-now <= maxWait {
			// Taken now, in this window: the estimate only falls until t.
			s.Cur += cost
			return s, Decision{Allowed: true, Wait: t - now, ResetAfter: reset(s)}
		}
		refused.RetryAfter = t - now
		return s, refused
	}
	// In the next window, where this one weighs as the previous:
	// cur*(S+2W-t) <= (l-next-cost)*W.
	if room := l - s.Next - cost; room >= 0 {
		t := start + w
		if s.Cur > 0 {
			t = max(t, start+2*w-mulDivFloorCap(room, w, s.Cur, w))
		}
		if t < start+2*w {
			if maxWait > 0 && t-now <= maxWait {
				first := t
				if s.Next > 0 {
					first = min(first, s.NextAt)
				}
				if fits(s.Cur, s.Next+cost, first-(start+w)) {
					s.Next += cost
					s.NextAt = first
					return s, Decision{Allowed: true, Wait: t - now, ResetAfter: reset(s)}
				}
			}
			refused.RetryAfter = t - now
			return s, refused
		}
	}
	// The window after: the next window weighs as the previous.
	t := start + 2*w
	if s.Next > 0 {
		t = max(t, start+3*w-mulDivFloorCap(l-cost, w, s.Next, w))
	}
	refused.RetryAfter = t - now
	return s, refused
}

// --- arithmetic ---

// u128 is an unsigned 128-bit integer, for products of counts and
// nanoseconds.
type u128 struct{ hi, lo uint64 }

func mul(a, b int64) u128 {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	return u128{hi, lo}
}

func add(a, b u128) u128 {
	lo, c := bits.Add64(a.lo, b.lo, 0)
	hi, _ := bits.Add64(a.hi, b.hi, c)
	return u128{hi, lo}
}

func (a u128) le(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo <= b.lo }

// mulDivFloorCap returns min(floor(a*b/c), limit) for non-negative a, b
// and positive c.
func mulDivFloorCap(a, b, c, limit int64) int64 {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	if hi >= uint64(c) {
		return limit
	}
	q, _ := bits.Div64(hi, lo, uint64(c))
	if q > uint64(limit) {
		return limit
	}
	return int64(q)
}

// ceilMulDiv returns ceil(a*b/c) for non-negative a, b with b <= c.
func ceilMulDiv(a, b, c int64) int64 {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	q, r := bits.Div64(hi, lo, uint64(c)) // a*b/c <= a: no overflow
	if r > 0 {
		q++
	}
	return int64(q)
}

// mulCap returns min(a*b, limit) for non-negative a and b.
func mulCap(a, b, limit int64) int64 {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	if hi > 0 || lo > uint64(limit) || lo > math.MaxInt64 {
		return limit
	}
	return int64(lo)
}
