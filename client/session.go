package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultSessionTTL is the TTL of a session's lease unless WithTTL says
// otherwise (etcd's default, in seconds).
const DefaultSessionTTL = 60

// Why a session ended (Session.Err).
var (
	// ErrSessionLost: the lease is not known to be alive any more (it
	// expired, was revoked, or could not be renewed in time).
	ErrSessionLost = errors.New("session lost: its lease expired, was revoked or could not be renewed in time")
	// ErrSessionClosed: Close or Orphan ended the session.
	ErrSessionClosed = errors.New("session closed")
)

// Session is a lease kept alive in the background: the locks, elections and
// memberships made on it last as long as it does. Done is closed as soon as
// the lease cannot be confirmed alive any more: it expired, was revoked, or
// went unrenewed for its TTL (the client lost the cluster), counted from the
// moment each renewal was sent, so Done is never late.
type Session struct {
	cli   *Client
	lease clientv3.LeaseID
	ttl   time.Duration

	done   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	aliveUntil time.Time
	err        error
}

type sessionOptions struct {
	ttl   int64
	lease clientv3.LeaseID
}

// SessionOption configures NewSession.
type SessionOption func(*sessionOptions)

// WithTTL sets the TTL of the session's lease, in seconds (default
// DefaultSessionTTL). A holder that stops (crashes, pauses) loses its
// locks about this long after its last renewal.
func WithTTL(seconds int) SessionOption {
	return func(o *sessionOptions) {
		if seconds > 0 {
			o.ttl = int64(seconds)
		}
	}
}

// WithLease makes the session keep an existing lease alive instead of
// granting one.
func WithLease(id clientv3.LeaseID) SessionOption {
	return func(o *sessionOptions) { o.lease = id }
}

// NewSession grants a lease (or adopts one, WithLease) and keeps it alive
// until Close or Orphan, or until it is lost (Done).
func (c *Client) NewSession(ctx context.Context, opts ...SessionOption) (*Session, error) {
	o := sessionOptions{ttl: DefaultSessionTTL}
	for _, opt := range opts {
		opt(&o)
	}
	s := &Session{cli: c, done: make(chan struct{})}
	sent := time.Now()
	if o.lease == clientv3.NoLease {
		g, err := c.Grant(ctx, o.ttl)
		if err != nil {
			return nil, fmt.Errorf("session: grant lease: %w", err)
		}
		s.lease, s.ttl = g.ID, time.Duration(g.TTL)*time.Second
	} else {
		ka, err := c.KeepAliveOnce(ctx, o.lease)
		if err != nil {
			return nil, fmt.Errorf("session: renew lease %x: %w", int64(o.lease), err)
		}
		s.lease, s.ttl = o.lease, time.Duration(ka.TTL)*time.Second
	}
	s.aliveUntil = sent.Add(s.ttl)
	kctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Go(func() { s.keepAlive(kctx) })
	return s, nil
}

// Client returns the session's client.
func (s *Session) Client() *Client { return s.cli }

// Lease returns the session's lease.
func (s *Session) Lease() clientv3.LeaseID { return s.lease }

// TTL returns the lease's TTL.
func (s *Session) TTL() time.Duration { return s.ttl }

// Done is closed when the session ends: lost, closed or orphaned.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns why the session ended (nil while it lasts); ErrSessionLost if
// its lease was lost.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// AliveUntil returns the time until which the lease is known to live: the
// send time of its last successful renewal plus the TTL.
func (s *Session) AliveUntil() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.aliveUntil
}

// keepAlive renews the lease every third of its TTL and retries failures
// every twentieth, until the lease is gone or its deadline passes.
func (s *Session) keepAlive(ctx context.Context) {
	defer close(s.done)
	renewEvery := max(s.ttl/3, 100*time.Millisecond)
	retryEvery := max(s.ttl/20, 50*time.Millisecond)
	next := time.Now().Add(renewEvery)
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			s.end(ErrSessionClosed)
			return
		case <-timer.C:
		}
		deadline := s.AliveUntil()
		if !time.Now().Before(deadline) {
			s.end(ErrSessionLost)
			return
		}
		sent := time.Now()
		rctx, cancel := context.WithDeadline(ctx, deadline)
		ka, err := s.cli.KeepAliveOnce(rctx, s.lease)
		cancel()
		switch {
		case err == nil && ka.TTL > 0:
			s.mu.Lock()
			s.aliveUntil = sent.Add(time.Duration(ka.TTL) * time.Second)
			s.mu.Unlock()
			timer.Reset(time.Until(sent.Add(renewEvery)))
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && ka.TTL <= 0):
			s.end(ErrSessionLost)
			return
		default:
			timer.Reset(retryEvery)
		}
	}
}

func (s *Session) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// Orphan stops renewing the lease without revoking it: what was made on the
// session lasts until the lease expires.
func (s *Session) Orphan() {
	s.cancel()
	s.wg.Wait()
}

// Close stops renewing the lease and revokes it, which releases at once
// everything held on the session.
func (s *Session) Close(ctx context.Context) error {
	s.Orphan()
	if _, err := s.cli.Revoke(ctx, s.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("session: revoke lease %x: %w", int64(s.lease), err)
	}
	return nil
}
