package client

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// RWMutex is a distributed readers-writer lock: many sessions may hold it
// for reading, or one for writing. Readers hold <name>/read/<lease>,
// writers <name>/write/<lease>, ordered by create revision: a reader waits
// for the writers queued before it, a writer for everyone queued before it,
// so writers are not starved and each waiter watches one key at a time.
// A session holds one side of a given RWMutex at a time.
type RWMutex struct {
	s    *Session
	name string

	mu    sync.Mutex
	key   string
	token int64
	h     *holding
}

// NewRWMutex returns the readers-writer lock called name.
func NewRWMutex(s *Session, name string) *RWMutex {
	return &RWMutex{s: s, name: name}
}

// RLock waits until the session holds the lock for reading.
func (rw *RWMutex) RLock(ctx context.Context) error {
	// Readers wait only for the writers queued before them.
	return rw.lock(ctx, rw.name+"/read/", rw.name+"/write/")
}

// Lock waits until the session holds the lock for writing.
func (rw *RWMutex) Lock(ctx context.Context) error {
	// Writers wait for every reader and writer queued before them.
	return rw.lock(ctx, rw.name+"/write/", rw.name+"/")
}

func (rw *RWMutex) lock(ctx context.Context, pfx, waitFor string) error {
	select {
	case <-rw.s.Done():
		return ErrSessionLost
	default:
	}
	cli := rw.s.cli.Client
	p, err := enqueue(ctx, cli, pfx, rw.s.lease, "")
	if err != nil {
		return err
	}
	hdr, err := waitDeletes(ctx, cli, waitFor, p.rev-1, p.key, p.rev)
	if err != nil {
		abandon(ctx, cli, p.key, p.rev)
		return lockError(err)
	}
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.h != nil {
		rw.h.stop()
	}
	rw.key, rw.token = p.key, p.rev
	rw.h = hold(rw.s, p.key, p.rev, hdr.Revision+1)
	return nil
}

// Unlock releases the lock, whichever side is held; ErrNotHeld if none.
func (rw *RWMutex) Unlock(ctx context.Context) error {
	rw.mu.Lock()
	key, token, h := rw.key, rw.token, rw.h
	rw.key, rw.token, rw.h = "", 0, nil
	rw.mu.Unlock()
	if h == nil {
		return ErrNotHeld
	}
	h.stop()
	resp, err := dequeue(ctx, rw.s.cli.Client, key, token)
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return ErrNotHeld
	}
	return nil
}

// Token returns the fencing token of the current hold (0 when none).
func (rw *RWMutex) Token() int64 {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return rw.token
}

// Lost returns a channel closed when the hold is released or lost.
func (rw *RWMutex) Lost() <-chan struct{} {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.h == nil {
		return closedChan()
	}
	return rw.h.lost
}

// IsOwner returns the comparison that holds exactly while this hold lasts.
func (rw *RWMutex) IsOwner() clientv3.Cmp {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return ownerCmp(rw.name+"/", rw.key, rw.token)
}
