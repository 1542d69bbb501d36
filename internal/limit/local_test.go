package limit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/limit/limitpb"
	"github.com/synod-io/synod/internal/limit/limitsm"
)

// fakeOwner is a Backend whose leader is another node, reached through a
// peer connection that fails while down is set and otherwise grants every
// share request what it wants, recording the requests.
type fakeOwner struct {
	Backend // the methods not used here
	mu      sync.Mutex
	down    bool
	reqs    []*limitpb.ShareRequest
}

const fakeTerm = 5

func (f *fakeOwner) MemberID() uint64 { return 1 }

func (f *fakeOwner) Leadership() Leadership {
	return Leadership{Lead: 2, Term: fakeTerm, Voters: 3}
}

func (f *fakeOwner) After(d time.Duration) <-chan struct{} {
	ch := make(chan struct{})
	time.AfterFunc(d, func() { close(ch) })
	return ch
}

func (f *fakeOwner) PeerConn(uint64) (grpc.ClientConnInterface, error) { return f, nil }

func (f *fakeOwner) Invoke(_ context.Context, _ string, args, reply any, _ ...grpc.CallOption) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errors.New("owner unreachable")
	}
	resp := reply.(*limitpb.DecideResponse)
	for _, op := range args.(*limitpb.DecideRequest).Ops {
		r := op.GetShare()
		f.reqs = append(f.reqs, r)
		resp.Results = append(resp.Results, &limitpb.OpResult{Share: &limitpb.ShareResult{Term: fakeTerm, Granted: r.Want}})
	}
	return nil
}

func (f *fakeOwner) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, errors.New("no streams")
}

// TestReportAfterAFailedExchange: a report that does not reach the owner
// keeps what it was to report (the counts, the request for a top-up) for
// the next one, which tops the share up and reports the counts once.
func TestReportAfterAFailedExchange(t *testing.T) {
	b := &fakeOwner{down: true}
	s := New(Config{Backend: b, ElectionTimeout: 100 * time.Millisecond})
	l := s.local
	p, err := limitsm.Params(&synodpb.Limit{Name: "api", Limit: 1000, PeriodMs: 1000, Burst: 3000})
	if err != nil {
		t.Fatal(err)
	}
	def := &Def{Limit: &synodpb.Limit{Name: "api", LocalSharePercent: 30}, Params: p, StateRevision: 1}
	k := shareKey{"api", "tenant"}
	now := time.Now().UnixNano()
	w := want(def, 3) // 300
	// A share that ran low: 100 tokens left of 300, 7 used and 2 refused
	// locally, listed for a top-up.
	l.mu.term, l.mu.contact, l.mu.lastScan = fakeTerm, now, now
	sh := &share{def: def, tokens: 100, used: 7, refused: 2, lastUse: now, topUp: true}
	l.mu.m[k] = sh
	l.mu.topUps[k] = true

	ctx := t.Context()
	l.report(ctx) // the owner is unreachable
	l.mu.Lock()
	used, refused, listed := sh.used, sh.refused, l.mu.topUps[k]
	l.mu.Unlock()
	if used != 7 || refused != 2 || !listed {
		t.Fatalf("after a failed report: got used %d, refused %d, listed for a top-up %v; want 7, 2, true", used, refused, listed)
	}

	b.mu.Lock()
	b.down = false
	b.mu.Unlock()
	l.report(ctx)
	l.report(ctx) // nothing left to report: only "alive"
	b.mu.Lock()
	reqs := b.reqs
	b.mu.Unlock()
	if len(reqs) != 2 || reqs[0].Used != 7 || reqs[0].Refused != 2 || reqs[0].Want != w-100 || reqs[1].Limit != "" {
		t.Fatalf("reports once the owner is back: got %v; want one top-up of %d reporting 7 used and 2 refused, then an empty one", reqs, w-100)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if sh.tokens != w || sh.used != 0 || sh.refused != 0 || sh.topUp || len(l.mu.topUps) != 0 {
		t.Fatalf("share after the top-up: got %+v, listed %v; want %d tokens, counts reported, not listed", *sh, l.mu.topUps, w)
	}
}
