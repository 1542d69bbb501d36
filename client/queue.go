package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Locks, elections and semaphores are queues of keys under a prefix, with
// etcd's layout: the participant on lease L holds <name>/<L in hex> on that
// lease, and participants are ordered by the create revision of their keys.
// Synod's Lock and Election services, etcd's concurrency package and etcdctl
// use the same keys, so they all share the same locks and elections.

// cleanupTimeout bounds the removal of the key of an abandoned wait.
const cleanupTimeout = 5 * time.Second

// retryPause is the pause before retrying a request that failed for a
// transient reason (no leader, a node going away).
const retryPause = 100 * time.Millisecond

// transient reports whether err may go away by itself: the request can be
// tried again (the queue operations are idempotent).
func transient(err error) bool {
	if err == nil {
		return false
	}
	switch rpctypes.Error(err) {
	case rpctypes.ErrNoLeader, rpctypes.ErrLeaderChanged, rpctypes.ErrNotLeader, rpctypes.ErrStopped,
		rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost,
		rpctypes.ErrTooManyRequests:
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return true
	}
	return false
}

// retry runs op until it succeeds, fails for good, or ctx ends.
func retry(ctx context.Context, op func() error) error {
	for {
		err := op()
		if !transient(err) || ctx.Err() != nil {
			if ctx.Err() != nil && err != nil {
				return ctx.Err()
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(retryPause):
		}
	}
}

// queueKey is the key of the participant on lease in queue pfx (which ends
// with '/').
func queueKey(pfx string, lease clientv3.LeaseID) string {
	return fmt.Sprintf("%s%x", pfx, int64(lease))
}

// place is a participant's place in a queue.
type place struct {
	key     string
	rev     int64 // the key's create revision: the fencing token
	created bool  // false: the key existed (the same lease enqueued before)
	value   []byte
	hdr     *pb.ResponseHeader
	// first is the queue's first key when p was enqueued.
	first *mvccpb.KeyValue
}

// enqueue puts the participant's key, with value, at the end of queue pfx
// or finds it there, and reads the queue's first key in the same revision.
func enqueue(ctx context.Context, cli *clientv3.Client, pfx string, lease clientv3.LeaseID, value string) (place, error) {
	key := queueKey(pfx, lease)
	var resp *clientv3.TxnResponse
	err := retry(ctx, func() error {
		var err error
		resp, err = cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, value, clientv3.WithLease(lease)), clientv3.OpGet(pfx, clientv3.WithFirstCreate()...)).
			Else(clientv3.OpGet(key), clientv3.OpGet(pfx, clientv3.WithFirstCreate()...)).
			Commit()
		return err
	})
	if err != nil {
		return place{}, sessionError(err)
	}
	p := place{key: key, created: resp.Succeeded, hdr: resp.Header}
	if resp.Succeeded {
		p.rev = resp.Header.Revision
	} else {
		kvs := resp.Responses[0].GetResponseRange().GetKvs()
		if len(kvs) == 0 {
			return place{}, fmt.Errorf("queue key %s vanished inside a transaction", key)
		}
		p.rev, p.value = kvs[0].CreateRevision, kvs[0].Value
	}
	if first := resp.Responses[1].GetResponseRange().GetKvs(); len(first) > 0 {
		p.first = first[0]
	}
	return p, nil
}

// owns reports whether p was first in its queue when enqueued.
func (p place) owns() bool { return p.first == nil || p.first.CreateRevision == p.rev }

// sessionError turns "lease not found" into ErrSessionLost.
func sessionError(err error) error {
	if errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("%w (%v)", ErrSessionLost, err)
	}
	return err
}

// errKeyLost is returned when a participant's key disappeared while it
// waited.
var errKeyLost = errors.New("key deleted while waiting")

// waitDeletes waits until the keys with prefix pfx include none created at
// or below maxRev, watching one key at a time: the last one created, so
// that a release wakes one waiter only. It gives up with errKeyLost if own
// (created at ownRev) is deleted meanwhile. Each check reads the older keys
// and own in one read-only txn (a linearizable read, no Raft entry), so the
// header it returns is of a read that saw own still held, and first.
func waitDeletes(ctx context.Context, cli *clientv3.Client, pfx string, maxRev int64, own string, ownRev int64) (*pb.ResponseHeader, error) {
	for {
		var resp *clientv3.TxnResponse
		err := retry(ctx, func() error {
			var err error
			resp, err = cli.Txn(ctx).Then(
				clientv3.OpGet(pfx, append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(maxRev), clientv3.WithKeysOnly())...),
				clientv3.OpGet(own, clientv3.WithKeysOnly()),
			).Commit()
			return err
		})
		if err != nil {
			return nil, err
		}
		mine := resp.Responses[1].GetResponseRange().GetKvs()
		if len(mine) == 0 || mine[0].CreateRevision != ownRev {
			return nil, errKeyLost
		}
		older := resp.Responses[0].GetResponseRange().GetKvs()
		if len(older) == 0 {
			return resp.Header, nil
		}
		if err := waitDelete(ctx, cli, string(older[0].Key), resp.Header.Revision+1, own, ownRev); err != nil {
			return nil, err
		}
	}
}

// waitDelete waits until key is deleted at revision from or later, or its
// watch fails (the caller reads again); or until own, created at ownRev, is
// deleted (errKeyLost).
func waitDelete(ctx context.Context, cli *clientv3.Client, key string, from int64, own string, ownRev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	theirs := cli.Watch(wctx, key, clientv3.WithRev(from), clientv3.WithFilterPut())
	var mine clientv3.WatchChan
	if own != "" {
		mine = cli.Watch(wctx, own, clientv3.WithRev(ownRev+1), clientv3.WithFilterPut())
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case wr, ok := <-theirs:
			if !ok || wr.Err() != nil || wr.Canceled || len(wr.Events) > 0 {
				return nil // deleted, or read again
			}
		case wr, ok := <-mine:
			if !ok || wr.Err() != nil || wr.Canceled {
				mine = nil // no proof either way; the final read decides
				continue
			}
			if len(wr.Events) > 0 {
				return errKeyLost
			}
		}
	}
}

// confirm reads p's key: it must still exist as created at p.rev.
func confirm(ctx context.Context, cli *clientv3.Client, key string, rev int64) (*pb.ResponseHeader, error) {
	var resp *clientv3.GetResponse
	err := retry(ctx, func() error {
		var err error
		resp, err = cli.Get(ctx, key)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != rev {
		return nil, errKeyLost
	}
	return resp.Header, nil
}

// dequeue deletes key if it is still the one created at rev.
func dequeue(ctx context.Context, cli *clientv3.Client, key string, rev int64) (*clientv3.TxnResponse, error) {
	var resp *clientv3.TxnResponse
	err := retry(ctx, func() error {
		var err error
		resp, err = cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", rev)).
			Then(clientv3.OpDelete(key)).
			Commit()
		return err
	})
	return resp, err
}

// abandon removes the key of a failed wait, even when ctx is done.
func abandon(ctx context.Context, cli *clientv3.Client, key string, rev int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	_, _ = dequeue(ctx, cli, key, rev) // at worst the key stays until its lease ends
}

// holding watches a held key and closes lost when the hold ends: the key
// is deleted or recreated, or the session ends. stop ends the watch.
type holding struct {
	lost   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

func closedChan() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}

// hold starts watching key (created at rev, read at from-1) of session s.
func hold(s *Session, key string, rev, from int64) *holding {
	ctx, cancel := context.WithCancel(context.Background())
	h := &holding{lost: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	go func() { // owned: ends when stop cancels ctx, or the hold is lost
		defer close(h.done)
		defer close(h.lost)
		watchHold(ctx, s, key, rev, from)
	}()
	return h
}

// watchHold returns when the hold on key ends or ctx ends.
func watchHold(ctx context.Context, s *Session, key string, rev, from int64) {
	cli := s.cli.Client
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := cli.Watch(wctx, key, clientv3.WithRev(from))
		for open := true; open; {
			select {
			case <-s.Done():
				cancel()
				return
			case wr, ok := <-wch:
				if !ok || wr.Err() != nil || wr.Canceled {
					open = false
					break
				}
				for _, ev := range wr.Events {
					if ev.Type == mvccpb.DELETE || ev.Kv.CreateRevision != rev {
						cancel()
						return
					}
				}
			}
		}
		cancel()
		// The watch broke (a node went away, compaction): read the key.
		select {
		case <-ctx.Done():
			return
		case <-s.Done():
			return
		case <-time.After(retryPause):
		}
		resp, err := cli.Get(ctx, key)
		if err != nil {
			continue
		}
		if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != rev {
			return
		}
		from = resp.Header.Revision + 1
	}
}

// stop ends the watch and waits for its goroutine.
func (h *holding) stop() {
	h.cancel()
	<-h.done
}
