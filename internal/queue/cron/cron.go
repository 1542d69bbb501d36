// Package cron parses the schedules of Synod's job queues: the standard
// five cron fields (minute, hour, day of month, month, day of week) with
// lists, ranges, steps and month and day names, the descriptors @yearly
// (@annually), @monthly, @weekly, @daily (@midnight) and @hourly, and
// @every <duration> (Go's duration syntax, at least 1s). Times are UTC.
package cron

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Schedule computes firing times.
type Schedule interface {
	// Next returns the first firing strictly after t. Schedules of @every
	// fire on a grid anchored at anchor (a schedule's creation time);
	// cron fields ignore it.
	Next(t, anchor time.Time) time.Time
}

// Parse parses a schedule expression.
func Parse(expr string) (Schedule, error) {
	expr = strings.TrimSpace(expr)
	if rest, ok := strings.CutPrefix(expr, "@every "); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil {
			return nil, fmt.Errorf("cron %q: %w", expr, err)
		}
		if d < time.Second {
			return nil, fmt.Errorf("cron %q: the interval must be at least 1s", expr)
		}
		return every(d), nil
	}
	switch expr {
	case "@yearly", "@annually":
		expr = "0 0 1 1 *"
	case "@monthly":
		expr = "0 0 1 * *"
	case "@weekly":
		expr = "0 0 * * 0"
	case "@daily", "@midnight":
		expr = "0 0 * * *"
	case "@hourly":
		expr = "0 * * * *"
	}
	f := strings.Fields(expr)
	if len(f) != 5 {
		return nil, fmt.Errorf("cron %q: want 5 fields (minute hour day-of-month month day-of-week), @every <duration> or a descriptor", expr)
	}
	var s spec
	var err error
	fields := []struct {
		dst      *uint64
		min, max int
		names    []string
	}{
		{&s.minute, 0, 59, nil},
		{&s.hour, 0, 23, nil},
		{&s.dom, 1, 31, nil},
		{&s.month, 1, 12, []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}},
		{&s.dow, 0, 7, []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}},
	}
	for i, fd := range fields {
		if *fd.dst, err = parseField(f[i], fd.min, fd.max, fd.names); err != nil {
			return nil, fmt.Errorf("cron %q: field %d: %w", expr, i+1, err)
		}
	}
	if s.dow&(1<<7) != 0 { // 7 is Sunday too
		s.dow |= 1
	}
	s.domAny, s.dowAny = f[2] == "*" || strings.HasPrefix(f[2], "*/"), f[4] == "*" || strings.HasPrefix(f[4], "*/")
	if s.month&^(1<<0) == 0 || !s.anyDayPossible() {
		return nil, fmt.Errorf("cron %q never fires", expr)
	}
	return &s, nil
}

type every time.Duration

func (e every) Next(t, anchor time.Time) time.Time {
	d := time.Duration(e)
	if t.Before(anchor) {
		return anchor
	}
	n := t.Sub(anchor) / d
	return anchor.Add((n + 1) * d)
}

// spec is a parsed five-field expression: one bit per allowed value.
type spec struct {
	minute, hour, dom, month, dow uint64
	domAny, dowAny                bool
}

func (s *spec) anyDayPossible() bool {
	// Rejects expressions such as "0 0 30 2 *" (February 30th).
	for m := 1; m <= 12; m++ {
		if s.month&(1<<m) == 0 {
			continue
		}
		days := time.Date(2024, time.Month(m)+1, 0, 0, 0, 0, 0, time.UTC).Day() // leap year
		for d := 1; d <= days; d++ {
			if s.dom&(1<<d) != 0 || !s.dowAny {
				return true
			}
		}
	}
	return false
}

func (s *spec) dayMatches(t time.Time) bool {
	dom := s.dom&(1<<t.Day()) != 0
	dow := s.dow&(1<<int(t.Weekday())) != 0
	switch {
	case s.domAny && s.dowAny:
		return true
	case s.domAny:
		return dow
	case s.dowAny:
		return dom
	}
	return dom || dow // both restricted: either, as cron does
}

// Next implements Schedule.
func (s *spec) Next(t, _ time.Time) time.Time {
	t = t.UTC().Truncate(time.Minute).Add(time.Minute)
	limit := t.AddDate(5, 0, 0)
	for t.Before(limit) {
		switch {
		case s.month&(1<<int(t.Month())) == 0:
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
		case !s.dayMatches(t):
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
		case s.hour&(1<<t.Hour()) == 0:
			t = t.Truncate(time.Hour).Add(time.Hour)
		case s.minute&(1<<t.Minute()) == 0:
			t = t.Add(time.Minute)
		default:
			return t
		}
	}
	return time.Time{}
}

func parseField(f string, lo, hi int, names []string) (uint64, error) {
	var bits uint64
	for _, part := range strings.Split(f, ",") {
		rng, stepS, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepS)
			if err != nil || n <= 0 {
				return 0, fmt.Errorf("bad step %q", stepS)
			}
			step = n
		}
		var a, b int
		switch {
		case rng == "*":
			a, b = lo, hi
		case strings.Contains(rng, "-"):
			x, y, _ := strings.Cut(rng, "-")
			var err error
			if a, err = value(x, lo, hi, names); err != nil {
				return 0, err
			}
			if b, err = value(y, lo, hi, names); err != nil {
				return 0, err
			}
			if b < a {
				return 0, fmt.Errorf("range %q goes backwards", rng)
			}
		default:
			v, err := value(rng, lo, hi, names)
			if err != nil {
				return 0, err
			}
			a, b = v, v
			if hasStep {
				b = hi
			}
		}
		for v := a; v <= b; v += step {
			bits |= 1 << v
		}
	}
	return bits, nil
}

func value(s string, lo, hi int, names []string) (int, error) {
	if s == "" {
		return 0, errors.New("empty value")
	}
	for i, n := range names {
		if strings.EqualFold(s, n) {
			if lo == 1 {
				return i + 1, nil
			}
			return i, nil
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("bad value %q", s)
	}
	if v < lo || v > hi {
		return 0, fmt.Errorf("value %d out of %d-%d", v, lo, hi)
	}
	return v, nil
}
