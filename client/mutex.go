package client

import (
	"context"
	"errors"
	"fmt"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Errors of locks and elections.
var (
	// ErrLocked is returned by TryLock when another session holds the lock.
	ErrLocked = errors.New("lock is held by another session")
	// ErrNotHeld is returned when the caller does not hold the lock (or
	// lead the election) any more: it released it, or lost it.
	ErrNotHeld = errors.New("not held: released, or lost (lease ended or key deleted)")
)

// Mutex is a distributed lock held by a session. It uses the key layout of
// etcd's concurrency.Mutex, Synod's Lock service and etcdctl lock, and
// contends with them for the same lock names.
//
// Holding a lock guarantees nothing by itself once the holder can pause
// (garbage collection, a stopped VM): its lease may expire meanwhile and
// another session take the lock. Token returns the fencing token of the
// acquisition, which strictly increases with each acquisition; writes
// guarded by it (GuardedTxn, GuardedPut) succeed only while the lock is
// still held, and Lost is closed as soon as it is not.
//
// A Mutex is safe for concurrent use, but holds at most one acquisition;
// Mutexes of the same session and name share it.
type Mutex struct {
	s   *Session
	pfx string

	mu    sync.Mutex
	key   string
	token int64
	hdr   *pb.ResponseHeader
	h     *holding
}

// NewMutex returns the lock called name, held (once locked) by session s.
func NewMutex(s *Session, name string) *Mutex {
	return &Mutex{s: s, pfx: name + "/"}
}

// Lock waits until the session holds the lock, or ctx ends (the session's
// place in the queue is then given up). A waiter watches only the waiter
// before it, so a release wakes one waiter.
func (m *Mutex) Lock(ctx context.Context) error {
	return m.lock(ctx, true)
}

// TryLock takes the lock if it is free, else returns ErrLocked at once.
func (m *Mutex) TryLock(ctx context.Context) error {
	return m.lock(ctx, false)
}

func (m *Mutex) lock(ctx context.Context, wait bool) error {
	select {
	case <-m.s.Done():
		return ErrSessionLost
	default:
	}
	cli := m.s.cli.Client
	p, err := enqueue(ctx, cli, m.pfx, m.s.lease, "")
	if err != nil {
		return err
	}
	hdr := p.hdr
	if !p.owns() {
		if !wait {
			if p.created {
				abandon(ctx, cli, p.key, p.rev)
			}
			return ErrLocked
		}
		if hdr, err = waitDeletes(ctx, cli, m.pfx, p.rev-1, p.key, p.rev); err != nil {
			abandon(ctx, cli, p.key, p.rev)
			return lockError(err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.h != nil {
		m.h.stop()
	}
	m.key, m.token, m.hdr = p.key, p.rev, hdr
	m.h = hold(m.s, p.key, p.rev, hdr.Revision+1)
	return nil
}

func lockError(err error) error {
	if errors.Is(err, errKeyLost) {
		return fmt.Errorf("%w: the key was deleted while waiting", ErrSessionLost)
	}
	return err
}

// Unlock releases the lock. It returns ErrNotHeld if the lock was not held
// (any more) by this Mutex.
func (m *Mutex) Unlock(ctx context.Context) error {
	m.mu.Lock()
	key, token, h := m.key, m.token, m.h
	m.key, m.token, m.h = "", 0, nil
	m.mu.Unlock()
	if h == nil {
		return ErrNotHeld
	}
	h.stop()
	resp, err := dequeue(ctx, m.s.cli.Client, key, token)
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return ErrNotHeld
	}
	return nil
}

// Key returns the lock's ownership key while held ("" otherwise).
func (m *Mutex) Key() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.key
}

// Token returns the fencing token of the current acquisition, the create
// revision of the ownership key (0 when not held). Tokens of a lock strictly
// increase with each acquisition.
func (m *Mutex) Token() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.token
}

// Header returns the header of the read that found the lock acquired.
func (m *Mutex) Header() *pb.ResponseHeader {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hdr
}

// Lost returns a channel closed when the current acquisition ends: the
// lock is released, or lost (its key deleted, the session lost). It is
// closed already when the lock is not held.
func (m *Mutex) Lost() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.h == nil {
		return closedChan()
	}
	return m.h.lost
}

// IsOwner returns the comparison that holds exactly while this acquisition
// holds the lock: CREATE(key) = token. It never holds when the lock is not
// held.
func (m *Mutex) IsOwner() clientv3.Cmp {
	m.mu.Lock()
	defer m.mu.Unlock()
	return ownerCmp(m.pfx, m.key, m.token)
}

func ownerCmp(pfx, key string, token int64) clientv3.Cmp {
	if key == "" {
		// A create revision is never negative.
		return clientv3.Compare(clientv3.CreateRevision(pfx), "=", -1)
	}
	return clientv3.Compare(clientv3.CreateRevision(key), "=", token)
}

// GuardedTxn returns a transaction whose If holds IsOwner and cmps: its
// Then branch runs only while the lock is held. Add the branches and
// Commit; a response with Succeeded false means the lock was lost (or a cmp
// failed).
func (m *Mutex) GuardedTxn(ctx context.Context, cmps ...clientv3.Cmp) clientv3.Txn {
	return m.s.cli.Txn(ctx).If(append([]clientv3.Cmp{m.IsOwner()}, cmps...)...)
}

// GuardedPut puts key only while the lock is held, and returns ErrNotHeld
// if it was not.
func (m *Mutex) GuardedPut(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.TxnResponse, error) {
	resp, err := m.GuardedTxn(ctx).Then(clientv3.OpPut(key, val, opts...)).Commit()
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		return resp, ErrNotHeld
	}
	return resp, nil
}
