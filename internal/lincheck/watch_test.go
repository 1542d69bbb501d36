package lincheck

import (
	"strings"
	"testing"
)

func wput(rev int64, k, v string) WatchEvent { return WatchEvent{Revision: rev, Key: k, Value: v} }
func wdel(rev int64, k string) WatchEvent    { return WatchEvent{Revision: rev, Key: k, Delete: true} }

func TestEventLog(t *testing.T) {
	h := []Op{
		op(0, 0, 1, put("x", "a"), wrote(2)),
		op(1, 0, 5, put("y", "b"), unknown()),
		op(0, 2, 3, del("x"), Output{Deleted: 1, Revision: 4}),
	}
	over := func(e WatchEvent, prev WatchEvent) WatchEvent {
		e.PrevRevision, e.PrevValue = prev.Revision, prev.Value
		return e
	}
	good := []WatchEvent{wput(2, "x", "a"), wput(3, "y", "b"), over(wdel(4, "x"), wput(2, "x", "a"))}
	if p := CheckEventLog(good, h); len(p) != 0 {
		t.Fatalf("good log: got problems %q, want none", p)
	}
	for _, tt := range []struct {
		name string
		log  []WatchEvent
		want string
	}{
		{"acknowledged write missing", []WatchEvent{wput(3, "y", "b"), wdel(4, "x")}, `acknowledged write missing from the event log: client 0 [0s, 1ms] put(x, "a")`},
		{"phantom write", append(append([]WatchEvent{}, good...), wput(5, "x", "ghost")), `event log has put(x, "ghost")@5, which no client asked for`},
		{"wrong value at a revision", []WatchEvent{wput(2, "x", "b"), wput(3, "y", "b"), wdel(4, "x")}, "at revision 2 the log has put(x, \"b\")@2"},
		{"out of order", []WatchEvent{wput(3, "y", "b"), wput(2, "x", "a"), good[2]}, "event log out of order"},
		{"previous version missing", []WatchEvent{good[0], good[1], wdel(4, "x")}, `event delete(x)@4: want previous version "a"@2`},
		{"previous version wrong", []WatchEvent{good[0], over(wput(3, "y", "b"), wput(2, "y", "a")), good[2]}, `event put(y, "b")@3 over "a"@2: want previous version ""@0`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := CheckEventLog(tt.log, h)
			if !strings.Contains(strings.Join(p, "\n"), tt.want) {
				t.Fatalf("got problems %q, want one containing %q", p, tt.want)
			}
		})
	}
}

func TestWatchers(t *testing.T) {
	log := []WatchEvent{wput(2, "x", "a"), wput(3, "y", "b"), wdel(4, "x"), wput(6, "x", "c")}
	good := []Watcher{
		{Name: "from the start", Start: 1, Events: log},
		{Name: "from the middle", Start: 4, Events: log[2:]},
		{Name: "from between events", Start: 5, Events: log[3:], Restarts: 1},
	}
	if p := CheckWatchers(log, good); len(p) != 0 {
		t.Fatalf("good watchers: got problems %q, want none", p)
	}
	for _, tt := range []struct {
		name string
		w    Watcher
		want string
	}{
		{"missed an event", Watcher{Name: "w", Start: 1, Events: []WatchEvent{log[0], log[2], log[3]}}, `missed put(y, "b")@3`},
		{"missed the first event", Watcher{Name: "w", Start: 1, Events: log[1:]}, `missed put(x, "a")@2`},
		{"duplicate", Watcher{Name: "w", Start: 1, Events: []WatchEvent{log[0], log[1], log[1], log[2], log[3]}}, "not in revision order, or seen twice"},
		{"different event", Watcher{Name: "w", Start: 1, Events: []WatchEvent{log[0], wput(3, "y", "z"), log[2], log[3]}}, `differs from the log's put(y, "b")@3`},
		{"did not catch up", Watcher{Name: "w", Start: 1, Events: log[:2]}, "did not catch up: missed 2 events"},
		{"event before its start", Watcher{Name: "w", Start: 4, Events: log}, "is before the start revision"},
		{"event past the log", Watcher{Name: "w", Start: 1, Events: append(append([]WatchEvent{}, log...), wput(9, "x", "d"))}, "is not in the log"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := CheckWatchers(log, []Watcher{tt.w})
			if !strings.Contains(strings.Join(p, "\n"), tt.want) {
				t.Fatalf("got problems %q, want one containing %q", p, tt.want)
			}
		})
	}
}

func TestLeases(t *testing.T) {
	ms := int64(1e6)
	l := Lease{ID: 1, Key: "lease/a", Attached: 10 * ms, AliveUntil: 100 * ms, Reads: []LeaseRead{
		{Call: 5 * ms, Return: 6 * ms, Exists: false},    // before the key was attached
		{Call: 20 * ms, Return: 30 * ms, Exists: true},   // alive
		{Call: 95 * ms, Return: 120 * ms, Exists: false}, // may have expired
		{Call: 200 * ms, Return: 210 * ms, Exists: false},
	}}
	if p := CheckLeases([]Lease{l}); len(p) != 0 {
		t.Fatalf("good lease: got problems %q, want none", p)
	}
	l.Reads = append(l.Reads, LeaseRead{Call: 40 * ms, Return: 50 * ms, Exists: false})
	if p := CheckLeases([]Lease{l}); len(p) != 1 || !strings.Contains(p[0], "expired early") {
		t.Fatalf("lease gone at 50ms, alive until 100ms: got problems %q, want it expired early", p)
	}
}
