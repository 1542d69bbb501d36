package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/client"
)

func TestLimiter(t *testing.T) {
	c := connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// 2 a second, bursts of 2 (slow enough that a slow machine between
	// two calls does not give a token back).
	if _, err := c.SetLimit(ctx, &synodpb.Limit{Name: "sdk", Limit: 2, PeriodMs: 1000, Burst: 2}); err != nil {
		t.Fatal(err)
	}
	lim := c.Limiter("sdk", "user-1")
	if !lim.Allow(ctx) || !lim.Allow(ctx) {
		t.Fatal("the burst of 2 was refused")
	}
	asked := time.Now()
	d, err := lim.Take(ctx, 1)
	if err != nil || d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > 500*time.Millisecond || d.Limit != 2 {
		t.Fatalf("third take: got %+v, %v; want refused, retry within 500ms", d, err)
	}
	// Wait books the next token and sleeps until it is due: no earlier
	// than RetryAfter after the refusal (less the rounding up to a ms).
	// How long Wait itself sleeps depends on how slow the machine was
	// since.
	if err := lim.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if due := asked.Add(d.RetryAfter - time.Millisecond); time.Now().Before(due) {
		t.Fatalf("Wait returned %s before the token was due", due.Sub(time.Now()))
	}
	// A reservation within a second; cancelled, it gives the token back.
	before := time.Now()
	r, err := lim.Reserve(ctx, time.Second)
	if err != nil || !r.OK() || r.Delay() <= 0 {
		t.Fatalf("reserve: got ok %v, delay %s, %v", r.OK(), r.Delay(), err)
	}
	if err := r.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	r2, err := lim.Reserve(ctx, time.Second)
	// The same token again (a cancel that gave nothing back would put it
	// 500ms later); compared from a fixed time, as the delays shrink while
	// the test runs.
	if err != nil || !r2.OK() || r2.DelayFrom(before) > r.DelayFrom(before)+50*time.Millisecond {
		t.Fatalf("reserve after a cancel: got ok %v, due %s (first %s) after the first reserve was asked, %v; want no later",
			r2.OK(), r2.DelayFrom(before), r.DelayFrom(before), err)
	}
	// A wait that cannot be served before the deadline fails at once.
	short, cancelShort := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancelShort()
	if err := lim.WaitN(short, 2); err == nil {
		t.Fatal("WaitN(2) within 10ms of a drained bucket: got no error")
	}
}

func TestPermits(t *testing.T) {
	c := connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.SetLimit(ctx, &synodpb.Limit{Name: "sdk-jobs", Algorithm: synodpb.Limit_CONCURRENCY, Max: 1}); err != nil {
		t.Fatal(err)
	}
	s1, err := c.NewSession(ctx, client.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := c.NewSession(ctx, client.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close(ctx)
	p, err := c.Acquire(ctx, s1, "sdk-jobs", "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.TryAcquire(ctx, s2, "sdk-jobs", "k"); err != nil || ok {
		t.Fatalf("second permit of 1: got ok %v, %v", ok, err)
	}
	// Closing the session (its lease revoked) frees the permit for a
	// waiting Acquire.
	got := make(chan error, 1)
	go func() {
		p2, err := c.Acquire(ctx, s2, "sdk-jobs", "k")
		if err == nil {
			err = p2.Release(ctx)
		}
		got <- err
	}()
	if err := s1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("the waiting Acquire did not get the permit of the closed session")
	}
	_ = p.Release(ctx) // already gone with its lease: no error either way
}
