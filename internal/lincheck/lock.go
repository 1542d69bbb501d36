package lincheck

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Locks with fencing tokens.
//
// A lock workload records, for every guarded write a holder attempts (a txn
// that writes only if CREATE(lock key) = token), the holder's token, when
// the write was invoked and returned, and its outcome. Writes whose outcome
// is unknown prove nothing and are left out; the final contents of the
// fenced key's history (FencedValue events) cover them.
//
// CheckLock then asks: did two holders ever both succeed at guarded writes
// for overlapping periods? A holder's period is the span of revisions of its
// successful writes; tokens strictly increase with each acquisition, so the
// periods must be disjoint and ordered by token. In real time, a write of an
// older token that succeeded must not have been invoked after a write of a
// newer token returned. And in the fenced key's history, the tokens written
// must never decrease: a decrease is a deposed holder writing after its
// successor.

// LockWrite is one guarded write of a lock holder.
type LockWrite struct {
	Client int
	// Token is the holder's fencing token (the create revision of its
	// lock key).
	Token int64
	// Call and Return are when the write was invoked and when its answer
	// arrived.
	Call, Return time.Time
	// Succeeded is the txn's outcome: true if the guard held and the write
	// was applied.
	Succeeded bool
	// Revision is the revision of a successful write.
	Revision int64
	// Stale marks a write attempted after the holder was paused past its
	// lease (the workload expects it to fail; the checker does not care).
	Stale bool
}

// LockRecorder collects the guarded writes of a lock workload; it is safe
// for concurrent use.
type LockRecorder struct {
	mu     sync.Mutex
	writes []LockWrite
}

// Add records a write whose outcome is known.
func (r *LockRecorder) Add(w LockWrite) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, w)
}

// Writes returns a copy of the recorded writes.
func (r *LockRecorder) Writes() []LockWrite {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.writes)
}

// CheckLock checks the guarded writes of one lock and the tokens the fenced
// key held, in revision order (fenced). It returns the violations found,
// each as a sentence; none means mutual exclusion held as far as the
// history shows.
func CheckLock(writes []LockWrite, fenced []int64) []string {
	var out []string
	type span struct {
		token    int64
		client   int
		lo, hi   int64 // revisions of its successful writes
		loW, hiW LockWrite
	}
	spans := map[int64]*span{}
	var ok []LockWrite
	for _, w := range writes {
		if !w.Succeeded {
			continue
		}
		ok = append(ok, w)
		if w.Revision <= w.Token {
			out = append(out, fmt.Sprintf("client %d: guarded write of token %d succeeded at revision %d, not after the acquisition", w.Client, w.Token, w.Revision))
		}
		s := spans[w.Token]
		if s == nil {
			spans[w.Token] = &span{token: w.Token, client: w.Client, lo: w.Revision, hi: w.Revision, loW: w, hiW: w}
			continue
		}
		if s.client != w.Client {
			out = append(out, fmt.Sprintf("token %d held by two clients, %d and %d: both succeeded at guarded writes", w.Token, s.client, w.Client))
		}
		if w.Revision < s.lo {
			s.lo, s.loW = w.Revision, w
		}
		if w.Revision > s.hi {
			s.hi, s.hiW = w.Revision, w
		}
	}
	ordered := make([]*span, 0, len(spans))
	for _, s := range spans {
		ordered = append(ordered, s)
	}
	slices.SortFunc(ordered, func(a, b *span) int { return cmp.Compare(a.token, b.token) })
	for i := 1; i < len(ordered); i++ {
		a, b := ordered[i-1], ordered[i]
		if a.hi >= b.lo {
			out = append(out, fmt.Sprintf("holders overlap: client %d (token %d) wrote at revisions %d..%d, client %d (token %d) at %d..%d; got overlapping periods, want token %d's writes all before token %d's",
				a.client, a.token, a.lo, a.hi, b.client, b.token, b.lo, b.hi, a.token, b.token))
		}
	}
	// Real time: an older token's successful write invoked after a newer
	// token's successful write returned. Writes sorted by call time; keep
	// the newest token among writes returned before each call.
	byReturn := slices.Clone(ok)
	slices.SortFunc(byReturn, func(a, b LockWrite) int { return a.Return.Compare(b.Return) })
	byCall := slices.Clone(ok)
	slices.SortFunc(byCall, func(a, b LockWrite) int { return a.Call.Compare(b.Call) })
	var newest *LockWrite
	j := 0
	for _, w := range byCall {
		for j < len(byReturn) && byReturn[j].Return.Before(w.Call) {
			if newest == nil || byReturn[j].Token > newest.Token {
				newest = &byReturn[j]
			}
			j++
		}
		if newest != nil && newest.Token > w.Token {
			out = append(out, fmt.Sprintf("client %d's guarded write of token %d succeeded (revision %d) although invoked at %s, after client %d's write of the newer token %d returned at %s",
				w.Client, w.Token, w.Revision, w.Call.Format("15:04:05.000"), newest.Client, newest.Token, newest.Return.Format("15:04:05.000")))
		}
	}
	for i := 1; i < len(fenced); i++ {
		if fenced[i] < fenced[i-1] {
			out = append(out, fmt.Sprintf("fenced key: got token %d written after token %d (write %d of %d), want tokens never to decrease", fenced[i], fenced[i-1], i+1, len(fenced)))
		}
	}
	return out
}
