package replica

import "errors"

// Read fences. A read at revision R over several ranges (the store's state
// at R, one revision for every range) needs each range to promise that no
// write at or below R commits there after the read is served. Stamps follow
// the log (stamps.go), so the entries stamped at or below R are a prefix of
// the range's log; a leader asked for a fence at R
//
//   - stamps nothing at or below R from then on: it drops what it holds at
//     or below R (and trims the blocks that come later), so its next stamps
//     come from revisions the oracle hands out later;
//   - answers with its term and the index of the last entry it appended,
//     once that entry is in its log on disk: every entry stamped at or below
//     R that can still commit lies at or before that index.
//
// The caller then confirms, with a ReadIndex round of its own, that the
// replica still led the range in that term (a leader elected later fetches
// its revisions after its election, so above R: the oracle hands revisions
// out in increasing real-time order), and serves the read once its own
// replica has applied that index (NewReadAtLeast).

// ErrNotLeader answers a request only the range's leader serves.
var ErrNotLeader = errors.New("not the range's leader")

// Fence is a request for a read fence at a revision (see above).
type Fence struct {
	rev  uint64
	term uint64
	done chan FenceResult
}

// FenceResult is a fence's answer: the term the replica led in, and the
// index every entry stamped at or below the fence's revision lies at or
// before; or an error (ErrNotLeader, ErrStopped).
type FenceResult struct {
	Term, Index uint64
	Err         error
}

// NewFence returns a request for a read fence at rev.
func NewFence(rev uint64) *Fence { return &Fence{rev: rev, done: make(chan FenceResult, 1)} }

// Done receives the answer exactly once.
func (f *Fence) Done() <-chan FenceResult { return f.done }

func (f *Fence) complete(res FenceResult) {
	select {
	case f.done <- res:
	default:
	}
}

// FailFence completes a fence that never reached a replica.
func FailFence(f *Fence, err error) { f.complete(FenceResult{Err: err}) }

// FenceReads raises the replica's read fence to f's revision, if it leads
// a stamped range, and answers f once the entries it appended so far are
// on disk (at once when it has none pending).
func (r *Replica) FenceReads(f *Fence) {
	if r.stopped {
		f.complete(FenceResult{Err: ErrStopped})
		return
	}
	term, ok := r.stamping()
	if !ok {
		f.complete(FenceResult{Err: ErrNotLeader})
		return
	}
	r.syncStamper(term)
	r.raiseReadFloor(f.rev)
	f.term = term
	if !r.rn.HasReady() {
		// Raft holds no entry that is not on disk yet.
		_, last := r.LogBounds()
		f.complete(FenceResult{Term: term, Index: last})
		return
	}
	r.pendingFences = append(r.pendingFences, f)
}

// completeFences answers the fences waiting for the entries appended before
// them to be on disk; HandleReady calls it once a Ready's entries are.
func (r *Replica) completeFences() {
	if len(r.pendingFences) == 0 {
		return
	}
	_, last := r.LogBounds()
	for _, f := range r.pendingFences {
		f.complete(FenceResult{Term: f.term, Index: last})
	}
	r.pendingFences = nil
}

// raiseReadFloor makes the leader stamp nothing at or below rev from now
// on: it drops the revisions it holds at or below it.
func (r *Replica) raiseReadFloor(rev uint64) {
	s := &r.stamps
	if rev <= s.readFloor {
		return
	}
	s.readFloor = rev
	if s.trim() {
		s.fenced = true
	}
	r.askRevisions()
}

// trim drops the revisions held at or below the read floor and reports
// whether there were any.
func (s *stamper) trim() bool {
	dropped := false
	kept := s.blocks[:0]
	for _, b := range s.blocks {
		if b[0] <= s.readFloor {
			dropped = true
		}
		if b[1] <= s.readFloor {
			continue
		}
		b[0] = max(b[0], s.readFloor+1)
		kept = append(kept, b)
	}
	s.blocks = kept
	return dropped
}
