package lincheck

import (
	"fmt"
	"time"
)

// WatchEvent is one watch event: a put of Value or a delete of Key at
// Revision, and the key's previous version as the event carried it (watches
// ask for prev_kv): its revision (0: none) and value.
type WatchEvent struct {
	Revision     int64  `json:"revision"`
	Key          string `json:"key"`
	Delete       bool   `json:"delete,omitempty"`
	Value        string `json:"value,omitempty"`
	PrevRevision int64  `json:"prevRevision,omitempty"`
	PrevValue    string `json:"prevValue,omitempty"`
}

func (e WatchEvent) withoutPrev() WatchEvent {
	e.PrevRevision, e.PrevValue = 0, ""
	return e
}

func (e WatchEvent) String() string {
	s := fmt.Sprintf("put(%s, %q)@%d", e.Key, e.Value, e.Revision)
	if e.Delete {
		s = fmt.Sprintf("delete(%s)@%d", e.Key, e.Revision)
	}
	if e.PrevRevision != 0 {
		s += fmt.Sprintf(" over %q@%d", e.PrevValue, e.PrevRevision)
	}
	return s
}

// Watcher is what one watcher saw: the events of every key of a range, from
// revision Start on.
type Watcher struct {
	Name   string       `json:"name"`
	Start  int64        `json:"start"`
	Events []WatchEvent `json:"events"`
	// Restarts counts the times the watch had to be opened again (from the
	// revision after the last event) because its channel closed.
	Restarts int `json:"restarts,omitempty"`
}

// CheckEventLog checks the store's event log (every event of the watched
// range, read after the run from revision 1) against the history: every
// acknowledged write is in the log at its revision, and every event in the
// log is a write some client asked for. Values are unique per write, which
// is what makes the second check possible. Each event's previous version
// must be the key's event before it in the log, if that was a put, and none
// otherwise (the run compacts nothing).
func CheckEventLog(log []WatchEvent, history []Op) []string {
	var problems []string
	add := func(format string, args ...any) {
		if len(problems) < maxListed {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	byRev := map[int64]WatchEvent{}
	last := map[string]WatchEvent{}
	for i, e := range log {
		if i > 0 && e.Revision <= log[i-1].Revision {
			add("event log out of order: %s after %s", e, log[i-1])
		}
		byRev[e.Revision] = e
		var wantRev int64
		var wantValue string
		if l, ok := last[e.Key]; ok && !l.Delete {
			wantRev, wantValue = l.Revision, l.Value
		}
		if e.PrevRevision != wantRev || e.PrevValue != wantValue {
			add("event %s: want previous version %q@%d (0: none)", e, wantValue, wantRev)
		}
		last[e.Key] = e
	}
	writes := map[string]Op{} // by value
	deletes := map[string]bool{}
	for _, o := range history {
		switch o.Input.Kind {
		case Put, CAS:
			writes[o.Input.Value] = o
		case Delete:
			deletes[o.Input.Key] = true
		}
		if o.Output.Unknown || !isWrite(o) {
			continue
		}
		e, ok := byRev[o.Output.Revision]
		want := WatchEvent{Revision: o.Output.Revision, Key: o.Input.Key, Delete: o.Input.Kind == Delete}
		if !want.Delete {
			want.Value = o.Input.Value
		}
		if !ok || e.withoutPrev() != want {
			got := "no event"
			if ok {
				got = e.String()
			}
			add("acknowledged write missing from the event log: %s; at revision %d the log has %s", o, o.Output.Revision, got)
		}
	}
	for _, e := range log {
		if e.Delete {
			if !deletes[e.Key] {
				add("event log has %s, which no client asked for", e)
			}
			continue
		}
		o, ok := writes[e.Value]
		if !ok || o.Input.Key != e.Key {
			add("event log has %s, which no client asked for", e)
		}
	}
	return problems
}

// CheckWatchers checks that each watcher saw every event of the log from its
// start revision to its last event, once each and in revision order, equal
// to the log's; and that it caught up with the log's last revision.
func CheckWatchers(log []WatchEvent, watchers []Watcher) []string {
	var problems []string
	for _, w := range watchers {
		var mine []string
		add := func(format string, args ...any) {
			if len(mine) < maxListed {
				mine = append(mine, fmt.Sprintf("watcher %s (from revision %d, %d restarts): ", w.Name, w.Start, w.Restarts)+fmt.Sprintf(format, args...))
			}
		}
		// The log's events from w.Start on, in order.
		i := 0
		for i < len(log) && log[i].Revision < w.Start {
			i++
		}
		for k, e := range w.Events {
			if k > 0 && e.Revision <= w.Events[k-1].Revision {
				add("event %s after %s: not in revision order, or seen twice", e, w.Events[k-1])
				continue
			}
			if e.Revision < w.Start {
				add("event %s is before the start revision", e)
				continue
			}
			if i >= len(log) {
				add("event %s is not in the log", e)
				continue
			}
			if log[i].Revision < e.Revision {
				add("missed %s (next seen: %s)", log[i], e)
				for i < len(log) && log[i].Revision < e.Revision {
					i++
				}
			}
			if i < len(log) && log[i] == e {
				i++
			} else {
				add("event %s differs from the log's %v", e, logAt(log, e.Revision))
			}
		}
		if i < len(log) {
			add("did not catch up: missed %d events from %s on", len(log)-i, log[i])
		}
		problems = append(problems, mine...)
	}
	return problems
}

func logAt(log []WatchEvent, rev int64) string {
	for _, e := range log {
		if e.Revision == rev {
			return e.String()
		}
	}
	return fmt.Sprintf("nothing at revision %d", rev)
}

// Lease is the life of one lease as a client saw it: granted with a key
// attached, renewed, and its key read.
type Lease struct {
	ID  int64  `json:"id"`
	Key string `json:"key"`
	// Attached is when the put attaching Key to the lease returned (0 if it
	// never did).
	Attached int64 `json:"attached"`
	// AliveUntil is the latest Call+TTL of a successful grant or keepalive:
	// the lease cannot expire before.
	AliveUntil int64       `json:"aliveUntil"`
	Reads      []LeaseRead `json:"reads"`
}

// LeaseRead is a linearizable read of a lease's key.
type LeaseRead struct {
	Call   int64 `json:"call"`
	Return int64 `json:"return"`
	Exists bool  `json:"exists"`
}

// CheckLeases checks that no lease expired early: a read that started after
// the key was attached and returned before the lease's AliveUntil must see
// the key.
func CheckLeases(leases []Lease) []string {
	var problems []string
	for _, l := range leases {
		if l.Attached == 0 {
			continue
		}
		for _, r := range l.Reads {
			if r.Call > l.Attached && r.Return < l.AliveUntil && !r.Exists {
				if len(problems) < maxListed {
					problems = append(problems, fmt.Sprintf("lease %x expired early: its key %s was gone at a read [%s, %s], but a grant or keepalive said it lives until %s",
						l.ID, l.Key, time.Duration(r.Call), time.Duration(r.Return), time.Duration(l.AliveUntil)))
				}
			}
		}
	}
	return problems
}
