package limit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/limit/algo"
	"github.com/synod-io/synod/internal/limit/limitpb"
	"github.com/synod-io/synod/internal/limit/limitsm"
)

// errNotOwner means this node does not own the limits' keys (it does not
// lead their range, or lost the lead during the call): the caller asks the
// owner it knows next.
var errNotOwner = status.Error(codes.Unavailable, "synod: not the owner of the limit's keys")

// owner holds the state of the keys this node owns while it leads their
// range, in memory, and decides for them. Each key's state is
// checkpointed through Raft, and the requests a key allowed are answered
// only while what it allowed beyond its last committed checkpoint is
// within its allowance (nothing for a key without a checkpoint yet): a new
// owner charges every key with a checkpoint that allowance, so a crash or
// partition of the owner admits nothing beyond the limit.
type owner struct {
	svc *Service
	// promoteMu serializes promotions.
	promoteMu sync.Mutex
	// kick wakes the flusher for an urgent checkpoint.
	kick chan struct{}

	mu struct {
		sync.Mutex
		// term is the leadership term this node owns the keys in (0: none).
		term uint64
		// since is when it took them over (Unix ns): every key is charged
		// its allowance at that time.
		since int64
		// sinceTime is since as a time, for stats.
		sinceTime time.Time
		limits    map[string]*ownedLimit
		// round is the next checkpoint round: answers waiting for a
		// checkpoint wait for it.
		round *round
		// checkpoints counts the checkpoint proposals of this term.
		checkpoints uint64
		// nodes holds when each node holding shares was last heard from
		// (Unix ns): the shares of a node silent for shares.forget count as
		// used.
		nodes map[uint64]int64
		// collecting holds the keys whose stored state a checkpoint in
		// flight deletes: a load meanwhile must not count on it.
		collecting map[string]bool
		// lastGC is when the stored states were last scanned for idle ones.
		lastGC time.Time
	}
}

// round is one checkpoint proposal; done is closed when it ended.
type round struct{ done chan struct{} }

func newRound() *round { return &round{done: make(chan struct{})} }

// ownedLimit is the owner's state of one limit's keys.
type ownedLimit struct {
	def  *Def
	keys map[string]*keyState
	// Counts of decisions since the owner took over.
	allowed, refused, wouldRefuse uint64
}

// keyState is the owner's state of one key.
type keyState struct {
	st algo.State
	// admitted counts the tokens allowed (and charged) by this owner;
	// committed what the last committed checkpoint covers; snapped what
	// the last proposed one did.
	admitted, committed, snapped int64
	// dirty is set when the state changed since the last checkpoint
	// proposed (a refund changes it without admitting).
	dirty bool
	// stored is set when a committed checkpoint of the key exists: only
	// then may the owner answer admissions before the next one commits.
	stored bool
	// shares are the local shares handed to nodes (LOCAL mode).
	shares map[uint64]*shareOut
}

// shareOut is what a node holds of a key's capacity.
type shareOut struct {
	out int64
}

func newOwner(svc *Service) *owner {
	o := &owner{svc: svc, kick: make(chan struct{}, 1)}
	o.mu.limits = map[string]*ownedLimit{}
	o.mu.nodes = map[uint64]int64{}
	o.mu.collecting = map[string]bool{}
	o.mu.round = newRound()
	return o
}

// ensure returns the term in which this node owns the keys, taking them
// over first if it has just become the leader: it waits until everything
// committed before is applied here (so every checkpoint of the previous
// owner is), then forgets what it held in an earlier term.
func (o *owner) ensure(ctx context.Context) (uint64, error) {
	ls := o.svc.b.Leadership()
	if !ls.Leader {
		return 0, errNotOwner
	}
	o.mu.Lock()
	term := o.mu.term
	o.mu.Unlock()
	if term == ls.Term {
		return term, nil
	}
	o.promoteMu.Lock()
	defer o.promoteMu.Unlock()
	o.mu.Lock()
	term = o.mu.term
	o.mu.Unlock()
	if term == ls.Term {
		return term, nil
	}
	if err := o.svc.b.Linearize(ctx); err != nil {
		return 0, err
	}
	if now := o.svc.b.Leadership(); !now.Leader || now.Term != ls.Term {
		return 0, errNotOwner
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.resetLocked(ls.Term)
	o.svc.metrics.ownerMoves.Inc()
	o.svc.logger.Info("limits owner", "term", ls.Term)
	return ls.Term, nil
}

// demote forgets the keys when this node no longer leads.
func (o *owner) demote() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.mu.term != 0 {
		o.resetLocked(0)
		o.svc.logger.Info("limits owner demoted")
	}
}

func (o *owner) resetLocked(term uint64) {
	o.mu.term = term
	o.mu.sinceTime = time.Now()
	o.mu.since = o.mu.sinceTime.UnixNano()
	o.mu.limits = map[string]*ownedLimit{}
	o.mu.nodes = map[uint64]int64{}
	o.mu.collecting = map[string]bool{}
	o.mu.lastGC = o.mu.sinceTime
	o.mu.checkpoints = 0
	close(o.mu.round.done) // waiters find the term changed
	o.mu.round = newRound()
}

// limitLocked returns the owner's state of a limit, reset if its state
// generation changed.
func (o *owner) limitLocked(def *Def) *ownedLimit {
	ol := o.mu.limits[def.Limit.Name]
	if ol == nil || ol.def.StateRevision != def.StateRevision {
		ol = &ownedLimit{def: def, keys: map[string]*keyState{}}
		o.mu.limits[def.Limit.Name] = ol
	}
	if def.Limit.Revision > ol.def.Limit.Revision {
		ol.def = def
	}
	return ol
}

// keyLocked returns the owner's state of a key, loading its checkpoint
// and charging it the allowance the previous owner may have used.
func (o *owner) keyLocked(ol *ownedLimit, key string, now int64) (*keyState, error) {
	if ks := ol.keys[key]; ks != nil {
		return ks, nil
	}
	def := ol.def
	ks := &keyState{}
	stored, err := o.loadLocked(def, key)
	if err != nil {
		return nil, err
	}
	if stored != nil {
		ks.st, ks.stored = fromPB(stored.State), true
		// The previous owner may have answered up to an allowance beyond
		// this checkpoint. What the charge leaves must be checkpointed
		// before this owner answers for the key: a crash now must not
		// forget it.
		charged := algo.Force(&def.Params, ks.st, o.mu.since, def.Allowance)
		if !algo.Full(&def.Params, charged, now) {
			ks.st = charged
			ks.admitted = def.Allowance
			ks.dirty = true
		}
	}
	ks.st = algo.Normalize(&def.Params, ks.st, now)
	ol.keys[key] = ks
	return ks, nil
}

// loadLocked reads a key's checkpoint, or nil.
func (o *owner) loadLocked(def *Def, key string) (*limitpb.StoredState, error) {
	uk := limitsm.StateUserKey(def.Limit.Name, []byte(key))
	if o.mu.collecting[string(uk)] {
		return nil, nil // being deleted: as good as gone
	}
	v, closer, err := o.svc.b.DB().Get(keys.ServiceStateKey(uk))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state of limit %s key %q: %w", def.Limit.Name, key, err)
	}
	defer closer.Close()
	stored := &limitpb.StoredState{}
	if err := proto.Unmarshal(v, stored); err != nil || stored.Revision != def.StateRevision || stored.State == nil {
		return nil, nil
	}
	return stored, nil
}

// allowance is what a key may have answered beyond its last committed
// checkpoint: nothing before its first one.
func allowance(def *Def, ks *keyState) int64 {
	if !ks.stored {
		return 0
	}
	return def.Allowance
}

// pending is an answer that waits until the checkpoints cover what it
// allowed, within each key's allowance.
type pending struct {
	term  uint64
	keys  []*keyState
	marks []int64
	allow []int64
}

// group is the items of a request for the same limit and key.
type group struct {
	def           *Def
	key           string
	cost          int64
	items         []int
	d             algo.Decision
	shadowRefused bool
}

// take decides a request at now, as the owner in term. The decision is
// made and the state changed at once; the answer waits for pending, if
// any, before it is given.
func (o *owner) take(term uint64, req *synodpb.TakeRequest, defs []*Def, now int64) (*synodpb.TakeResponse, *pending, error) {
	groups := groupItems(req.Items, defs)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.mu.term != term {
		return nil, nil, errNotOwner
	}
	all := true
	for _, g := range groups {
		ol := o.limitLocked(g.def)
		ks, err := o.keyLocked(ol, g.key, now)
		if err != nil {
			return nil, nil, err
		}
		_, d, err := algo.Take(&g.def.Params, ks.st, now, g.cost, req.MaxWaitMs*int64(time.Millisecond), false)
		if err != nil {
			return nil, nil, invalid(err)
		}
		g.d = d
		if !d.Allowed && g.def.Limit.Mode == synodpb.Limit_SHADOW {
			g.shadowRefused = true
			continue
		}
		all = all && d.Allowed
	}
	resp := &synodpb.TakeResponse{Allowed: all, Decisions: make([]*synodpb.Decision, len(req.Items))}
	var p *pending
	for _, g := range groups {
		ol := o.mu.limits[g.def.Limit.Name]
		ks := ol.keys[g.key]
		if all && !req.Peek && !g.shadowRefused {
			st, d, _ := algo.Take(&g.def.Params, ks.st, now, g.cost, req.MaxWaitMs*int64(time.Millisecond), true)
			ks.st, g.d = st, d
			ks.admitted += g.cost
			ks.dirty = true
			if a := allowance(g.def, ks); ks.admitted-ks.committed > a {
				if p == nil {
					p = &pending{term: term}
				}
				p.keys = append(p.keys, ks)
				p.marks = append(p.marks, ks.admitted)
				p.allow = append(p.allow, a)
			}
			if ks.admitted-ks.snapped >= max(1, allowance(g.def, ks)/2) {
				o.kickFlush()
			}
		}
		for _, i := range g.items {
			d := decision(g.def, g.d)
			if g.shadowRefused {
				d.Allowed, d.WouldRefuse = true, true
			}
			resp.Decisions[i] = d
			if req.Peek {
				continue
			}
			switch {
			case g.shadowRefused:
				ol.wouldRefuse++
			case all:
				ol.allowed++
			default:
				ol.refused++
			}
		}
		if all && g.d.Wait > 0 {
			resp.WaitMs = max(resp.WaitMs, algo.CeilMillis(g.d.Wait))
		}
	}
	return resp, p, nil
}

// groupItems sums the items of the same limit and key, in the order they
// first appear.
func groupItems(items []*synodpb.TakeItem, defs []*Def) []*group {
	var groups []*group
	index := map[[2]string]*group{}
	for i, it := range items {
		k := [2]string{it.Limit, string(it.Key)}
		g := index[k]
		if g == nil {
			g = &group{def: defs[i], key: string(it.Key)}
			index[k] = g
			groups = append(groups, g)
		}
		g.cost += cost(it)
		g.items = append(g.items, i)
	}
	return groups
}

func cost(it *synodpb.TakeItem) int64 {
	if it.Cost == 0 {
		return 1
	}
	return it.Cost
}

// decision converts an algorithm's decision to the API's, durations in
// milliseconds rounded up.
func decision(def *Def, d algo.Decision) *synodpb.Decision {
	return &synodpb.Decision{
		Allowed:      d.Allowed,
		Remaining:    d.Remaining,
		RetryAfterMs: algo.CeilMillis(d.RetryAfter),
		ResetAfterMs: algo.CeilMillis(d.ResetAfter),
		Limit:        def.Params.Capacity(),
		WaitMs:       algo.CeilMillis(d.Wait),
	}
}

// refund gives tokens back.
func (o *owner) refund(term uint64, items []*synodpb.TakeItem, defs []*Def, now int64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.mu.term != term {
		return errNotOwner
	}
	for i, it := range items {
		ol := o.limitLocked(defs[i])
		ks, err := o.keyLocked(ol, string(it.Key), now)
		if err != nil {
			return err
		}
		ks.st = algo.Refund(&defs[i].Params, ks.st, now, cost(it))
		ks.dirty = true
	}
	return nil
}

// await waits until the checkpoints cover p's marks (each within its
// allowance), kicking the flusher when they do not yet.
func (o *owner) await(ctx context.Context, p *pending, timeout <-chan struct{}) error {
	if p == nil {
		return nil
	}
	for {
		o.mu.Lock()
		if o.mu.term != p.term {
			o.mu.Unlock()
			return errNotOwner
		}
		done := true
		for i, ks := range p.keys {
			if p.marks[i]-ks.committed > p.allow[i] {
				done = false
				break
			}
		}
		r := o.mu.round
		o.mu.Unlock()
		if done {
			return nil
		}
		o.kickFlush()
		select {
		case <-r.done:
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout:
			return errTimeout
		}
	}
}

var errTimeout = status.Error(codes.DeadlineExceeded, "synod: no decision in time")

func (o *owner) kickFlush() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// Checkpointing.

const (
	// flushInterval is how often every changed key is checkpointed.
	flushInterval = time.Second
	// flushMinInterval spaces checkpoints asked for in a hurry.
	flushMinInterval = 5 * time.Millisecond
)

// flushLoop proposes checkpoints while this node owns keys.
func (o *owner) flushLoop(ctx context.Context) {
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	var last time.Time
	for {
		periodic := false
		select {
		case <-ctx.Done():
			return
		case <-o.kick:
		case <-t.C:
			periodic = true
		}
		if wait := flushMinInterval - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		last = time.Now()
		o.flush(ctx, periodic)
	}
}

type flushEntry struct {
	ks   *keyState // nil: a stored state collected
	uk   string    // the state's user key
	mark int64
}

const (
	// stateKeep is how long the stored state of a key back to its full
	// capacity is kept: a key seen again within it needs no checkpoint
	// before its answers.
	stateKeep = 10 * time.Minute
	// gcInterval is how often the stored states are scanned for those.
	gcInterval = time.Minute
)

// flush proposes one checkpoint of every changed key (and, now and then,
// the deletion of stored states idle for stateKeep).
func (o *owner) flush(ctx context.Context, periodic bool) {
	now := time.Now().UnixNano()
	o.mu.Lock()
	term := o.mu.term
	if term == 0 {
		o.mu.Unlock()
		return
	}
	cp := &limitpb.Checkpoint{At: now}
	var entries []flushEntry
	for name, ol := range o.mu.limits {
		def := o.svc.defs.get(name)
		if def == nil || def.StateRevision != ol.def.StateRevision {
			if periodic && !o.hasPendingLocked(ol) {
				delete(o.mu.limits, name) // deleted or reset: forget it
			}
			continue
		}
		if def.Limit.Revision > ol.def.Limit.Revision {
			ol.def = def
		}
		decayed := algo.Full(&def.Params, algo.Force(&def.Params, algo.State{}, o.mu.since, def.Allowance), now)
		for key, ks := range ol.keys {
			if periodic {
				for node := range ks.shares {
					if now-o.mu.nodes[node] > int64(o.svc.shares.forget) {
						delete(ks.shares, node) // gone: its share counts as used
					}
				}
			}
			if !ks.dirty {
				if periodic && ks.admitted == ks.committed && len(ks.shares) == 0 && decayed && algo.Full(&def.Params, ks.st, now) {
					delete(ol.keys, key) // reloading it gives the same
				}
				continue
			}
			st := algo.Normalize(&def.Params, ks.st, now)
			cp.Entries = append(cp.Entries, &limitpb.Checkpoint_Entry{Limit: name, Key: []byte(key), Revision: def.StateRevision, State: toPB(st)})
			entries = append(entries, flushEntry{ks: ks, mark: ks.admitted})
			ks.snapped, ks.dirty = ks.admitted, false
		}
	}
	if periodic && time.Since(o.mu.lastGC) >= gcInterval {
		o.mu.lastGC = time.Now()
		for _, e := range o.collectLocked(now) {
			cp.Entries = append(cp.Entries, e)
			uk := string(limitsm.StateUserKey(e.Limit, e.Key))
			o.mu.collecting[uk] = true
			entries = append(entries, flushEntry{uk: uk})
		}
	}
	r := o.mu.round
	o.mu.round = newRound()
	o.mu.Unlock()
	if len(cp.Entries) == 0 {
		close(r.done)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, o.svc.electionTimeout)
	out, err := o.svc.b.Propose(ctx, limitsm.KindCheckpoint, cp, term)
	cancel()
	o.svc.metrics.checkpoints.Inc()
	o.svc.metrics.checkpointEntries.Add(float64(len(cp.Entries)))
	skipped := map[int]bool{}
	if res, ok := out.(*limitsm.CheckpointResult); ok {
		for _, i := range res.Skipped {
			skipped[i] = true
		}
	}
	o.mu.Lock()
	if o.mu.term == term {
		o.mu.checkpoints++
		for i, e := range entries {
			switch {
			case e.ks == nil:
				delete(o.mu.collecting, e.uk)
			case err != nil || skipped[i]:
				e.ks.dirty = true
			default:
				e.ks.committed = max(e.ks.committed, e.mark)
				e.ks.stored = true
			}
		}
	}
	o.mu.Unlock()
	close(r.done)
	if err != nil && ctx.Err() == nil {
		o.svc.logger.Warn("limits checkpoint failed", "keys", len(cp.Entries), "err", err)
	}
}

// maxCollect bounds the stored states one checkpoint deletes.
const maxCollect = 10_000

// collectLocked finds stored states of keys not in memory that have been
// full for stateKeep, to delete.
func (o *owner) collectLocked(now int64) []*limitpb.Checkpoint_Entry {
	span := keys.ServiceStatePrefix(keys.LimitPrefix)
	it, err := o.svc.b.DB().NewIter(&pebble.IterOptions{LowerBound: span, UpperBound: keys.PrefixEnd(span)})
	if err != nil {
		return nil
	}
	defer it.Close()
	var out []*limitpb.Checkpoint_Entry
	for ok := it.First(); ok && len(out) < maxCollect; ok = it.Next() {
		uk, err := keys.DecodeServiceStateKey(it.Key())
		if err != nil || o.mu.collecting[string(uk)] {
			continue
		}
		name, key, ok := limitsm.ParseStateUserKey(uk)
		if !ok {
			continue
		}
		def := o.svc.defs.get(name)
		if def == nil || def.Concurrency() {
			continue
		}
		if ol := o.mu.limits[name]; ol != nil && ol.keys[string(key)] != nil {
			continue // in memory: its state is current there
		}
		stored := &limitpb.StoredState{}
		if proto.Unmarshal(it.Value(), stored) != nil || stored.State == nil || stored.Revision != def.StateRevision {
			continue
		}
		if now-stored.At < int64(stateKeep) || !algo.Full(&def.Params, fromPB(stored.State), now) {
			continue
		}
		out = append(out, &limitpb.Checkpoint_Entry{Limit: name, Key: key, Revision: def.StateRevision})
	}
	return out
}

func (o *owner) hasPendingLocked(ol *ownedLimit) bool {
	for _, ks := range ol.keys {
		if ks.admitted != ks.committed {
			return true
		}
	}
	return false
}

// stats returns the owner's counts of a limit.
func (o *owner) stats(term uint64, def *Def, resp *synodpb.LimitStatsResponse) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.mu.term != term {
		return errNotOwner
	}
	resp.OwnerSinceMs = time.Since(o.mu.sinceTime).Milliseconds()
	resp.Checkpoints = o.mu.checkpoints
	ol := o.mu.limits[def.Limit.Name]
	if ol == nil || ol.def.StateRevision != def.StateRevision {
		return nil
	}
	resp.Allowed, resp.Refused, resp.WouldRefuse = ol.allowed, ol.refused, ol.wouldRefuse
	resp.Keys = int64(len(ol.keys))
	for _, ks := range ol.keys {
		for _, sh := range ks.shares {
			resp.OverAdmissionBound += sh.out
		}
	}
	return nil
}

func toPB(s algo.State) *limitpb.KeyState {
	return &limitpb.KeyState{Tat: s.TAT, Start: s.Start, Prev: s.Prev, Cur: s.Cur, Next: s.Next, NextAt: s.NextAt}
}

func fromPB(s *limitpb.KeyState) algo.State {
	return algo.State{TAT: s.Tat, Start: s.Start, Prev: s.Prev, Cur: s.Cur, Next: s.Next, NextAt: s.NextAt}
}

// share serves a node deciding locally for a key (LOCAL mode): it takes
// the node's report of what it used and gives back, decides the request
// of req.Cost, and grants up to req.Want more, within the limit's share
// of the key's capacity across nodes.
func (o *owner) share(term, node uint64, req *limitpb.ShareRequest, def *Def, now int64) (*limitpb.ShareResult, *pending, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.mu.term != term {
		return nil, nil, errNotOwner
	}
	if def == nil { // a node saying it is alive
		o.mu.nodes[node] = now
		return &limitpb.ShareResult{Term: term}, nil, nil
	}
	ol := o.limitLocked(def)
	ks, err := o.keyLocked(ol, string(req.Key), now)
	if err != nil {
		return nil, nil, err
	}
	if ks.shares == nil {
		ks.shares = map[uint64]*shareOut{}
	}
	sh := ks.shares[node]
	if sh == nil {
		sh = &shareOut{}
		ks.shares[node] = sh
	}
	o.mu.nodes[node] = now
	if req.Term == term {
		back := min(sh.out, req.Used+req.Returned)
		sh.out -= back
		if req.Returned > 0 {
			ks.st = algo.Refund(&def.Params, ks.st, now, min(req.Returned, back))
			ks.dirty = true
		}
	}
	ol.allowed += uint64(max(0, req.Used))
	ol.refused += uint64(max(0, req.Refused))
	res := &limitpb.ShareResult{Term: term}
	p := &pending{term: term}
	admit := func(n int64) {
		ks.admitted += n
		ks.dirty = true
		if a := allowance(def, ks); ks.admitted-ks.committed > a {
			p.keys = append(p.keys, ks)
			p.marks = append(p.marks, ks.admitted)
			p.allow = append(p.allow, a)
		}
		if ks.admitted-ks.snapped >= max(1, allowance(def, ks)/2) {
			o.kickFlush()
		}
	}
	if req.Cost > 0 {
		st, d, err := algo.Take(&def.Params, ks.st, now, req.Cost, 0, true)
		if err != nil {
			return nil, nil, invalid(err)
		}
		res.Decision = decision(def, d)
		if d.Allowed {
			ks.st = st
			admit(req.Cost)
			ol.allowed++
		} else {
			ol.refused++
		}
	}
	if req.Want > 0 && now-o.mu.since >= int64(o.svc.shares.ttl) && (res.Decision == nil || res.Decision.Allowed) {
		var out int64
		for _, s := range ks.shares {
			out += s.out
		}
		room := def.Params.Capacity()*int64(def.Limit.LocalSharePercent)/100 - out
		_, peek, _ := algo.Take(&def.Params, ks.st, now, 0, 0, false)
		if g := min(req.Want, room, peek.Remaining); g > 0 {
			if st, d, err := algo.Take(&def.Params, ks.st, now, g, 0, true); err == nil && d.Allowed {
				ks.st = st
				admit(g)
				sh.out += g
				res.Granted = g
			}
		}
	}
	if len(p.keys) == 0 {
		p = nil
	}
	return res, p, nil
}
