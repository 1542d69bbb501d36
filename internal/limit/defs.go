package limit

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/limit/algo"
	"github.com/synod-io/synod/internal/limit/limitpb"
	"github.com/synod-io/synod/internal/limit/limitsm"
	"github.com/synod-io/synod/internal/watch"
)

// Def is a limit's definition as a node knows it.
type Def struct {
	// Limit is the definition, with its revision.
	Limit *synodpb.Limit
	// StateRevision is its keys' state generation.
	StateRevision int64
	// Params are the algorithm's (rate limits).
	Params algo.Params
	// Allowance is how many tokens of a key the owner may allow beyond
	// its last committed checkpoint (see "Rate limiters" in
	// docs/design.md).
	Allowance int64
}

// Concurrency reports whether the limit hands out permits.
func (d *Def) Concurrency() bool { return d.Limit.Algorithm == synodpb.Limit_CONCURRENCY }

// Timeout is how long a decision may wait for the owner.
func (d *Def) Timeout() time.Duration { return time.Duration(d.Limit.TimeoutMs) * time.Millisecond }

// allowanceTime is the part of the allowance counted in time: what a key
// may take at its full rate in that time.
const allowanceTime = 50 * time.Millisecond

func newDef(stored *limitpb.StoredLimit, rev int64) (*Def, error) {
	l := proto.Clone(stored.Limit).(*synodpb.Limit)
	l.Revision = rev
	d := &Def{Limit: l, StateRevision: stored.StateRevision}
	if d.Concurrency() {
		return d, nil
	}
	p, err := limitsm.Params(l)
	if err != nil {
		return nil, err
	}
	d.Params = p
	c := p.Capacity()
	d.Allowance = max(1, c/10, int64(p.RatePerSecond()*allowanceTime.Seconds()))
	return d, nil
}

// defs follows the limits' definitions through a watch of the node's hub.
type defs struct {
	b   Backend
	cur atomic.Pointer[map[string]*Def]
	// mu serializes updates (the watcher, a node's own sets) and guards
	// deleted.
	mu sync.Mutex
	// deleted holds the revision at which each limit was deleted, so that
	// an older definition arriving late does not bring it back.
	deleted map[string]int64
	// events receives the keys of permits deleted (their waiters retry).
	permitsFreed func(name string)
}

func newDefs(b Backend) *defs {
	d := &defs{b: b, deleted: map[string]int64{}}
	m := map[string]*Def{}
	d.cur.Store(&m)
	return d
}

// get returns the definition of name, or nil.
func (d *defs) get(name string) *Def { return (*d.cur.Load())[name] }

// all returns every definition.
func (d *defs) all() map[string]*Def { return *d.cur.Load() }

// update applies a definition change (def nil: deleted) unless the node
// already knows a newer one.
func (d *defs) update(name string, def *Def, rev int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := *d.cur.Load()
	if o := old[name]; o != nil && o.Limit.Revision >= rev || d.deleted[name] >= rev {
		return
	}
	if def == nil {
		d.deleted[name] = rev
	} else {
		delete(d.deleted, name)
	}
	m := make(map[string]*Def, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	if def == nil {
		delete(m, name)
	} else {
		m[name] = def
	}
	d.cur.Store(&m)
}

// replace installs a whole new set (after a full read).
func (d *defs) replace(m map[string]*Def) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cur.Store(&m)
	clear(d.deleted)
}

// load reads every definition from the node's applied state and returns
// the revision read at.
func (d *defs) load(ctx context.Context) (int64, error) {
	resp, err := d.b.Range(ctx, &etcdpb.RangeRequest{Key: keys.LimitPrefix, RangeEnd: keys.PrefixEnd(keys.LimitPrefix), Serializable: true})
	if err != nil {
		return 0, err
	}
	m := map[string]*Def{}
	for _, kv := range resp.Kvs {
		name, ok := limitsm.NameOfDefKey(kv.Key)
		if !ok {
			continue
		}
		if def, err := decodeDef(kv); err == nil {
			m[name] = def
		}
	}
	d.replace(m)
	return resp.Header.GetRevision(), nil
}

func decodeDef(kv *mvccpb.KeyValue) (*Def, error) {
	stored := &limitpb.StoredLimit{}
	if err := proto.Unmarshal(kv.Value, stored); err != nil || stored.Limit == nil {
		return nil, fmt.Errorf("limit definition %q: %v", kv.Key, err)
	}
	return newDef(stored, kv.ModRevision)
}

// lookup returns the definition of name; if this node knows none, it
// catches up with the leader first (a limit set through another node a
// moment ago), then reads it.
func (d *defs) lookup(ctx context.Context, name string) (*Def, error) {
	if def := d.get(name); def != nil {
		return def, nil
	}
	if err := limitsm.ValidName(name); err != nil {
		return nil, invalid(err)
	}
	if err := d.b.Linearize(ctx); err != nil {
		return nil, err
	}
	resp, err := d.b.Range(ctx, &etcdpb.RangeRequest{Key: limitsm.DefKey(name), Serializable: true})
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, limitsm.ErrNotFound(name)
	}
	def, err := decodeDef(resp.Kvs[0])
	if err != nil {
		return nil, err
	}
	d.update(name, def, def.Limit.Revision)
	return def, nil
}

// run follows the definitions until ctx ends: a full read, then a watch
// from the next revision; a watch cut off by compaction starts over.
func (d *defs) run(ctx context.Context) {
	for ctx.Err() == nil {
		rev, err := d.load(ctx)
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		d.follow(ctx, rev+1)
	}
}

type sink chan struct{}

func (s sink) Notify(*watch.Watcher) {
	select {
	case s <- struct{}{}:
	default:
	}
}

func (d *defs) follow(ctx context.Context, from int64) {
	hub := d.b.Hub()
	ready := make(sink, 1)
	w := hub.Watch(watch.Options{Key: keys.LimitPrefix, RangeEnd: keys.PrefixEnd(keys.LimitPrefix), StartRevision: from}, ready)
	defer hub.Cancel(w)
	for {
		resp, ok := hub.Take(w)
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-ready:
			}
			continue
		}
		if resp.CompactRevision != 0 {
			return // read everything again
		}
		for _, ev := range resp.Events {
			d.event(ev)
		}
	}
}

var permitInfix = []byte("/permit/")

func (d *defs) event(ev *mvccpb.Event) {
	k := ev.Kv.Key
	if name, ok := limitsm.NameOfDefKey(k); ok {
		if ev.Type == mvccpb.DELETE {
			d.update(name, nil, ev.Kv.ModRevision)
			return
		}
		if def, err := decodeDef(ev.Kv); err == nil {
			d.update(name, def, ev.Kv.ModRevision)
		}
		return
	}
	if ev.Type == mvccpb.DELETE && d.permitsFreed != nil {
		rest := k[len(keys.LimitPrefix):]
		if i := bytes.Index(rest, permitInfix); i > 0 {
			d.permitsFreed(string(rest[:i]))
		}
	}
}
