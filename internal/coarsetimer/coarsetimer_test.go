package coarsetimer

import (
	"context"
	"sync"
	"testing"
	"time"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestSlots drives the timer by hand: a channel closes at the end of its
// slot, not before, and callers whose deadlines share a slot share a channel.
func TestSlots(t *testing.T) {
	tm := New(time.Second) // Run is not running
	h := time.Hour
	a := tm.after(h+200*time.Millisecond, time.Second) // due at 1h+1.2s: slot ending at 3602s
	b := tm.after(h+900*time.Millisecond, time.Second) // due at 1h+1.9s: same slot
	if a != b {
		t.Fatal("deadlines in one slot got different channels")
	}
	c := tm.after(h+500*time.Millisecond, 3*time.Second) // due at 1h+3.5s: slot ending at 3604s
	if c == a {
		t.Fatal("deadlines in different slots share a channel")
	}
	tm.expire(3601)
	if closed(a) {
		t.Fatal("channel closed before its deadline")
	}
	tm.expire(3602)
	if !closed(a) {
		t.Fatal("channel still open after its slot ended")
	}
	if closed(c) {
		t.Fatal("later slot closed with an earlier one")
	}
	tm.expire(3604)
	if !closed(c) {
		t.Fatal("later slot still open after it ended")
	}
	if got := len(tm.mu.slots); got != 0 {
		t.Fatalf("slots left after all ended: got %d, want 0", got)
	}
}

// TestRun checks that Run closes channels once their time has passed, and
// that After is safe to call from many goroutines while it runs.
func TestRun(t *testing.T) {
	tm := New(5 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tm.Run(ctx)
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()
	var callers sync.WaitGroup
	for range 8 {
		callers.Add(1)
		go func() {
			defer callers.Done()
			for range 50 {
				start := time.Now()
				<-tm.After(10 * time.Millisecond)
				if got := time.Since(start); got < 10*time.Millisecond {
					t.Errorf("channel closed after %v, want at least 10ms", got)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		callers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("timeouts did not fire within 30s")
	}
}

// TestStopClosesEverything: when Run returns, waits end, and later ones do
// not start.
func TestStopClosesEverything(t *testing.T) {
	tm := New(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tm.Run(ctx)
	}()
	pending := tm.After(time.Hour)
	cancel()
	<-done
	if !closed(pending) {
		t.Fatal("a wait outlived the timer's Run")
	}
	if !closed(tm.After(time.Hour)) {
		t.Fatal("After on a stopped timer returned an open channel")
	}
}
