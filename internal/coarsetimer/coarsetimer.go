package coarsetimer

import (
	"context"
	"math"
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
		// stopped is set when Run returns: every channel is closed then, and
		// After returns a closed one.
		stopped bool
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
	if t.mu.stopped {
		return stoppedChan
	}
	ch, ok := t.mu.slots[end]
	if !ok {
		ch = make(chan struct{})
		t.mu.slots[end] = ch
	}
	return ch
}

// stoppedChan is After's answer once the timer has stopped.
var stoppedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// Run closes the channels of passed slots every resolution until ctx is
// done. Then it closes all of them, early: the server that waits on them is
// shutting down, and no wait may outlast the timer.
func (t *Timer) Run(ctx context.Context) {
	tick := time.NewTicker(t.res)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			t.mu.Lock()
			t.mu.stopped = true
			t.mu.Unlock()
			t.expire(math.MaxInt64)
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
