package coord_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/api/v3electionpb"
)

func TestElectionServiceThroughRawGRPC(t *testing.T) {
	c := newCluster(t)
	cc0, cc1 := conn(t, c.Node(0)), conn(t, c.Node(1))
	el0, el1 := v3electionpb.NewElectionClient(cc0), v3electionpb.NewElectionClient(cc1)
	ctx := ctxFor(t, 60*time.Second)

	if _, err := el0.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("e")}); status.Convert(err).Message() != "election: no leader" {
		t.Fatalf("leader of an empty election: got %v, want \"election: no leader\"", err)
	}
	obs, err := v3electionpb.NewElectionClient(conn(t, c.Node(2))).Observe(ctx, &v3electionpb.LeaderRequest{Name: []byte("e")})
	if err != nil {
		t.Fatal(err)
	}
	a, err := el0.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("e"), Lease: grant(t, pb.NewLeaseClient(cc0), 30), Value: []byte("a")})
	if err != nil {
		t.Fatalf("campaign: %v", err)
	}
	l := a.Leader
	if string(l.Name) != "e" || string(l.Key) != fmt.Sprintf("e/%x", l.Lease) || l.Rev == 0 || a.Header.Revision != l.Rev {
		t.Fatalf("leader key: got %+v (header revision %d), want name e, key e/<lease>, rev = header revision", l, a.Header.Revision)
	}
	next := func(want string) *v3electionpb.LeaderResponse {
		t.Helper()
		r, err := obs.Recv()
		if err != nil {
			t.Fatalf("observe, want %q: %v", want, err)
		}
		if string(r.Kv.Value) != want {
			t.Fatalf("observed value: got %q, want %q", r.Kv.Value, want)
		}
		return r
	}
	next("a")
	type campaign struct {
		resp *v3electionpb.CampaignResponse
		err  error
	}
	won := make(chan campaign, 1)
	lease := grant(t, pb.NewLeaseClient(cc1), 30)
	go func() { // ends when it wins or ctx ends
		r, err := el1.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("e"), Lease: lease, Value: []byte("b")})
		won <- campaign{r, err}
	}()
	if _, err := el1.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: l, Value: []byte("a2")}); err != nil {
		t.Fatalf("proclaim by the leader: %v", err)
	}
	if r := next("a2"); string(r.Kv.Key) != string(l.Key) || r.Header.Revision != r.Kv.ModRevision {
		t.Fatalf("observed proclamation: key %s at revision %d (mod %d), want key %s at its mod revision", r.Kv.Key, r.Header.Revision, r.Kv.ModRevision, l.Key)
	}
	ld, err := el1.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("e")})
	if err != nil || string(ld.Kv.Value) != "a2" {
		t.Fatalf("leader: got %v (%v), want a2", ld, err)
	}
	if _, err := el0.Proclaim(ctx, &v3electionpb.ProclaimRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("proclaim without leader key: got %v, want InvalidArgument", err)
	}
	if _, err := el0.Resign(ctx, &v3electionpb.ResignRequest{Leader: l}); err != nil {
		t.Fatalf("resign: %v", err)
	}
	b := <-won
	if b.err != nil {
		t.Fatalf("campaign after the resignation: %v", b.err)
	}
	if b.resp.Leader.Rev <= l.Rev {
		t.Fatalf("fencing tokens: second leader %d, first %d, want increasing", b.resp.Leader.Rev, l.Rev)
	}
	next("b")
	_, err = el0.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: l, Value: []byte("stale")})
	if status.Convert(err).Message() != "election: not leader" {
		t.Fatalf("proclaim by a former leader: got %v, want \"election: not leader\"", err)
	}
}

// observation is what an observer saw: at revision rev, key led with value.
type observation struct {
	rev        int64
	key, value string
	token      int64
}

// TestElectionOneLeaderPerRevision runs candidates of both kinds (the
// service and etcd's client-side election) and observers on every node, and
// checks against the store's history that every observation names the one
// leader of its revision, that observers agree, that leaders follow in token
// order, and that every successful proclamation was made by the leader of
// its revision.
func TestElectionOneLeaderPerRevision(t *testing.T) {
	c := newCluster(t)
	ctx := ctxFor(t, 120*time.Second)
	const name, rounds = "one-leader", 3
	var mu sync.Mutex
	observed := make([][]observation, 3)
	octx, stopObservers := context.WithCancel(ctx)
	var observers sync.WaitGroup
	for i := range 3 {
		stream, err := v3electionpb.NewElectionClient(conn(t, c.Node(i))).Observe(octx, &v3electionpb.LeaderRequest{Name: []byte(name)})
		if err != nil {
			t.Fatal(err)
		}
		observers.Go(func() {
			for {
				r, err := stream.Recv()
				if err != nil {
					return
				}
				mu.Lock()
				observed[i] = append(observed[i], observation{r.Header.Revision, string(r.Kv.Key), string(r.Kv.Value), r.Kv.CreateRevision})
				mu.Unlock()
			}
		})
	}
	defer func() {
		stopObservers()
		observers.Wait()
	}()

	// proclaimed is a successful proclamation: at rev, key was set to value.
	type proclaimed struct {
		rev        int64
		key, value string
	}
	var procs []proclaimed
	var wg sync.WaitGroup
	errs := make(chan error, 6*rounds)
	for i := range 6 {
		node := c.Node(i % 3)
		wg.Go(func() {
			for r := range rounds {
				val := fmt.Sprintf("c%d-r%d", i, r)
				var key string
				var proclaim func(v string) (int64, error)
				var resign func() error
				if i%2 == 0 { // the service
					cc := conn(t, node)
					el := v3electionpb.NewElectionClient(cc)
					lease, err := pb.NewLeaseClient(cc).LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 30})
					if err != nil {
						errs <- err
						return
					}
					resp, err := el.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte(name), Lease: lease.ID, Value: []byte(val)})
					if err != nil {
						errs <- fmt.Errorf("campaign: %w", err)
						return
					}
					key = string(resp.Leader.Key)
					proclaim = func(v string) (int64, error) {
						p, err := el.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: resp.Leader, Value: []byte(v)})
						if err != nil {
							return 0, err
						}
						return p.Header.Revision, nil
					}
					resign = func() error {
						_, err := pb.NewLeaseClient(cc).LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: lease.ID})
						return err
					}
				} else { // etcd's client-side election
					s, err := concurrency.NewSession(c.Client(node), concurrency.WithTTL(30))
					if err != nil {
						errs <- err
						return
					}
					e := concurrency.NewElection(s, name)
					if err := e.Campaign(ctx, val); err != nil {
						errs <- fmt.Errorf("campaign: %w", err)
						return
					}
					key = e.Key()
					proclaim = func(v string) (int64, error) {
						if err := e.Proclaim(ctx, v); err != nil {
							return 0, err
						}
						return e.Header().Revision, nil
					}
					resign = func() error {
						err := e.Resign(ctx)
						s.Close()
						return err
					}
				}
				for p := range 2 {
					v := fmt.Sprintf("%s-p%d", val, p)
					at, err := proclaim(v)
					if err != nil {
						errs <- fmt.Errorf("proclaim by the leader: %w", err)
						return
					}
					mu.Lock()
					procs = append(procs, proclaimed{at, key, v})
					mu.Unlock()
				}
				if err := resign(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A last leader marks the end every observer must reach.
	final, err := v3electionpb.NewElectionClient(conn(t, c.Node(0))).Campaign(ctx, &v3electionpb.CampaignRequest{
		Name: []byte(name), Lease: grant(t, pb.NewLeaseClient(conn(t, c.Node(0))), 30), Value: []byte("final")})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "observers reach the final leader", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		for i, obs := range observed {
			if len(obs) == 0 || obs[len(obs)-1].value != "final" {
				return false, fmt.Sprintf("observer %d saw %d values", i, len(obs))
			}
		}
		return true, ""
	})
	stopObservers()
	observers.Wait()

	cli := c.Client()
	leaderAt := map[int64][2]string{} // revision -> key, value in the store
	storeLeader := func(rev int64) [2]string {
		if l, ok := leaderAt[rev]; ok {
			return l
		}
		resp, err := cli.Get(ctx, name+"/", append(clientv3.WithFirstCreate(), clientv3.WithRev(rev))...)
		if err != nil {
			t.Fatal(err)
		}
		var l [2]string
		if len(resp.Kvs) == 1 {
			l = [2]string{string(resp.Kvs[0].Key), string(resp.Kvs[0].Value)}
		}
		leaderAt[rev] = l
		return l
	}
	seen := map[int64]observation{}
	total := 0
	for i, obs := range observed {
		for k, o := range obs {
			total++
			if k > 0 && (o.rev <= obs[k-1].rev || o.token < obs[k-1].token) {
				t.Errorf("observer %d: %+v after %+v: want increasing revisions and non-decreasing tokens", i, o, obs[k-1])
			}
			if l := storeLeader(o.rev); l != [2]string{o.key, o.value} {
				t.Errorf("observer %d reported leader %s = %q at revision %d; the store's leader then is %s = %q", i, o.key, o.value, o.rev, l[0], l[1])
			}
			if prev, ok := seen[o.rev]; ok && (prev.key != o.key || prev.value != o.value) {
				t.Errorf("two leaders observed at revision %d: %+v and %+v", o.rev, prev, o)
			}
			seen[o.rev] = o
		}
	}
	for _, p := range procs {
		if l := storeLeader(p.rev); l != [2]string{p.key, p.value} {
			t.Errorf("proclamation %q by %s succeeded at revision %d, where the store's leader is %s = %q", p.value, p.key, p.rev, l[0], l[1])
		}
	}
	t.Logf("%d wins, %d proclamations, %d observations over %d revisions, final leader token %d", 6*rounds, len(procs), total, len(seen), final.Leader.Rev)
}

// TestCrashedLeaderReplacedAfterTTL crashes the leader's client (its
// keepalives stop, its lease is not revoked): the waiting candidate must
// lead once the lease expires, not before.
func TestCrashedLeaderReplacedAfterTTL(t *testing.T) {
	const ttl = 2 * time.Second
	c := newCluster(t)
	ctx := ctxFor(t, 60*time.Second)
	crashing := c.Client(c.Node(0))
	s, err := concurrency.NewSession(crashing, concurrency.WithTTL(int(ttl.Seconds())))
	if err != nil {
		t.Fatal(err)
	}
	first := concurrency.NewElection(s, "crash")
	if err := first.Campaign(ctx, "first"); err != nil {
		t.Fatal(err)
	}
	cc := conn(t, c.Node(1))
	lc := pb.NewLeaseClient(cc)
	lease := grant(t, lc, 30)
	won := make(chan error, 1)
	var second *v3electionpb.CampaignResponse
	go func() { // ends when it wins or ctx ends
		var err error
		second, err = v3electionpb.NewElectionClient(cc).Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("crash"), Lease: lease, Value: []byte("second")})
		won <- err
	}()
	waitUntil(t, 10*time.Second, "second candidate queued", func() (bool, string) {
		n := keysUnder(t, c.Client(), "crash/")
		return n == 2, fmt.Sprintf("%d keys", n)
	})
	crashed := time.Now()
	crashing.Close() // no more keepalives; the lease is left to expire
	var took time.Duration
	select {
	case err := <-won:
		took = time.Since(crashed)
		if err != nil {
			t.Fatalf("campaign of the second candidate: %v", err)
		}
	case <-time.After(ttl + 10*time.Second):
		t.Fatalf("crashed leader not replaced %s after the crash (lease TTL %s)", ttl+10*time.Second, ttl)
	}
	// The lease was renewed at most a third of its TTL before the crash, so
	// it cannot expire before two thirds of the TTL after it.
	if took < 2*ttl/3-100*time.Millisecond {
		t.Fatalf("crashed leader replaced %s after the crash: before its lease (TTL %s) could expire", took, ttl)
	}
	if second.Leader.Rev <= first.Rev() {
		t.Fatalf("new leader's token %d not above the crashed leader's %d", second.Leader.Rev, first.Rev())
	}
	t.Logf("crashed leader (TTL %s) replaced %s after its crash", ttl, took.Round(time.Millisecond))
}
