package cron

import (
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse("2006-01-02 15:04:05", s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	anchor := at("2026-01-01 00:00:00")
	for _, tc := range []struct{ expr, after, want string }{
		{"* * * * *", "2026-03-04 10:20:30", "2026-03-04 10:21:00"},
		{"*/15 * * * *", "2026-03-04 10:20:30", "2026-03-04 10:30:00"},
		{"0 9-17/4 * * *", "2026-03-04 10:20:30", "2026-03-04 13:00:00"},
		{"30 2 * * mon", "2026-03-04 10:20:30", "2026-03-09 02:30:00"}, // 2026-03-04 is a Wednesday
		{"0 0 1,15 * *", "2026-03-04 10:20:30", "2026-03-15 00:00:00"},
		{"0 0 1 1 *", "2026-03-04 10:20:30", "2027-01-01 00:00:00"},
		{"@daily", "2026-03-04 10:20:30", "2026-03-05 00:00:00"},
		{"@hourly", "2026-03-04 10:00:00", "2026-03-04 11:00:00"},
		{"0 0 29 feb *", "2026-03-04 10:20:30", "2028-02-29 00:00:00"},
		{"0 12 13 * 5", "2026-03-04 10:20:30", "2026-03-06 12:00:00"}, // day 13 or a Friday
		{"0 0 * * 7", "2026-03-04 10:20:30", "2026-03-08 00:00:00"},   // 7 is Sunday
		{"@every 90s", "2026-01-01 00:02:00", "2026-01-01 00:03:00"},
		{"@every 1h", "2025-12-31 00:00:00", "2026-01-01 00:00:00"},
	} {
		s, err := Parse(tc.expr)
		if err != nil {
			t.Fatalf("%s: %v", tc.expr, err)
		}
		if got := s.Next(at(tc.after), anchor); !got.Equal(at(tc.want)) {
			t.Errorf("%s after %s: got %s, want %s", tc.expr, tc.after, got.Format(time.DateTime), tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, expr := range []string{"", "* * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8",
		"*/0 * * * *", "5-1 * * * *", "0 0 30 2 *", "@every 10ms", "@every x", "@often", "a b c d e"} {
		if _, err := Parse(expr); err == nil {
			t.Errorf("Parse(%q): got no error", expr)
		}
	}
}
