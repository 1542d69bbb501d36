package server

import (
	"context"
	"sync"

	"github.com/synod-io/synod/internal/keys"
)

// Reads at a revision from the oracle share their rounds. Each needs a
// revision taken after it began and a read fence at that revision (or
// above) on every range it reads; a node serving many of them at once
// takes one revision for all that arrived while earlier ones were being
// taken (readRevisions), and keeps, per range, the highest fence it has
// learned, batching the asks for more (fenceCache): a fence at F
// promises for good that every entry stamped at or below F lies at or
// before its index, so it serves every read at a revision up to F. Without
// this, each read made an oracle request and a fence request per range of
// its own, most of them from followers to leaders over the network.

// batcher runs fn in rounds for its callers: a caller joins the first
// round that starts after it arrived, so the round's result is as fresh
// as one the caller would have run itself; up to a bound of rounds run at
// once (more would only queue behind each other), and callers arriving
// while every slot is taken share the next. The caller that takes a slot
// runs the round, under a context of fn's own (its result serves others).
type batcher[T any] struct {
	slots chan struct{} // one token per round running
	mu    struct {
		sync.Mutex
		waiting *round[T] // the round that callers arriving now join
	}
}

type round[T any] struct {
	arg     uint64        // the highest of its callers' arguments; fixed once it starts
	callers int           // the callers that joined it
	done    chan struct{} // closed once val and err are set
	val     T
	err     error
}

// newBatcher returns a batcher that runs up to inFlight rounds at once.
func newBatcher[T any](inFlight int) *batcher[T] {
	return &batcher[T]{slots: make(chan struct{}, inFlight)}
}

// do returns the result of fn(a) run in a round that started after do was
// called, a being at least arg.
func (b *batcher[T]) do(ctx context.Context, arg uint64, fn func(a uint64) (T, error)) (T, error) {
	var zero T
	b.mu.Lock()
	if b.mu.waiting == nil {
		b.mu.waiting = &round[T]{done: make(chan struct{})}
	}
	mine := b.mu.waiting
	mine.arg = max(mine.arg, arg)
	mine.callers++
	b.mu.Unlock()
	select {
	case b.slots <- struct{}{}:
	case <-mine.done: // another caller ran it
		return mine.val, mine.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	b.mu.Lock()
	if b.mu.waiting != mine {
		// Another caller started it meanwhile.
		b.mu.Unlock()
		<-b.slots
		select {
		case <-mine.done:
			return mine.val, mine.err
		case <-ctx.Done():
			return zero, ctx.Err()
		}
	}
	b.mu.waiting = nil
	b.mu.Unlock()
	mine.val, mine.err = fn(mine.arg)
	<-b.slots
	close(mine.done)
	return mine.val, mine.err
}

// fence is a read fence a range's leader gave: every entry stamped at or
// below rev lies at or before index, in the log of term's leader.
type fence struct {
	rev, index, term uint64
}

// fenceCache keeps, per data range, the highest fence this node learned,
// and batches the asks for more.
type fenceCache struct {
	mu struct {
		sync.Mutex
		ranges map[keys.RangeID]*rangeFence
	}
}

// rangeFence is one range's fences.
type rangeFence struct {
	known fence // the highest fence answered; guarded by fenceCache.mu
	asks  *batcher[fence]
}

// fenceAt returns a fence of range id at rev or above, asking for one with
// ask (the revision, then the fence's index and term) when none known
// covers rev; concurrent asks of a range are batched, each at the highest
// revision its callers need.
func (c *fenceCache) fenceAt(ctx context.Context, id keys.RangeID, rev uint64, ask func(uint64) (uint64, uint64, error)) (fence, error) {
	c.mu.Lock()
	if c.mu.ranges == nil {
		c.mu.ranges = make(map[keys.RangeID]*rangeFence)
	}
	rf := c.mu.ranges[id]
	if rf == nil {
		rf = &rangeFence{asks: newBatcher[fence](roundsInFlight)}
		c.mu.ranges[id] = rf
	}
	if rf.known.rev >= rev {
		f := rf.known
		c.mu.Unlock()
		return f, nil
	}
	c.mu.Unlock()
	return rf.asks.do(ctx, rev, func(rev uint64) (fence, error) {
		index, term, err := ask(rev)
		if err != nil {
			return fence{}, err
		}
		f := fence{rev: rev, index: index, term: term}
		c.mu.Lock()
		if f.rev > rf.known.rev {
			rf.known = f
		}
		c.mu.Unlock()
		return f, nil
	})
}

// roundsInFlight bounds the oracle requests for reads, and the fence
// requests of each range, that a node runs at once.
const roundsInFlight = 4
