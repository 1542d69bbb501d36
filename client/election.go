package client

import (
	"context"
	"errors"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrNoLeader is returned by Leader when the election has no leader.
var ErrNoLeader = errors.New("election has no leader")

// Leader is an election's leader as observed at a revision.
type Leader struct {
	// Key is the leader's key, Value its latest proclamation.
	Key   string
	Value []byte
	// Token is the create revision of Key: the fencing token of this
	// leadership. Tokens strictly increase with each new leader.
	Token int64
	Lease clientv3.LeaseID
	// Revision is a revision at which Key led with Value.
	Revision int64
}

func leaderOf(kv *mvccpb.KeyValue, rev int64) Leader {
	return Leader{Key: string(kv.Key), Value: kv.Value, Token: kv.CreateRevision, Lease: clientv3.LeaseID(kv.Lease), Revision: rev}
}

// Election elects one leader among the sessions that campaign. It uses the
// key layout of etcd's concurrency.Election, Synod's Election service and
// etcdctl elect, and shares elections with them.
type Election struct {
	s    *Session
	name string
	pfx  string

	mu    sync.Mutex
	key   string
	token int64
	hdr   *pb.ResponseHeader
	h     *holding
}

// NewElection returns the election called name, campaigned in by session s.
func NewElection(s *Session, name string) *Election {
	return &Election{s: s, name: name, pfx: name + "/"}
}

// Campaign waits until the session leads the election, or ctx ends (the
// candidacy is then withdrawn), and proclaims value. A candidate watches
// only the candidate before it.
func (e *Election) Campaign(ctx context.Context, value string) error {
	select {
	case <-e.s.Done():
		return ErrSessionLost
	default:
	}
	cli := e.s.cli.Client
	p, err := enqueue(ctx, cli, e.pfx, e.s.lease, value)
	if err != nil {
		return err
	}
	if !p.created && string(p.value) != value {
		if _, err := e.proclaim(ctx, p.key, p.rev, value); err != nil {
			abandon(ctx, cli, p.key, p.rev)
			return err
		}
	}
	var hdr *pb.ResponseHeader
	if p.owns() {
		hdr, err = confirm(ctx, cli, p.key, p.rev)
	} else {
		hdr, err = waitDeletes(ctx, cli, e.pfx, p.rev-1, p.key, p.rev)
	}
	if err != nil {
		abandon(ctx, cli, p.key, p.rev)
		return lockError(err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.h != nil {
		e.h.stop()
	}
	e.key, e.token, e.hdr = p.key, p.rev, hdr
	e.h = hold(e.s, p.key, p.rev, hdr.Revision+1)
	return nil
}

func (e *Election) proclaim(ctx context.Context, key string, token int64, value string) (*clientv3.TxnResponse, error) {
	var resp *clientv3.TxnResponse
	err := retry(ctx, func() error {
		var err error
		resp, err = e.s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", token)).
			Then(clientv3.OpPut(key, value, clientv3.WithLease(e.s.lease))).
			Commit()
		return err
	})
	if err != nil {
		return nil, sessionError(err)
	}
	if !resp.Succeeded {
		return resp, ErrNotHeld
	}
	return resp, nil
}

// Proclaim replaces the leader's value; ErrNotHeld if the session does not
// lead any more.
func (e *Election) Proclaim(ctx context.Context, value string) error {
	e.mu.Lock()
	key, token := e.key, e.token
	e.mu.Unlock()
	if key == "" {
		return ErrNotHeld
	}
	resp, err := e.proclaim(ctx, key, token, value)
	if err != nil {
		return err
	}
	e.mu.Lock()
	if e.key == key {
		e.hdr = resp.Header
	}
	e.mu.Unlock()
	return nil
}

// Resign gives up leadership (a no-op if not leading); the next candidate
// is woken.
func (e *Election) Resign(ctx context.Context) error {
	e.mu.Lock()
	key, token, h := e.key, e.token, e.h
	e.key, e.token, e.h = "", 0, nil
	e.mu.Unlock()
	if h == nil {
		return nil
	}
	h.stop()
	_, err := dequeue(ctx, e.s.cli.Client, key, token)
	return err
}

// Key returns the leader key while leading ("" otherwise).
func (e *Election) Key() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.key
}

// Token returns the fencing token of the leadership (0 when not leading).
func (e *Election) Token() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.token
}

// Header returns the header of the last write or read of the leadership.
func (e *Election) Header() *pb.ResponseHeader {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.hdr
}

// Lost returns a channel closed when the leadership ends: resigned, or
// lost. It is closed already when not leading.
func (e *Election) Lost() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.h == nil {
		return closedChan()
	}
	return e.h.lost
}

// IsLeader returns the comparison that holds exactly while this leadership
// lasts; guard writes with it.
func (e *Election) IsLeader() clientv3.Cmp {
	e.mu.Lock()
	defer e.mu.Unlock()
	return ownerCmp(e.pfx, e.key, e.token)
}

// Leader returns the current leader of the election.
func (e *Election) Leader(ctx context.Context) (Leader, error) {
	return e.s.cli.ElectionLeader(ctx, e.name)
}

// Observe streams the election's leaders; see Client.ObserveElection.
func (e *Election) Observe(ctx context.Context) <-chan Leader {
	return e.s.cli.ObserveElection(ctx, e.name)
}

// ElectionLeader returns the current leader of the election called name.
func (c *Client) ElectionLeader(ctx context.Context, name string) (Leader, error) {
	resp, err := c.Get(ctx, name+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return Leader{}, err
	}
	if len(resp.Kvs) == 0 {
		return Leader{}, ErrNoLeader
	}
	return leaderOf(resp.Kvs[0], resp.Header.Revision), nil
}

// ObserveElection streams the leaders of the election called name: the
// current one (once there is one), then every proclamation and every new
// leader, in revision order, each with a revision at which it led. Leaders
// that come and go between two reads may be skipped. The channel is closed
// when ctx ends; network failures are retried.
func (c *Client) ObserveElection(ctx context.Context, name string) <-chan Leader {
	ch := make(chan Leader)
	go func() { // owned: ends with ctx
		defer close(ch)
		observe(ctx, c.Client, name+"/", ch)
	}()
	return ch
}

func observe(ctx context.Context, cli *clientv3.Client, pfx string, ch chan<- Leader) {
	send := func(l Leader) bool {
		select {
		case ch <- l:
			return true
		case <-ctx.Done():
			return false
		}
	}
	pause := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(retryPause):
			return true
		}
	}
	var last Leader // what was sent last: not repeated after a failure
	for ctx.Err() == nil {
		resp, err := cli.Get(ctx, pfx, clientv3.WithFirstCreate()...)
		if err != nil {
			if !pause() {
				return
			}
			continue
		}
		var l Leader
		if len(resp.Kvs) > 0 {
			l = leaderOf(resp.Kvs[0], resp.Header.Revision)
		} else {
			kv := firstPut(ctx, cli, pfx, resp.Header.Revision+1)
			if kv == nil {
				continue // read again
			}
			l = leaderOf(kv, kv.ModRevision)
		}
		if l.Key != last.Key || l.Token != last.Token || string(l.Value) != string(last.Value) {
			if !send(l) {
				return
			}
			last = l
		}
		if !followLeader(ctx, cli, l, func(next Leader) bool {
			last = next
			return send(next)
		}) && !pause() {
			return
		}
	}
}

// firstPut waits for the first key written under pfx from revision from:
// in an empty election, the first leader. nil if the watch failed.
func firstPut(ctx context.Context, cli *clientv3.Client, pfx string, from int64) *mvccpb.KeyValue {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range cli.Watch(wctx, pfx, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithFilterDelete()) {
		if wr.Err() != nil || wr.Canceled {
			return nil
		}
		if len(wr.Events) > 0 {
			return wr.Events[0].Kv
		}
	}
	return nil
}

// followLeader sends l's proclamations until its key is deleted (true) or
// the watch fails (false).
func followLeader(ctx context.Context, cli *clientv3.Client, l Leader, send func(Leader) bool) bool {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range cli.Watch(wctx, l.Key, clientv3.WithRev(l.Revision+1)) {
		if wr.Err() != nil || wr.Canceled {
			return false
		}
		for _, ev := range wr.Events {
			if ev.Type == mvccpb.DELETE {
				return true
			}
			if !send(leaderOf(ev.Kv, ev.Kv.ModRevision)) {
				return true
			}
		}
	}
	return false
}
