package coarsetimer

import (
	"context"
	"sync"
	"time"
)

// Timer closes channels once their deadline has passed, rounded up to its
// resolution. Run drives it.
type Timer struct {
	res   time.Duration
	start time.Time // slots count resolutions since start, on the monotonic clock

	mu struct {
		sync.Mutex
		// slots holds the channel of each slot that has a waiter, by the slot's
		// end (in resolutions since start); a slot is closed and removed once
		// Run sees its end pass.
		slots map[int64]chan struct{}
	}
}

// New returns a timer of resolution res.
func New(res time.Duration) *Timer {
	t := &Timer{res: res, start: time.Now()}
	t.mu.slots = map[int64]chan struct{}{}
	return t
}

// After returns a channel that is closed once d has passed: not before, and
// about one resolution after at the latest, while Run runs.
func (t *Timer) After(d time.Duration) <-chan struct{} {
	return t.after(time.Since(t.start), d)
}

// after is After called at elapsed since start.
func (t *Timer) after(elapsed, d time.Duration) <-chan struct{} {
	end := int64((elapsed + d + t.res - 1) / t.res)
	t.mu.Lock()
	defer t.mu.Unlock()
	ch, ok := t.mu.slots[end]
	if !ok {
		ch = make(chan struct{})
		t.mu.slots[end] = ch
	}
	return ch
}

// Run closes the channels of passed slots every resolution until ctx is
// done. Channels still open then stay open.
func (t *Timer) Run(ctx context.Context) {
	tick := time.NewTicker(t.res)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.expire(int64(time.Since(t.start) / t.res))
		}
	}
}

// expire closes the slots that ended at or before now (in resolutions).
func (t *Timer) expire(now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for end, ch := range t.mu.slots {
		if end <= now {
			close(ch)
			delete(t.mu.slots, end)
		}
	}
}
