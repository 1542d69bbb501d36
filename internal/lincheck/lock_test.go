package lincheck

import (
	"strings"
	"testing"
	"time"
)

func at(ms int) time.Time { return time.Unix(1000, 0).Add(time.Duration(ms) * time.Millisecond) }

func TestCheckLock(t *testing.T) {
	// Client 1 holds token 10 and writes at 11, 12; client 2 takes the
	// lock after it (token 14) and writes at 15, 16.
	good := []LockWrite{
		{Client: 1, Token: 10, Call: at(0), Return: at(5), Succeeded: true, Revision: 11},
		{Client: 1, Token: 10, Call: at(6), Return: at(9), Succeeded: true, Revision: 12},
		{Client: 2, Token: 14, Call: at(20), Return: at(25), Succeeded: true, Revision: 15},
		{Client: 2, Token: 14, Call: at(26), Return: at(29), Succeeded: true, Revision: 16},
		// Client 1, paused past its lease, is refused: fine.
		{Client: 1, Token: 10, Call: at(30), Return: at(31), Succeeded: false, Stale: true},
	}
	tests := []struct {
		name    string
		writes  []LockWrite
		fenced  []int64
		wantErr string // a substring of the one violation expected; "" for none
	}{
		{"correct", good, []int64{10, 10, 14, 14}, ""},
		{
			// The bug fencing prevents: client 1 paused past its lease,
			// client 2 took the lock and wrote, then client 1 woke up and
			// its unfenced write went through.
			"paused holder writes after its successor",
			append(good[:4:4], LockWrite{Client: 1, Token: 10, Call: at(30), Return: at(31), Succeeded: true, Revision: 17, Stale: true}),
			[]int64{10, 10, 14, 14, 10},
			"holders overlap",
		},
		{
			"two holders interleaved",
			[]LockWrite{
				{Client: 1, Token: 10, Call: at(0), Return: at(5), Succeeded: true, Revision: 12},
				{Client: 2, Token: 11, Call: at(1), Return: at(6), Succeeded: true, Revision: 13},
				{Client: 1, Token: 10, Call: at(7), Return: at(9), Succeeded: true, Revision: 14},
			},
			nil,
			"holders overlap: client 1 (token 10) wrote at revisions 12..14, client 2 (token 11) at 13..13",
		},
		{
			"one token, two clients",
			[]LockWrite{
				{Client: 1, Token: 10, Call: at(0), Return: at(5), Succeeded: true, Revision: 11},
				{Client: 2, Token: 10, Call: at(6), Return: at(8), Succeeded: true, Revision: 12},
			},
			nil,
			"token 10 held by two clients",
		},
		{
			"write before its acquisition",
			[]LockWrite{{Client: 1, Token: 10, Call: at(0), Return: at(5), Succeeded: true, Revision: 9}},
			nil,
			"not after the acquisition",
		},
		{
			// Revisions alone look fine (a lying revision), real time not.
			"older token invoked after newer returned",
			[]LockWrite{
				{Client: 2, Token: 14, Call: at(0), Return: at(5), Succeeded: true, Revision: 20},
				{Client: 1, Token: 10, Call: at(10), Return: at(12), Succeeded: true, Revision: 11},
			},
			nil,
			"after client 2's write of the newer token 14",
		},
		{
			// A write whose answer was lost left token 9 after 14.
			"fenced key goes back",
			nil,
			[]int64{9, 14, 9},
			"got token 9 written after token 14",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckLock(tc.writes, tc.fenced)
			if tc.wantErr == "" {
				if len(got) != 0 {
					t.Fatalf("got violations %q, want none", got)
				}
				return
			}
			found := false
			for _, v := range got {
				found = found || strings.Contains(v, tc.wantErr)
			}
			if !found {
				t.Fatalf("got violations %q, want one containing %q", got, tc.wantErr)
			}
		})
	}
}
