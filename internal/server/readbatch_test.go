package server

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBatcherRoundsStartAfterTheirCallers checks that every caller gets
// the result of a round that started after it called, while callers
// arriving during a round share the next one.
func TestBatcherRoundsStartAfterTheirCallers(t *testing.T) {
	b := newBatcher[int64](1)
	var started atomic.Int64
	gate := make(chan struct{})
	fn := func(uint64) (int64, error) {
		n := started.Add(1)
		if n == 1 {
			<-gate // hold the first round until the others queued
		}
		return n, nil
	}
	first := make(chan int64, 1)
	go func() {
		v, _ := b.do(context.Background(), 0, fn)
		first <- v
	}()
	deadline := time.Now().Add(10 * time.Second)
	for started.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first round never started")
		}
		time.Sleep(time.Millisecond)
	}
	const callers = 20
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		before := started.Load()
		wg.Go(func() {
			v, err := b.do(context.Background(), 0, fn)
			if err != nil {
				errs <- err
				return
			}
			if v <= before {
				errs <- errors.New("a caller got the result of a round that started before it called")
			}
		})
	}
	// Wait until some caller joined the round after the running one.
	for {
		b.mu.Lock()
		joined := b.mu.waiting != nil
		b.mu.Unlock()
		if joined {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no caller joined the next round")
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if v := <-first; v != 1 {
		t.Errorf("first caller: got round %d, want 1", v)
	}
	if n := started.Load(); n >= callers+1 {
		t.Errorf("got %d rounds for %d callers, want fewer: callers arriving during a round share the next", n, callers+1)
	}
}

// TestBatcherCallerLeavesOnItsContext checks that a caller whose context
// ends stops waiting for a round held up elsewhere.
func TestBatcherCallerLeavesOnItsContext(t *testing.T) {
	b := newBatcher[int](1)
	gate := make(chan struct{})
	defer close(gate)
	running := make(chan struct{})
	go b.do(context.Background(), 0, func(uint64) (int, error) { close(running); <-gate; return 1, nil })
	<-running
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.do(ctx, 0, func(uint64) (int, error) { return 2, nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

// TestFenceCacheServesReadsUpToAKnownFence checks that a known fence
// serves reads at or below its revision without asking, that a read above
// it asks, and that a failed ask is not remembered.
func TestFenceCacheServesReadsUpToAKnownFence(t *testing.T) {
	var c fenceCache
	var asks []uint64
	fail := false
	ask := func(rev uint64) (uint64, uint64, error) {
		asks = append(asks, rev)
		if fail {
			return 0, 0, errors.New("no leader")
		}
		return rev * 10, 7, nil
	}
	ctx := context.Background()
	f, err := c.fenceAt(ctx, 2, 50, ask)
	if err != nil || f != (fence{rev: 50, index: 500, term: 7}) {
		t.Fatalf("got %+v, %v, want fence at 50, index 500, term 7", f, err)
	}
	for _, rev := range []uint64{1, 49, 50} {
		if f, err := c.fenceAt(ctx, 2, rev, ask); err != nil || f.rev != 50 {
			t.Errorf("read at %d: got %+v, %v, want the fence at 50", rev, f, err)
		}
	}
	if len(asks) != 1 {
		t.Errorf("got asks %v, want one", asks)
	}
	if f, _ := c.fenceAt(ctx, 3, 10, ask); f.rev != 10 {
		t.Errorf("another range: got a fence at %d, want 10 (ranges keep their own)", f.rev)
	}
	fail = true
	if _, err := c.fenceAt(ctx, 2, 60, ask); err == nil {
		t.Error("got no error from a failed ask, want it")
	}
	fail = false
	if f, err := c.fenceAt(ctx, 2, 60, ask); err != nil || f.rev != 60 {
		t.Errorf("after a failed ask: got %+v, %v, want a fence at 60", f, err)
	}
	if want := []uint64{50, 10, 60, 60}; len(asks) != len(want) {
		t.Errorf("got asks %v, want %v", asks, want)
	}
}

// TestFenceCacheCoalescesConcurrentReads checks that reads arriving while
// every ask slot of a range is taken share the next ask, at the highest
// revision among them, and that each gets a fence at or above its
// revision.
func TestFenceCacheCoalescesConcurrentReads(t *testing.T) {
	var c fenceCache
	var asks atomic.Int64
	var asked sync.Map // revisions asked at
	gate := make(chan struct{})
	ask := func(rev uint64) (uint64, uint64, error) {
		asks.Add(1)
		asked.Store(rev, true)
		<-gate
		return rev, 1, nil
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	read := func(rev uint64) {
		wg.Go(func() {
			f, err := c.fenceAt(ctx, 2, rev, ask)
			if err != nil || f.rev < rev {
				errs <- errors.New("a read got a fence below its revision, or an error")
			}
		})
	}
	waitFor := func(what string, cond func() bool) {
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("waited in vain for %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	// Fill every slot with an ask of its own.
	for i := range roundsInFlight {
		read(uint64(10 + i))
		waitFor("an ask per read", func() bool { return asks.Load() == int64(i+1) })
	}
	// Then 36 more, all above those: they queue for one ask.
	const queued = 36
	for i := range queued {
		read(uint64(100 + i))
	}
	waitFor("the reads to queue", func() bool {
		c.mu.Lock()
		b := c.mu.ranges[2].asks
		c.mu.Unlock()
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.mu.waiting != nil && b.mu.waiting.callers == queued
	})
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := asks.Load(); n != roundsInFlight+1 {
		t.Errorf("got %d asks, want %d: one per slot, then one for the reads that queued", n, roundsInFlight+1)
	}
	if _, ok := asked.Load(uint64(100 + queued - 1)); !ok {
		t.Errorf("the queued reads' ask was not at the highest revision among them (%d)", 100+queued-1)
	}
}

// TestBatcherRunsRoundsSideBySide checks that rounds run at once up to
// the batcher's bound, each caller arriving with a slot free running its
// own.
func TestBatcherRunsRoundsSideBySide(t *testing.T) {
	b := newBatcher[int](2)
	gate := make(chan struct{})
	var running atomic.Int64
	fn := func(uint64) (int, error) {
		running.Add(1)
		<-gate
		return 0, nil
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { b.do(context.Background(), 0, fn) })
	}
	deadline := time.Now().Add(10 * time.Second)
	for running.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("got %d rounds running, want 2", running.Load())
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()
}
