package algo

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

// The reference models below decide from first principles (a token bucket
// of credit, logs of what was admitted) at simulated times; the tests
// compare every decision of the algorithms with them.

const sec = int64(time.Second)

// t0 is a simulated start time, in 2026.
var t0 = time.Date(2026, 3, 7, 22, 59, 58, 0, time.UTC).UnixNano()

// bucketModel is a token bucket holding credit in nanoseconds of refill:
// one token is interval ns of credit, the bucket holds at most
// capacity*interval, and credit grows by one per nanosecond. Reservations
// drive it negative, as x/time/rate does.
type bucketModel struct {
	interval, capacity int64
	credit, last       int64
}

func (m *bucketModel) at(now int64) {
	m.credit = min(m.capacity*m.interval, m.credit+(now-m.last))
	m.last = now
}

func (m *bucketModel) take(now, cost, maxWait int64, consume bool) Decision {
	m.at(now)
	need := cost * m.interval
	full := m.capacity * m.interval
	switch {
	case m.credit >= need:
		d := Decision{Allowed: true, Remaining: (m.credit - need) / m.interval, ResetAfter: full - (m.credit - need)}
		if consume {
			m.credit -= need
		}
		return d
	case maxWait > 0 && need-m.credit <= maxWait:
		d := Decision{Allowed: true, Wait: need - m.credit, ResetAfter: full - (m.credit - need)}
		if consume {
			m.credit -= need
		}
		return d
	}
	return Decision{Remaining: max(0, m.credit) / m.interval, RetryAfter: need - m.credit, ResetAfter: full - m.credit}
}

func (m *bucketModel) refund(now, cost int64) {
	m.at(now)
	m.credit = min(m.capacity*m.interval, m.credit+cost*m.interval)
}

func TestGCRAMatchesTokenBucket(t *testing.T) {
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 1))
		limit := []int64{1, 3, 10, 100, 1000}[rng.IntN(5)]
		period := []int64{sec, 60 * sec, 250 * int64(time.Millisecond)}[rng.IntN(3)]
		period -= period % limit // an exact interval: the model has no rounding
		burst := []int64{0, 1, 5, 50, 2000}[rng.IntN(5)]
		p := &Params{Kind: GCRA, Limit: limit, Period: period, Burst: burst}
		if err := p.Validate(); err != nil {
			t.Fatal(err)
		}
		m := &bucketModel{interval: period / limit, capacity: p.Capacity(), last: t0}
		m.credit = m.capacity * m.interval
		var s State
		now := t0
		for i := range 2000 {
			now += rng.Int64N(3 * m.interval)
			cost := rng.Int64N(p.Capacity()) + 1
			name := fmt.Sprintf("seed %d step %d (limit %d/%s burst %d, cost %d)", seed, i, limit, time.Duration(period), p.Capacity(), cost)
			switch op := rng.IntN(10); {
			case op < 6: // take
				var d Decision
				var err error
				s, d, err = Take(p, s, now, cost, 0, true)
				if err != nil {
					t.Fatal(err)
				}
				if want := m.take(now, cost, 0, true); d != want {
					t.Fatalf("%s: take: got %+v, want %+v", name, d, want)
				}
			case op < 7: // peek
				_, d, _ := Take(p, s, now, cost, 0, false)
				if want := m.take(now, cost, 0, false); d != want {
					t.Fatalf("%s: peek: got %+v, want %+v", name, d, want)
				}
			case op < 9: // reserve
				maxWait := rng.Int64N(p.Capacity()*m.interval + 1)
				var d Decision
				s, d, _ = Take(p, s, now, cost, maxWait, true)
				if want := m.take(now, cost, maxWait, true); d != want {
					t.Fatalf("%s: reserve within %s: got %+v, want %+v", name, time.Duration(maxWait), d, want)
				}
			default:
				s = Refund(p, s, now, cost)
				m.refund(now, cost)
			}
		}
	}
}

// admission is a request some algorithm allowed, at the time it may be
// used (its decision's time plus its wait).
type admission struct{ at, cost int64 }

// slidingModel keeps every admission and estimates from them.
type slidingModel struct {
	limit, w int64
	log      []admission
}

// counts returns what was admitted in the window [start, start+w) and the
// one before it.
func (m *slidingModel) counts(start int64) (prev, cur int64) {
	for _, a := range m.log {
		switch {
		case a.at >= start && a.at < start+m.w:
			cur += a.cost
		case a.at >= start-m.w && a.at < start:
			prev += a.cost
		}
	}
	return prev, cur
}

// estimate is prev*(start+w-t)/w + cur, exactly.
func (m *slidingModel) estimate(t int64) *big.Rat {
	start := t - t%m.w
	prev, cur := m.counts(start)
	e := big.NewRat(prev*(start+m.w-t), m.w)
	return e.Add(e, big.NewRat(cur, 1))
}

func (m *slidingModel) fits(t, cost int64) bool {
	e := m.estimate(t)
	return e.Add(e, big.NewRat(cost, 1)).Cmp(big.NewRat(m.limit, 1)) <= 0
}

// firstTime returns the first t in [from, from+4w] where ok holds (which
// stays true once it holds), found by bisection.
func firstTime(from, span int64, ok func(int64) bool) int64 {
	lo, hi := from, from+span
	if ok(lo) {
		return lo
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if ok(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

func (m *slidingModel) take(now, cost int64, consume bool) Decision {
	e := m.estimate(now)
	rem := new(big.Rat).Sub(big.NewRat(m.limit, 1), e)
	floor := func(r *big.Rat) int64 { return max(0, new(big.Int).Div(r.Num(), r.Denom()).Int64()) }
	reset := firstTime(now, 4*m.w, func(t int64) bool { return m.estimate(t).Sign() == 0 }) - now
	if m.fits(now, cost) {
		if consume {
			m.log = append(m.log, admission{now, cost})
		}
		rem.Sub(rem, big.NewRat(cost, 1))
		d := Decision{Allowed: true, Remaining: floor(rem)}
		if consume {
			d.ResetAfter = firstTime(now, 4*m.w, func(t int64) bool { return m.estimate(t).Sign() == 0 }) - now
		} else {
			m.log = append(m.log, admission{now, cost})
			d.ResetAfter = firstTime(now, 4*m.w, func(t int64) bool { return m.estimate(t).Sign() == 0 }) - now
			m.log = m.log[:len(m.log)-1]
		}
		return d
	}
	retry := firstTime(now, 4*m.w, func(t int64) bool { return m.fits(t, cost) }) - now
	return Decision{Remaining: floor(rem), RetryAfter: retry, ResetAfter: reset}
}

func TestSlidingWindowMatchesModel(t *testing.T) {
	for seed := range uint64(30) {
		rng := rand.New(rand.NewPCG(seed, 2))
		limit := []int64{1, 4, 10, 100}[rng.IntN(4)]
		w := []int64{sec, 60 * sec, 7 * sec}[rng.IntN(3)]
		p := &Params{Kind: SlidingWindow, Limit: limit, Period: w}
		if err := p.Validate(); err != nil {
			t.Fatal(err)
		}
		m := &slidingModel{limit: limit, w: w}
		var s State
		now := t0
		for i := range 600 {
			now += rng.Int64N(3 * w / limit)
			cost := rng.Int64N(limit) + 1
			consume := rng.IntN(5) > 0
			var d Decision
			var err error
			if consume {
				s, d, err = Take(p, s, now, cost, 0, true)
			} else {
				_, d, err = Take(p, s, now, cost, 0, false)
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := m.take(now, cost, consume); d != want {
				t.Fatalf("seed %d step %d (limit %d per %s, cost %d, consume %v): got %+v, want %+v",
					seed, i, limit, time.Duration(w), cost, consume, d, want)
			}
		}
	}
}

// windowModel keeps every admission; a window is the set of times whose
// calendar fields (down to the unit) are equal.
type windowModel struct {
	limit int64
	same  func(a, b int64) bool
	log   []admission
}

func (m *windowModel) count(t int64) (n int64) {
	for _, a := range m.log {
		if m.same(a.at, t) {
			n += a.cost
		}
	}
	return n
}

// end returns the first time after t in another window.
func (m *windowModel) end(t int64) int64 {
	return firstTime(t, 32*24*int64(time.Hour), func(u int64) bool { return !m.same(u, t) })
}

func (m *windowModel) take(now, cost int64, consume bool) Decision {
	n := m.count(now)
	end := m.end(now)
	if n+cost <= m.limit {
		if consume {
			m.log = append(m.log, admission{now, cost})
		}
		return Decision{Allowed: true, Remaining: m.limit - n - cost, ResetAfter: end - now}
	}
	reset := int64(0)
	if n > 0 {
		reset = end - now
	}
	return Decision{Remaining: m.limit - n, RetryAfter: end - now, ResetAfter: reset}
}

func TestFixedAndCalendarWindowsMatchModel(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatalf("load time zone: %v", err)
	}
	fields := func(loc *time.Location, u Unit) func(a, b int64) bool {
		return func(a, b int64) bool {
			x, y := time.Unix(0, a).In(loc), time.Unix(0, b).In(loc)
			switch u {
			case Week:
				xy, xw := x.ISOWeek()
				yy, yw := y.ISOWeek()
				return xy == yy && xw == yw
			case Month:
				return x.Year() == y.Year() && x.Month() == y.Month()
			}
			same := x.YearDay() == y.YearDay() && x.Year() == y.Year()
			if u == Hour || u == Minute {
				// Compare absolute hours: a repeated hour at a DST change
				// is two windows.
				same = same && x.Hour() == y.Hour() && (a-b < int64(time.Hour) && b-a < int64(time.Hour))
			}
			if u == Minute {
				same = same && x.Minute() == y.Minute()
			}
			return same
		}
	}
	cases := []struct {
		p    Params
		same func(a, b int64) bool
		step int64
	}{
		{Params{Kind: FixedWindow, Limit: 10, Period: sec}, func(a, b int64) bool { return a/sec == b/sec }, sec / 5},
		{Params{Kind: FixedWindow, Limit: 3, Period: 90 * sec}, func(a, b int64) bool { return a/(90*sec) == b/(90*sec) }, 20 * sec},
		{Params{Kind: CalendarWindow, Limit: 5, Unit: Minute}, fields(time.UTC, Minute), 15 * sec},
		{Params{Kind: CalendarWindow, Limit: 20, Unit: Hour, Location: paris}, fields(paris, Hour), 10 * 60 * sec},
		{Params{Kind: CalendarWindow, Limit: 20, Unit: Day, Location: paris}, fields(paris, Day), 3 * 3600 * sec},
		{Params{Kind: CalendarWindow, Limit: 50, Unit: Week, Location: paris}, fields(paris, Week), 12 * 3600 * sec},
		{Params{Kind: CalendarWindow, Limit: 100, Unit: Month}, fields(time.UTC, Month), 48 * 3600 * sec},
	}
	for ci, c := range cases {
		p := c.p
		if err := p.Validate(); err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(uint64(ci), 3))
		m := &windowModel{limit: p.Limit, same: c.same}
		var s State
		// Through the change to summer time in Paris (2026-03-29).
		now := time.Date(2026, 3, 20, 0, 0, 0, 0, time.UTC).UnixNano() + rng.Int64N(c.step)
		for i := range 400 {
			now += rng.Int64N(c.step)
			cost := rng.Int64N(p.Limit) + 1
			consume := rng.IntN(5) > 0
			var d Decision
			if consume {
				s, d, _ = Take(&p, s, now, cost, 0, true)
			} else {
				_, d, _ = Take(&p, s, now, cost, 0, false)
			}
			if want := m.take(now, cost, consume); d != want {
				t.Fatalf("case %d (%s %s) step %d at %s, cost %d: got %+v, want %+v",
					ci, p.Kind, p.Unit, i, time.Unix(0, now).In(time.UTC), cost, d, want)
			}
		}
	}
}

// TestRetryAfterIsNeverEarly checks the rounding: a caller refused with
// RetryAfter, who retries after that many milliseconds (rounded up) with
// nothing else taken meanwhile, is allowed; one nanosecond earlier it is
// refused (the wait is exact).
func TestRetryAfterIsNeverEarly(t *testing.T) {
	paris, _ := time.LoadLocation("Europe/Paris")
	params := []Params{
		{Kind: GCRA, Limit: 3, Period: sec, Burst: 2}, // an inexact interval: 333,333,334 ns
		{Kind: GCRA, Limit: 7, Period: 60 * sec},
		{Kind: SlidingWindow, Limit: 7, Period: 3 * sec},
		{Kind: FixedWindow, Limit: 5, Period: 1500 * int64(time.Millisecond)},
		{Kind: CalendarWindow, Limit: 4, Unit: Hour, Location: paris},
	}
	for _, p := range params {
		rng := rand.New(rand.NewPCG(7, uint64(p.Kind)))
		var s State
		now := t0 + rng.Int64N(sec)
		refusals := 0
		for range 3000 {
			now += rng.Int64N(sec / 2)
			cost := rng.Int64N(p.Capacity()) + 1
			s2, d, err := Take(&p, s, now, cost, 0, true)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed {
				s = s2
				continue
			}
			refusals++
			if d.RetryAfter <= 0 {
				t.Fatalf("%s: refused with RetryAfter %d", p.Kind, d.RetryAfter)
			}
			ms := CeilMillis(d.RetryAfter)
			if ms*int64(time.Millisecond) < d.RetryAfter {
				t.Fatalf("CeilMillis(%d) = %d rounds down", d.RetryAfter, ms)
			}
			if _, d2, _ := Take(&p, s, now+ms*int64(time.Millisecond), cost, 0, false); !d2.Allowed {
				t.Fatalf("%s: refused again after the %d ms it was told to wait (%d ns)", p.Kind, ms, d.RetryAfter)
			}
			if _, d2, _ := Take(&p, s, now+d.RetryAfter, cost, 0, false); !d2.Allowed {
				t.Fatalf("%s: refused again after exactly RetryAfter %d ns", p.Kind, d.RetryAfter)
			}
			if _, d2, _ := Take(&p, s, now+d.RetryAfter-1, cost, 0, false); d2.Allowed {
				t.Fatalf("%s: allowed 1 ns before RetryAfter %d ns: the wait is not the shortest", p.Kind, d.RetryAfter)
			}
		}
		if refusals < 100 {
			t.Fatalf("%s: only %d refusals: the test does not exercise retries", p.Kind, refusals)
		}
	}
	if got := CeilMillis(1); got != 1 {
		t.Fatalf("CeilMillis(1ns): got %d, want 1", got)
	}
	if got := CeilMillis(int64(time.Millisecond)); got != 1 {
		t.Fatalf("CeilMillis(1ms): got %d, want 1", got)
	}
}

// TestReservationsKeepTheLimit takes and reserves at random and checks, at
// the times the admissions may be used, each algorithm's guarantee.
func TestReservationsKeepTheLimit(t *testing.T) {
	params := []Params{
		{Kind: GCRA, Limit: 10, Period: sec, Burst: 4},
		{Kind: GCRA, Limit: 3, Period: sec}, // inexact interval
		{Kind: SlidingWindow, Limit: 10, Period: sec},
		{Kind: SlidingWindow, Limit: 3, Period: 2 * sec},
		{Kind: FixedWindow, Limit: 6, Period: sec},
		{Kind: CalendarWindow, Limit: 6, Unit: Minute},
	}
	for _, p := range params {
		for seed := range uint64(10) {
			rng := rand.New(rand.NewPCG(seed, 4))
			var s State
			var log []admission
			now := t0
			reserved := 0
			span := 3 * sec // the longest wait asked for
			step := sec / 4
			if p.Kind == CalendarWindow {
				span, step = 3*60*sec, 15*sec
			}
			for range 400 {
				now += rng.Int64N(step)
				cost := rng.Int64N(p.Capacity()) + 1
				maxWait := rng.Int64N(span)
				var d Decision
				s, d, _ = Take(&p, s, now, cost, maxWait, true)
				if d.Allowed {
					log = append(log, admission{now + d.Wait, cost})
					if d.Wait > 0 {
						reserved++
					}
				}
				if d.Wait > maxWait {
					t.Fatalf("%s: wait %d beyond the bound %d", p.Kind, d.Wait, maxWait)
				}
			}
			if reserved < 20 {
				t.Fatalf("%s: only %d reservations", p.Kind, reserved)
			}
			sort.Slice(log, func(i, j int) bool { return log[i].at < log[j].at })
			checkGuarantee(t, &p, log)
		}
	}
}

// checkGuarantee checks admissions at the times they are used against what
// the algorithm promises.
func checkGuarantee(t *testing.T, p *Params, log []admission) {
	t.Helper()
	switch p.Kind {
	case GCRA:
		// Any interval [a, b] holds at most burst + (b-a)/interval.
		iv := p.interval()
		for i := range log {
			var sum int64
			for j := i; j < len(log); j++ {
				sum += log[j].cost
				if bound := p.Capacity() + (log[j].at-log[i].at)/iv; sum > bound {
					t.Fatalf("gcra: %d admitted in [%d, %d], bound %d", sum, log[i].at, log[j].at, bound)
				}
			}
		}
	case FixedWindow, CalendarWindow:
		per := map[int64]int64{}
		for _, a := range log {
			start, _ := window(p, a.at)
			per[start] += a.cost
			if per[start] > p.Limit {
				t.Fatalf("%s: %d admitted in the window at %d, limit %d", p.Kind, per[start], start, p.Limit)
			}
		}
	case SlidingWindow:
		// At each admission's time: the whole previous window weighted,
		// plus what was admitted in its own window up to it.
		w := p.Period
		for i, a := range log {
			start := a.at - a.at%w
			var prev, cur int64
			for j, b := range log {
				switch {
				case b.at >= start-w && b.at < start:
					prev += b.cost
				case b.at >= start && (b.at < a.at || b.at == a.at && j <= i):
					cur += b.cost
				}
			}
			if prev*(start+w-a.at)+cur*w > p.Limit*w {
				t.Fatalf("sliding-window: estimate %d/%d + %d over the limit %d at %d", prev*(start+w-a.at), w, cur, p.Limit, a.at)
			}
		}
	}
}

func TestForceAndFull(t *testing.T) {
	for _, p := range []Params{
		{Kind: GCRA, Limit: 10, Period: sec},
		{Kind: SlidingWindow, Limit: 10, Period: sec},
		{Kind: FixedWindow, Limit: 10, Period: sec},
	} {
		var s State
		if !Full(&p, s, t0) {
			t.Fatalf("%s: the zero state is not full", p.Kind)
		}
		s = Force(&p, s, t0, 4)
		if Full(&p, s, t0) {
			t.Fatalf("%s: full after a forced charge", p.Kind)
		}
		_, d, _ := Take(&p, s, t0, 1, 0, false)
		if d.Remaining != 5 {
			t.Fatalf("%s: remaining after forcing 4 and peeking 1: got %d, want 5", p.Kind, d.Remaining)
		}
		if !Full(&p, s, t0+d.ResetAfter) {
			t.Fatalf("%s: not full after ResetAfter %d", p.Kind, d.ResetAfter)
		}
		if got := Normalize(&p, s, t0+3*sec); got != (State{}) {
			t.Fatalf("%s: normalized expired state: got %+v, want the zero state", p.Kind, got)
		}
		// Forcing past the capacity refuses until it drains.
		s = Force(&p, State{}, t0, 25)
		if _, d, _ := Take(&p, s, t0, 1, 0, false); d.Allowed {
			t.Fatalf("%s: allowed after a charge of 2.5 times the limit", p.Kind)
		}
	}
}

func TestValidate(t *testing.T) {
	bad := []Params{
		{Kind: GCRA, Limit: 0, Period: sec},
		{Kind: GCRA, Limit: 10, Period: 0},
		{Kind: GCRA, Limit: 10, Period: 5},                                 // faster than 1 per ns
		{Kind: GCRA, Limit: 1, Period: MaxPeriod, Burst: MaxLimit},         // drains for ages
		{Kind: FixedWindow, Limit: 10, Period: sec, Burst: 3},              // burst is gcra's
		{Kind: CalendarWindow, Limit: 10},                                  // no unit
		{Kind: Kind(99), Limit: 10, Period: sec},                           // unknown
		{Kind: SlidingWindow, Limit: MaxLimit + 1, Period: sec},            // too large
		{Kind: FixedWindow, Limit: 1, Period: MaxPeriod + 1},               // too long
		{Kind: GCRA, Limit: 10, Period: sec, Burst: -1},                    // negative burst
		{Kind: CalendarWindow, Limit: 10, Unit: Unit(9)},                   // unknown unit
		{Kind: SlidingWindow, Limit: -3, Period: sec, Unit: Day, Burst: 0}, // negative limit
	}
	for _, p := range bad {
		if err := p.Validate(); err == nil {
			t.Errorf("Validate(%+v): got no error", p)
		}
	}
	p := Params{Kind: GCRA, Limit: 10, Period: sec}
	if _, _, err := Take(&p, State{}, t0, 11, 0, true); err != ErrCostTooLarge {
		t.Fatalf("cost above the capacity: got %v, want ErrCostTooLarge", err)
	}
}
