package client

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/synod-io/synod/api/synodpb"
)

// Limits is the raw client of the Limits service (definitions, batched
// takes over several limits, stats).
func (c *Client) Limits() synodpb.LimitsClient { return c.limits }

// SetLimit creates or changes a limit and returns it as stored.
func (c *Client) SetLimit(ctx context.Context, l *synodpb.Limit) (*synodpb.Limit, error) {
	resp, err := c.limits.SetLimit(ctx, &synodpb.SetLimitRequest{Limit: l})
	if err != nil {
		return nil, err
	}
	return resp.Limit, nil
}

// GetLimit returns a limit.
func (c *Client) GetLimit(ctx context.Context, name string) (*synodpb.Limit, error) {
	resp, err := c.limits.GetLimit(ctx, &synodpb.GetLimitRequest{Name: name})
	if err != nil {
		return nil, err
	}
	return resp.Limit, nil
}

// ListLimits returns every limit.
func (c *Client) ListLimits(ctx context.Context) ([]*synodpb.Limit, error) {
	resp, err := c.limits.ListLimits(ctx, &synodpb.ListLimitsRequest{})
	if err != nil {
		return nil, err
	}
	return resp.Limits, nil
}

// DeleteLimit removes a limit; false if there was none.
func (c *Client) DeleteLimit(ctx context.Context, name string) (bool, error) {
	resp, err := c.limits.DeleteLimit(ctx, &synodpb.DeleteLimitRequest{Name: name})
	if err != nil {
		return false, err
	}
	return resp.Deleted, nil
}

// Limiter applies a limit to one key (a tenant, a user, an address), in the
// shape of golang.org/x/time/rate's Limiter, except that each call is a
// request to the cluster and so takes a context: Allow and AllowN decide
// at once, Wait and WaitN wait for capacity, Reserve and ReserveN book
// capacity and say how long to wait before using it. Take returns the
// whole decision. A Limiter is safe for concurrent use.
type Limiter struct {
	c     *Client
	limit string
	key   []byte
}

// Limiter returns the limiter of key under limit.
func (c *Client) Limiter(limit, key string) *Limiter {
	return &Limiter{c: c, limit: limit, key: []byte(key)}
}

// Decision is the outcome of a take.
type Decision struct {
	// Allowed reports whether the tokens were granted.
	Allowed bool
	// Remaining is what the key can still take now.
	Remaining int64
	// RetryAfter, when refused, is how long until the same request would
	// be allowed if nothing else were taken meanwhile (never early).
	RetryAfter time.Duration
	// ResetAfter is how long until the key is back to full capacity.
	ResetAfter time.Duration
	// Limit is the key's capacity.
	Limit int64
	// Delay, for a reservation, is how long to wait before acting.
	Delay time.Duration
	// WouldRefuse is set for a SHADOW limit that would have refused.
	WouldRefuse bool
	// Unavailable is set when the cluster could not decide in time:
	// Allowed is then the limit's fail_open.
	Unavailable bool
}

func decisionFrom(d *synodpb.Decision) Decision {
	ms := func(v int64) time.Duration { return time.Duration(v) * time.Millisecond }
	return Decision{
		Allowed: d.Allowed, Remaining: d.Remaining, RetryAfter: ms(d.RetryAfterMs), ResetAfter: ms(d.ResetAfterMs),
		Limit: d.Limit, Delay: ms(d.WaitMs), WouldRefuse: d.WouldRefuse, Unavailable: d.Unavailable,
	}
}

// Take asks for n tokens and returns the decision.
func (l *Limiter) Take(ctx context.Context, n int) (Decision, error) {
	return l.take(ctx, n, false, 0)
}

// Peek returns the decision Take would make, taking nothing.
func (l *Limiter) Peek(ctx context.Context, n int) (Decision, error) {
	return l.take(ctx, n, true, 0)
}

func (l *Limiter) take(ctx context.Context, n int, peek bool, maxWait time.Duration) (Decision, error) {
	req := &synodpb.TakeRequest{
		Items:     []*synodpb.TakeItem{{Limit: l.limit, Key: l.key, Cost: int64(n)}},
		Peek:      peek,
		MaxWaitMs: maxWait.Milliseconds(),
	}
	resp, err := l.c.limits.Take(ctx, req)
	if err != nil {
		return Decision{}, err
	}
	return decisionFrom(resp.Decisions[0]), nil
}

// Allow reports whether one token may be taken now, and takes it if so. An
// error (the cluster unreachable) reports false.
func (l *Limiter) Allow(ctx context.Context) bool { return l.AllowN(ctx, 1) }

// AllowN reports whether n tokens may be taken now, and takes them if so.
func (l *Limiter) AllowN(ctx context.Context, n int) bool {
	d, err := l.Take(ctx, n)
	return err == nil && d.Allowed
}

// Wait waits for one token.
func (l *Limiter) Wait(ctx context.Context) error { return l.WaitN(ctx, 1) }

// WaitN waits until n tokens are granted, or fails when ctx ends first (or
// would end before they can be: as x/time/rate, it does not wait in vain).
// The cluster books the tokens when they are within reach, so waiters are
// served in the order they asked.
func (l *Limiter) WaitN(ctx context.Context, n int) error {
	for {
		maxWait := time.Duration(math.MaxInt32) * time.Millisecond
		if dl, ok := ctx.Deadline(); ok {
			maxWait = time.Until(dl)
		}
		d, err := l.take(ctx, n, false, max(time.Millisecond, maxWait))
		if err != nil {
			return err
		}
		wait := d.Delay
		if !d.Allowed {
			if d.Unavailable {
				return fmt.Errorf("client: limit %s: no decision in time", l.limit)
			}
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d.RetryAfter {
				return fmt.Errorf("client: limit %s: WaitN(n=%d) would exceed the context's deadline", l.limit, n)
			}
			wait = d.RetryAfter
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				if d.Allowed {
					l.refund(n)
				}
				return ctx.Err()
			case <-t.C:
			}
		}
		if d.Allowed {
			return nil
		}
	}
}

func (l *Limiter) refund(n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = l.c.limits.Refund(ctx, &synodpb.RefundRequest{Items: []*synodpb.TakeItem{{Limit: l.limit, Key: l.key, Cost: int64(n)}}})
}

// Reservation is capacity booked by Reserve: act on it after Delay, or
// Cancel it to give the tokens back.
type Reservation struct {
	l    *Limiter
	n    int
	ok   bool
	at   time.Time
	d    Decision
	done bool
}

// Reserve books one token, waiting at most maxWait for it.
func (l *Limiter) Reserve(ctx context.Context, maxWait time.Duration) (*Reservation, error) {
	return l.ReserveN(ctx, 1, maxWait)
}

// ReserveN books n tokens if they are available within maxWait. The
// reservation is not OK if they are not (nothing is taken then).
func (l *Limiter) ReserveN(ctx context.Context, n int, maxWait time.Duration) (*Reservation, error) {
	now := time.Now()
	d, err := l.take(ctx, n, false, maxWait)
	if err != nil {
		return nil, err
	}
	return &Reservation{l: l, n: n, ok: d.Allowed, at: now.Add(d.Delay), d: d}, nil
}

// OK reports whether the tokens were booked.
func (r *Reservation) OK() bool { return r.ok }

// Decision is the cluster's answer.
func (r *Reservation) Decision() Decision { return r.d }

// Delay is how long to wait, from now, before using the tokens (0 if
// they may be used at once; RetryAfter's bound if not OK).
func (r *Reservation) Delay() time.Duration { return r.DelayFrom(time.Now()) }

// DelayFrom is Delay from t.
func (r *Reservation) DelayFrom(t time.Time) time.Duration {
	if !r.ok {
		return r.d.RetryAfter
	}
	return max(0, r.at.Sub(t))
}

// Cancel gives the booked tokens back (once).
func (r *Reservation) Cancel(ctx context.Context) error {
	if !r.ok || r.done {
		return nil
	}
	r.done = true
	_, err := r.l.c.limits.Refund(ctx, &synodpb.RefundRequest{Items: []*synodpb.TakeItem{{Limit: r.l.limit, Key: r.l.key, Cost: int64(r.n)}}})
	return err
}

// Permit is a permit of a concurrency limit, held on a session's lease:
// if the process dies, the permit comes back when the lease expires.
type Permit struct {
	c      *Client
	s      *Session
	limit  string
	key    []byte
	id     string
	held   int64
	max    int64
	closed bool
}

// Acquire waits for a permit of limit for key, on session s, until ctx
// ends.
func (c *Client) Acquire(ctx context.Context, s *Session, limit, key string) (*Permit, error) {
	for {
		wait := time.Hour
		if dl, ok := ctx.Deadline(); ok {
			wait = max(time.Millisecond, time.Until(dl))
		}
		p, ok, err := c.acquire(ctx, s, limit, key, wait)
		if err != nil || ok {
			return p, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// TryAcquire takes a permit if one is free now; ok reports whether it did.
func (c *Client) TryAcquire(ctx context.Context, s *Session, limit, key string) (p *Permit, ok bool, err error) {
	return c.acquire(ctx, s, limit, key, 0)
}

func (c *Client) acquire(ctx context.Context, s *Session, limit, key string, wait time.Duration) (*Permit, bool, error) {
	req := &synodpb.AcquireRequest{Limit: limit, Key: []byte(key), Lease: int64(s.Lease()), WaitMs: wait.Milliseconds()}
	resp, err := c.limits.Acquire(ctx, req)
	if err != nil {
		return nil, false, err
	}
	p := &Permit{c: c, s: s, limit: limit, key: []byte(key), id: resp.Permit, held: resp.Held, max: resp.Max}
	return p, resp.Acquired, nil
}

// ID is the permit's ID.
func (p *Permit) ID() string { return p.id }

// Held is how many permits of the key were held, with this one, when it
// was acquired; Max the limit's.
func (p *Permit) Held() (held, max int64) { return p.held, p.max }

// Lost is closed when the permit's session ends (its lease expired or was
// revoked): the permit is no longer held.
func (p *Permit) Lost() <-chan struct{} { return p.s.Done() }

// Release gives the permit back.
func (p *Permit) Release(ctx context.Context) error {
	if p.closed {
		return nil
	}
	_, err := p.c.limits.Release(ctx, &synodpb.ReleaseRequest{Limit: p.limit, Key: p.key, Permit: p.id})
	if err == nil {
		p.closed = true
	}
	return err
}
