package client

import (
	"context"
	"errors"
	"fmt"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Semaphore lets at most N sessions hold it at once. Holders and waiters
// are keys <name>/<lease> ordered by create revision; the first N hold it.
// Every participant must use the same N.
//
// Waiting avoids a herd: only the first waiter watches the holders (any
// release lets it in); every later waiter watches the waiter just before
// it, which touches its key when it gets in, so each release or entry wakes
// one waiter.
type Semaphore struct {
	s     *Session
	pfx   string
	limit int

	mu    sync.Mutex
	key   string
	token int64
	h     *holding
}

// ErrNoSlot is returned by TryAcquire when the semaphore is full.
var ErrNoSlot = errors.New("semaphore is full")

// NewSemaphore returns the semaphore called name with limit slots.
func NewSemaphore(s *Session, name string, limit int) *Semaphore {
	return &Semaphore{s: s, pfx: name + "/", limit: max(limit, 1)}
}

// Acquire waits until the session holds a slot, or ctx ends.
func (sm *Semaphore) Acquire(ctx context.Context) error { return sm.acquire(ctx, true) }

// TryAcquire takes a slot if one is free, else returns ErrNoSlot.
func (sm *Semaphore) TryAcquire(ctx context.Context) error { return sm.acquire(ctx, false) }

func (sm *Semaphore) acquire(ctx context.Context, wait bool) error {
	select {
	case <-sm.s.Done():
		return ErrSessionLost
	default:
	}
	cli := sm.s.cli.Client
	p, err := enqueue(ctx, cli, sm.pfx, sm.s.lease, "")
	if err != nil {
		return err
	}
	waited := false
	for {
		ahead, pred, rev, err := sm.position(ctx, p.rev)
		if err != nil {
			abandon(ctx, cli, p.key, p.rev)
			return err
		}
		if ahead < int64(sm.limit) {
			break
		}
		if !wait {
			if p.created {
				abandon(ctx, cli, p.key, p.rev)
			}
			return ErrNoSlot
		}
		waited = true
		if err := sm.waitMove(ctx, ahead, pred, rev, p); err != nil {
			abandon(ctx, cli, p.key, p.rev)
			return lockError(err)
		}
	}
	hdr, err := confirm(ctx, cli, p.key, p.rev)
	if err != nil {
		abandon(ctx, cli, p.key, p.rev)
		return lockError(err)
	}
	from := hdr.Revision + 1
	if waited {
		// Wake the waiter behind: it may now be first in line.
		resp, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(p.key), "=", p.rev)).
			Then(clientv3.OpPut(p.key, "", clientv3.WithLease(sm.s.lease))).
			Commit()
		if err != nil || !resp.Succeeded {
			abandon(ctx, cli, p.key, p.rev)
			if err == nil {
				err = errKeyLost
			}
			return lockError(err)
		}
		from = resp.Header.Revision + 1
	}
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if sm.h != nil {
		sm.h.stop()
	}
	sm.key, sm.token = p.key, p.rev
	sm.h = hold(sm.s, p.key, p.rev, from)
	return nil
}

// position reads, in one revision, how many keys were created before rev
// and the last of them.
func (sm *Semaphore) position(ctx context.Context, rev int64) (ahead int64, pred string, at int64, err error) {
	// One read, in create order, gives both the count and the newest.
	var resp *clientv3.GetResponse
	err = retry(ctx, func() error {
		var err error
		resp, err = sm.s.cli.Get(ctx, sm.pfx, clientv3.WithPrefix(), clientv3.WithMaxCreateRev(rev-1), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
		return err
	})
	if err != nil {
		return 0, "", 0, err
	}
	ahead = int64(len(resp.Kvs))
	if ahead > 0 {
		pred = string(resp.Kvs[ahead-1].Key)
	}
	return ahead, pred, resp.Header.Revision, nil
}

// waitMove waits for a change that may let p in: the first waiter waits
// for any deletion in the semaphore; the others for any change of their
// predecessor (deleted, or touched when it got in).
func (sm *Semaphore) waitMove(ctx context.Context, ahead int64, pred string, at int64, p place) error {
	cli := sm.s.cli.Client
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	var theirs clientv3.WatchChan
	if ahead == int64(sm.limit) {
		theirs = cli.Watch(wctx, sm.pfx, clientv3.WithPrefix(), clientv3.WithRev(at+1), clientv3.WithFilterPut())
	} else {
		theirs = cli.Watch(wctx, pred, clientv3.WithRev(at+1))
	}
	mine := cli.Watch(wctx, p.key, clientv3.WithRev(p.rev+1), clientv3.WithFilterPut())
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sm.s.Done():
			return ErrSessionLost
		case wr, ok := <-theirs:
			if !ok || wr.Err() != nil || wr.Canceled || len(wr.Events) > 0 {
				return nil // moved, or read again
			}
		case wr, ok := <-mine:
			if !ok || wr.Err() != nil || wr.Canceled {
				mine = nil
				continue
			}
			if len(wr.Events) > 0 {
				return errKeyLost
			}
		}
	}
}

// Release gives the slot back; ErrNotHeld if none was held.
func (sm *Semaphore) Release(ctx context.Context) error {
	sm.mu.Lock()
	key, token, h := sm.key, sm.token, sm.h
	sm.key, sm.token, sm.h = "", 0, nil
	sm.mu.Unlock()
	if h == nil {
		return ErrNotHeld
	}
	h.stop()
	resp, err := dequeue(ctx, sm.s.cli.Client, key, token)
	if err != nil {
		return fmt.Errorf("semaphore release: %w", err)
	}
	if !resp.Succeeded {
		return ErrNotHeld
	}
	return nil
}

// Token returns the create revision of the holder's key (0 when not held).
func (sm *Semaphore) Token() int64 {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.token
}

// Lost returns a channel closed when the slot is released or lost.
func (sm *Semaphore) Lost() <-chan struct{} {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if sm.h == nil {
		return closedChan()
	}
	return sm.h.lost
}
