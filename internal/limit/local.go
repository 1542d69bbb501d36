package limit

import (
	"context"
	"sync"
	"time"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/limit/limitpb"
)

// shareTimes are the durations of local shares, in proportion to the
// range's election timeout E.
type shareTimes struct {
	// ttl (3E) is how long a node uses its shares after its last exchange
	// with the owner; the owner counts them for forget (6E), longer, and
	// a new owner grants none for ttl (the previous owner's may be in use
	// that long).
	ttl, forget time.Duration
	// idle (10E) is how long a share may go unused before it is returned:
	// long enough for keys seen every few seconds to be decided locally
	// (what is held meanwhile is within the limit's share).
	idle time.Duration
	// report (E/4) is how often a node tops up, returns and reports its
	// shares, and tells the owner it is alive.
	report time.Duration
}

func newShareTimes(e time.Duration) shareTimes {
	return shareTimes{ttl: 3 * e, forget: 6 * e, idle: 10 * e, report: max(time.Millisecond, e/4)}
}

// localShares are the shares of keys' capacity this node holds for limits
// in LOCAL mode: it decides from them without asking the owner, tops them
// up in the background when they run low, and returns what it has not
// used after a while. Over-admission is bounded by what is handed out:
// the owner counts a share as taken when it grants it.
type localShares struct {
	s    *Service
	kick chan struct{}
	mu   struct {
		sync.Mutex
		m map[shareKey]*share
		// topUps are the shares that ran low, for the next report.
		topUps map[shareKey]bool
		// term is the owner's term of the shares held; contact the last
		// exchange with it (Unix ns).
		term    uint64
		contact int64
		// lastScan is when the shares were last scanned for idle ones.
		lastScan int64
	}
}

type shareKey struct{ limit, key string }

type share struct {
	def    *Def
	tokens int64
	// used and refused count what was decided locally since the last
	// report.
	used, refused int64
	lastUse       int64
	// topUp asks the report loop for more.
	topUp bool
}

func newLocalShares(s *Service) *localShares {
	l := &localShares{s: s, kick: make(chan struct{}, 1)}
	l.mu.m = map[shareKey]*share{}
	l.mu.topUps = map[shareKey]bool{}
	return l
}

// want is the share a node asks for: the limit's share of a key's
// capacity, split between the voters.
func want(def *Def, voters int) int64 {
	c := def.Params.Capacity() * int64(def.Limit.LocalSharePercent) / 100
	return c / int64(max(1, voters))
}

// validLocked reports whether the shares held may be used now.
func (l *localShares) validLocked(ls Leadership, now int64) bool {
	return l.mu.term == ls.Term && now-l.mu.contact < int64(l.s.shares.ttl)
}

// take decides a request of a LOCAL limit from this node's share, or asks
// the owner when the share does not cover it.
func (l *localShares) take(ctx context.Context, it *synodpb.TakeItem, def *Def, deadline <-chan struct{}) (*synodpb.TakeResponse, error) {
	now := time.Now().UnixNano()
	ls := l.s.b.Leadership()
	c := cost(it)
	w := want(def, ls.Voters)
	k := shareKey{it.Limit, string(it.Key)}
	l.mu.Lock()
	sh := l.mu.m[k]
	if sh != nil && sh.def.StateRevision == def.StateRevision && l.validLocked(ls, now) && sh.tokens >= c {
		sh.tokens -= c
		sh.used += c
		sh.lastUse = now
		low := sh.tokens < w/2 && !sh.topUp
		if low {
			sh.topUp = true
			l.mu.topUps[k] = true
		}
		rem := sh.tokens
		l.mu.Unlock()
		if low {
			l.wake()
		}
		d := &synodpb.Decision{Allowed: true, Remaining: rem, Limit: def.Params.Capacity()}
		return &synodpb.TakeResponse{Allowed: true, Decisions: []*synodpb.Decision{d}}, nil
	}
	req := &limitpb.ShareRequest{Limit: it.Limit, Key: it.Key, Cost: c, Want: w, Node: l.s.b.MemberID(), Term: l.mu.term}
	if sh != nil {
		// Reported with the request: moved out of the share, so that a
		// concurrent report does not count them again.
		req.Used, req.Refused = sh.used, sh.refused
		sh.used, sh.refused = 0, 0
	}
	l.mu.Unlock()
	res, err := l.ask(ctx, req, deadline)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.unreportLocked(k, sh, req)
		return nil, err
	}
	l.grantedLocked(k, def, res, time.Now().UnixNano())
	if sh := l.mu.m[k]; sh != nil {
		sh.topUp = false // topped up by this exchange
	}
	d := res.Decision
	return &synodpb.TakeResponse{Allowed: d.Allowed, Decisions: []*synodpb.Decision{d}}, nil
}

// unreportLocked puts back the counts of a report that did not reach the
// owner, for the next one.
func (l *localShares) unreportLocked(k shareKey, sh *share, req *limitpb.ShareRequest) {
	if sh == nil || l.mu.m[k] != sh {
		return // voided, or replaced: the counts go with it
	}
	sh.used += req.Used
	sh.refused += req.Refused
	if sh.topUp {
		l.mu.topUps[k] = true
	}
}

// grantedLocked adds what the owner granted.
func (l *localShares) grantedLocked(k shareKey, def *Def, res *limitpb.ShareResult, now int64) {
	if res.Term != l.mu.term {
		clear(l.mu.m) // the shares of another owner are void
		l.mu.term = res.Term
	}
	l.mu.contact = now
	sh := l.mu.m[k]
	if sh == nil || sh.def.StateRevision != def.StateRevision {
		sh = &share{def: def}
		l.mu.m[k] = sh
	}
	sh.tokens += res.Granted
	sh.lastUse = now
}

// ask has the owner serve a share request, retrying as leadership moves.
func (l *localShares) ask(ctx context.Context, req *limitpb.ShareRequest, deadline <-chan struct{}) (*limitpb.ShareResult, error) {
	s := l.s
	for {
		res, err := l.send(ctx, []*limitpb.ShareRequest{req}, deadline)
		if err == nil {
			if err = opError(res[0]); err == nil {
				return res[0].Share, nil
			}
		}
		if !retriable(err) {
			return nil, err
		}
		if err := s.backoff(ctx, deadline); err != nil {
			return nil, err
		}
	}
}

// send has the owner serve share requests: this node if it leads, else
// the leader in one call.
func (l *localShares) send(ctx context.Context, reqs []*limitpb.ShareRequest, deadline <-chan struct{}) ([]*limitpb.OpResult, error) {
	s := l.s
	ls := s.b.Leadership()
	dreq := &limitpb.DecideRequest{}
	for _, r := range reqs {
		dreq.Ops = append(dreq.Ops, &limitpb.Op{Op: &limitpb.Op_Share{Share: r}})
	}
	switch {
	case ls.Leader:
		resp, err := s.decide(ctx, dreq)
		if err != nil {
			return nil, err
		}
		return resp.Results, nil
	case ls.Lead != 0:
		if len(reqs) == 1 {
			res, err := s.fwd.do(ctx, ls.Lead, dreq.Ops[0], deadline)
			if err != nil {
				return nil, err
			}
			return []*limitpb.OpResult{res}, nil
		}
		resp := &limitpb.DecideResponse{}
		conn, err := s.b.PeerConn(ls.Lead)
		if err != nil {
			return nil, err
		}
		cctx, cancel := context.WithTimeout(ctx, forwardTimeout)
		defer cancel()
		if err := conn.Invoke(cctx, decideMethod, dreq, resp); err != nil {
			return nil, err
		}
		if len(resp.Results) != len(reqs) {
			return nil, errNotOwner
		}
		return resp.Results, nil
	}
	return nil, errNoLeader
}

// refund gives tokens back to this node's share, if it holds one for the
// key; false if the owner must take them.
func (l *localShares) refund(it *synodpb.TakeItem, def *Def) bool {
	now := time.Now().UnixNano()
	ls := l.s.b.Leadership()
	l.mu.Lock()
	defer l.mu.Unlock()
	sh := l.mu.m[shareKey{it.Limit, string(it.Key)}]
	if sh == nil || sh.def.StateRevision != def.StateRevision || !l.validLocked(ls, now) {
		return false
	}
	c := cost(it)
	sh.tokens += c
	sh.used -= c // given back, as if unused
	return true
}

func (l *localShares) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// reportLoop tops up shares that run low, returns idle ones, reports what
// was decided locally, and keeps the node's shares alive with the owner.
func (l *localShares) reportLoop(ctx context.Context) {
	t := time.NewTicker(l.s.shares.report)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-l.kick:
		}
		l.report(ctx)
	}
}

type reported struct {
	k        shareKey
	sh       *share
	def      *Def
	returned int64
}

func (l *localShares) report(ctx context.Context) {
	s := l.s
	now := time.Now().UnixNano()
	ls := s.b.Leadership()
	node := s.b.MemberID()
	var reqs []*limitpb.ShareRequest
	var reps []reported
	l.mu.Lock()
	if len(l.mu.m) == 0 {
		l.mu.Unlock()
		return
	}
	if l.mu.term != ls.Term {
		clear(l.mu.m) // a new owner: the shares are void
		l.mu.term = 0
		l.mu.Unlock()
		return
	}
	add := func(k shareKey, sh *share, req *limitpb.ShareRequest, r reported) {
		// The counts move into the request (put back if it fails), so
		// that a concurrent take's exchange does not report them again.
		req.Limit, req.Key, req.Used, req.Refused, req.Term, req.Node = k.limit, []byte(k.key), sh.used, sh.refused, l.mu.term, node
		r.k, r.sh, r.def = k, sh, sh.def
		sh.used, sh.refused = 0, 0
		reqs = append(reqs, req)
		reps = append(reps, r)
	}
	for k := range l.mu.topUps {
		if sh := l.mu.m[k]; sh != nil && sh.topUp {
			add(k, sh, &limitpb.ShareRequest{Want: want(sh.def, ls.Voters) - sh.tokens}, reported{})
		}
	}
	clear(l.mu.topUps)
	if now-l.mu.lastScan >= int64(s.shares.idle/4) {
		// Now and then: give back idle shares, drop those of changed
		// limits.
		l.mu.lastScan = now
		for k, sh := range l.mu.m {
			if def := s.defs.get(k.limit); def == nil || def.StateRevision != sh.def.StateRevision {
				delete(l.mu.m, k)
				continue
			}
			if now-sh.lastUse > int64(s.shares.idle) && !sh.topUp {
				add(k, sh, &limitpb.ShareRequest{Returned: sh.tokens}, reported{returned: sh.tokens})
				sh.tokens = 0 // given back: no longer used here
			}
		}
	}
	if len(reqs) == 0 {
		// Tell the owner this node is alive, for its shares to stay.
		reqs = append(reqs, &limitpb.ShareRequest{Term: l.mu.term, Node: node})
	}
	l.mu.Unlock()
	for len(reqs) > 0 {
		n := min(len(reqs), maxBatch)
		batch, batchReps := reqs[:n], reps[:min(n, len(reps))]
		reqs = reqs[n:]
		if len(reps) > n {
			reps = reps[n:]
		} else {
			reps = nil
		}
		res, err := l.send(ctx, batch, s.b.After(forwardTimeout))
		if err != nil {
			// The next round reports again.
			l.mu.Lock()
			for i, r := range batchReps {
				l.unreportLocked(r.k, r.sh, batch[i])
			}
			for i, r := range reps {
				l.unreportLocked(r.k, r.sh, reqs[i])
			}
			l.mu.Unlock()
			return
		}
		l.mu.Lock()
		for i, r := range batchReps {
			if opError(res[i]) != nil || res[i].Share == nil {
				l.unreportLocked(r.k, r.sh, batch[i])
				continue
			}
			sh := l.mu.m[r.k]
			if sh == nil || sh != r.sh {
				continue
			}
			if r.returned > 0 || sh.tokens == 0 && sh.used == 0 && !sh.topUp {
				if sh.tokens == 0 && sh.used == 0 {
					delete(l.mu.m, r.k)
				}
				continue
			}
			sh.topUp = false
			l.grantedLocked(r.k, r.def, res[i].Share, time.Now().UnixNano())
		}
		for _, r := range res {
			if r.Share != nil && r.Share.Term == l.mu.term {
				l.mu.contact = time.Now().UnixNano()
				break
			}
		}
		l.mu.Unlock()
	}
}
