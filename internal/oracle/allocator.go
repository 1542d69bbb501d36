package oracle

import "fmt"

// DefaultWindow is how far above the revisions it hands out a leader
// raises the stored ceiling: one system range write per DefaultWindow
// revisions, and at most that many skipped at a failover.
const DefaultWindow = 2_000

// Allocator hands out revisions for the leader of one term of the system
// range. Not safe for concurrent use.
type Allocator struct {
	window uint64
	// term is the term the allocator serves in; 0 before Start.
	term uint64
	// next is the next revision to hand out.
	next uint64
	// ceiling is the highest revision that may be handed out: a stored
	// ceiling this leader saw applied (in its term, or at its start).
	ceiling uint64
}

// NewAllocator returns an allocator that raises the ceiling by window
// (DefaultWindow if zero) above what it needs.
func NewAllocator(window uint64) *Allocator {
	if window == 0 {
		window = DefaultWindow
	}
	return &Allocator{window: window}
}

// Term returns the term the allocator serves in (0: none yet).
func (a *Allocator) Term() uint64 { return a.term }

// Start makes the allocator serve term, above stored: the ceiling the
// system range stores once this node, leading term, applied every entry of
// the terms before. Every revision handed out before is at most stored.
func (a *Allocator) Start(term, stored uint64) error {
	if term <= a.term {
		return fmt.Errorf("oracle: start in term %d after serving term %d", term, a.term)
	}
	a.term, a.next, a.ceiling = term, stored+1, stored
	return nil
}

// Raise returns the ceiling to store, and true, when n more revisions
// cannot be handed out under the current one: enough for them and a window
// above. Store it with a command fenced to the allocator's term, then call
// Raised.
func (a *Allocator) Raise(n uint64) (uint64, bool) {
	if a.term == 0 || a.next+n-1 <= a.ceiling {
		return 0, false
	}
	return a.next + n - 1 + a.window, true
}

// Raised records that the system range applied, in term, a ceiling
// command and now stores ceiling. A ceiling applied in another term says
// nothing of what this leader may hand out.
func (a *Allocator) Raised(term, ceiling uint64) {
	if term == a.term && ceiling > a.ceiling {
		a.ceiling = ceiling
	}
}

// SkipTo makes the next revision handed out above floor (a revision taken
// outside the oracle, that those it hands out must follow).
func (a *Allocator) SkipTo(floor uint64) {
	if a.term != 0 && a.next <= floor {
		a.next = floor + 1
	}
}

// Take hands out n > 0 consecutive revisions and returns the first; false
// when the ceiling (Raise) or the term (Start) does not allow them.
func (a *Allocator) Take(n uint64) (uint64, bool) {
	if a.term == 0 || n == 0 || a.next+n-1 > a.ceiling {
		return 0, false
	}
	first := a.next
	a.next += n
	return first, true
}
