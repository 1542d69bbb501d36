package server_test

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

func limitsOf(cli *clientv3.Client) synodpb.LimitsClient {
	return synodpb.NewLimitsClient(cli.ActiveConnection())
}

func take(t *testing.T, l synodpb.LimitsClient, req *synodpb.TakeRequest) *synodpb.TakeResponse {
	t.Helper()
	resp, err := l.Take(testcluster.Context(t, 10*time.Second), req)
	if err != nil {
		t.Fatalf("take %v: %v", req, err)
	}
	return resp
}

func one(limit, key string, cost int64) *synodpb.TakeRequest {
	return &synodpb.TakeRequest{Items: []*synodpb.TakeItem{{Limit: limit, Key: []byte(key), Cost: cost}}}
}

// TestLimitsThroughEveryNode defines a limit through one node and takes
// from it through every node: the owner (the leader) decides for all, so
// the burst is shared, and a limit set a moment ago is known everywhere.
func TestLimitsThroughEveryNode(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	var clients []synodpb.LimitsClient
	for _, n := range c.Nodes() {
		clients = append(clients, limitsOf(c.Client(n)))
	}
	ctx := testcluster.Context(t, 30*time.Second)
	set, err := clients[0].SetLimit(ctx, &synodpb.SetLimitRequest{Limit: &synodpb.Limit{
		Name: "api", Limit: 1, PeriodMs: 3_600_000, Burst: 6, // 6 now, then one an hour
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !set.Created || set.Limit.Revision == 0 || set.Limit.TimeoutMs == 0 {
		t.Fatalf("set: got %v, want created with a revision and defaults", set)
	}
	// Right away through another node: it catches up rather than answer
	// "not found".
	allowed := 0
	for i := range 9 {
		resp := take(t, clients[(i+1)%3], one("api", "tenant-1", 1))
		d := resp.Decisions[0]
		if resp.Allowed {
			allowed++
			if d.Remaining != int64(6-allowed) {
				t.Fatalf("take %d: remaining %d, want %d", i, d.Remaining, 6-allowed)
			}
			continue
		}
		// Refused: retry in the hour it takes one token to come back,
		// never earlier.
		if d.RetryAfterMs < 3_599_000 || d.RetryAfterMs > 3_600_000 || d.Limit != 6 {
			t.Fatalf("refusal %d: got %v, want retry after about an hour, limit 6", i, d)
		}
	}
	if allowed != 6 {
		t.Fatalf("allowed %d of 9 through three nodes, want the burst of 6", allowed)
	}
	// Another key has its own burst.
	if resp := take(t, clients[2], one("api", "tenant-2", 6)); !resp.Allowed {
		t.Fatalf("a cost of the whole burst on a fresh key: refused (%v)", resp.Decisions[0])
	}
	// Costs above the capacity are refused as invalid.
	if _, err := clients[1].Take(ctx, one("api", "tenant-3", 7)); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("cost above the burst: got %v, want InvalidArgument", err)
	}
	// A refund gives back.
	if _, err := clients[1].Refund(ctx, &synodpb.RefundRequest{Items: []*synodpb.TakeItem{{Limit: "api", Key: []byte("tenant-1"), Cost: 2}}}); err != nil {
		t.Fatal(err)
	}
	if resp := take(t, clients[0], &synodpb.TakeRequest{Peek: true, Items: []*synodpb.TakeItem{{Limit: "api", Key: []byte("tenant-1"), Cost: 2}}}); !resp.Allowed || resp.Decisions[0].Remaining != 0 {
		t.Fatalf("peek after a refund of 2: got %v, want 2 allowed", resp.Decisions[0])
	}

	// Get, list, delete.
	if g, err := clients[2].GetLimit(ctx, &synodpb.GetLimitRequest{Name: "api"}); err != nil || g.Limit.Burst != 6 || g.Limit.Revision != set.Limit.Revision {
		t.Fatalf("get: got %v, %v", g, err)
	} else if h := g.Header; h.ClusterId != set.Header.ClusterId || h.MemberId != c.Nodes()[2].Server().MemberID() || h.RaftTerm == 0 || h.Revision < set.Limit.Revision {
		t.Fatalf("get: got header %v, want the answering node's (cluster %d, member %d, its term), at the set's revision %d or later", h, set.Header.ClusterId, c.Nodes()[2].Server().MemberID(), set.Limit.Revision)
	}
	if _, err := clients[2].GetLimit(ctx, &synodpb.GetLimitRequest{Name: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("get of a missing limit: got %v, want NotFound", err)
	}
	if _, err := clients[0].Take(ctx, one("nope", "k", 1)); status.Code(err) != codes.NotFound {
		t.Fatalf("take from a missing limit: got %v, want NotFound", err)
	}
	if l, err := clients[1].ListLimits(ctx, &synodpb.ListLimitsRequest{}); err != nil || len(l.Limits) != 1 || l.Limits[0].Name != "api" {
		t.Fatalf("list: got %v, %v", l, err)
	}
	if d, err := clients[1].DeleteLimit(ctx, &synodpb.DeleteLimitRequest{Name: "api"}); err != nil || !d.Deleted {
		t.Fatalf("delete: got %v, %v", d, err)
	}
	if _, err := clients[1].Take(ctx, one("api", "k", 1)); status.Code(err) != codes.NotFound {
		t.Fatalf("take from a deleted limit through the node that deleted it: got %v, want NotFound", err)
	}
	// Invalid definitions.
	for _, l := range []*synodpb.Limit{
		{Name: "bad name", Limit: 1, PeriodMs: 1000},
		{Name: "x", Limit: 0, PeriodMs: 1000},
		{Name: "x", Algorithm: synodpb.Limit_CONCURRENCY},
		{Name: "x", Algorithm: synodpb.Limit_CALENDAR_WINDOW, Limit: 5, CalendarUnit: synodpb.Limit_DAY, TimeZone: "Mars/Olympus"},
	} {
		if _, err := clients[0].SetLimit(ctx, &synodpb.SetLimitRequest{Limit: l}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("set %v: got %v, want InvalidArgument", l, err)
		}
	}
}

// TestReservedKeysRefuseEtcdWrites checks that etcd clients cannot write
// the limits' keys by accident, and may read them.
func TestReservedKeysRefuseEtcdWrites(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 1})
	c.WaitLeader()
	cli := c.Client()
	ctx := testcluster.Context(t, 10*time.Second)
	if _, err := limitsOf(cli).SetLimit(ctx, &synodpb.SetLimitRequest{Limit: &synodpb.Limit{Name: "api", Limit: 5, PeriodMs: 1000}}); err != nil {
		t.Fatal(err)
	}
	for what, op := range map[string]func() error{
		"put":        func() error { _, err := cli.Put(ctx, "\x01synod/limit/api/def", "x"); return err },
		"delete":     func() error { _, err := cli.Delete(ctx, "\x01synod/limit/", clientv3.WithPrefix()); return err },
		"delete all": func() error { _, err := cli.Delete(ctx, "", clientv3.WithPrefix()); return err },
		"txn put":    func() error { _, err := cli.Txn(ctx).Then(clientv3.OpPut("\x01synod/x", "y")).Commit(); return err },
		"txn else del": func() error {
			_, err := cli.Txn(ctx).Else(clientv3.OpDelete("\x01synod/limit/api/def")).Commit()
			return err
		},
	} {
		if err := op(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s of reserved keys: got %v, want InvalidArgument", what, err)
		}
	}
	if g := get(t, cli, "\x01synod/limit/", clientv3.WithPrefix()); len(g.Kvs) != 1 {
		t.Fatalf("read of the limits' keys: got %d keys, want the definition", len(g.Kvs))
	}
	put(t, cli, "a", "1")
	if _, err := cli.Delete(ctx, "a", clientv3.WithFromKey()); err != nil {
		t.Fatalf("a from-key delete of printable keys: %v", err)
	}
}

// TestBatchIsAllOrNothing takes from two limits at once: when one refuses,
// the other gives nothing.
func TestBatchIsAllOrNothing(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	l := limitsOf(c.Client(c.Followers(c.WaitLeader())[0]))
	ctx := testcluster.Context(t, 10*time.Second)
	for _, def := range []*synodpb.Limit{
		{Name: "per-user", Limit: 1, PeriodMs: 3_600_000, Burst: 10},
		{Name: "per-tenant", Algorithm: synodpb.Limit_FIXED_WINDOW, Limit: 3, PeriodMs: 3_600_000},
	} {
		if _, err := l.SetLimit(ctx, &synodpb.SetLimitRequest{Limit: def}); err != nil {
			t.Fatal(err)
		}
	}
	both := func(cost int64) *synodpb.TakeRequest {
		return &synodpb.TakeRequest{Items: []*synodpb.TakeItem{
			{Limit: "per-user", Key: []byte("u1"), Cost: cost},
			{Limit: "per-tenant", Key: []byte("t1"), Cost: cost},
		}}
	}
	if r := take(t, l, both(2)); !r.Allowed || r.Decisions[0].Remaining != 8 || r.Decisions[1].Remaining != 1 {
		t.Fatalf("first batch: got %v", r)
	}
	// 2 more fit per-user, not per-tenant: refused whole.
	r := take(t, l, both(2))
	if r.Allowed || !r.Decisions[0].Allowed || r.Decisions[1].Allowed {
		t.Fatalf("batch over one limit: got %v, want refused, per-user alone allowed", r)
	}
	if p := take(t, l, &synodpb.TakeRequest{Peek: true, Items: []*synodpb.TakeItem{{Limit: "per-user", Key: []byte("u1"), Cost: 1}}}); p.Decisions[0].Remaining != 7 {
		t.Fatalf("per-user after the refused batch: remaining %d after peeking 1, want 7 (nothing taken)", p.Decisions[0].Remaining)
	}
	// The same key twice in a batch adds up.
	r = take(t, l, &synodpb.TakeRequest{Items: []*synodpb.TakeItem{{Limit: "per-tenant", Key: []byte("t1")}, {Limit: "per-tenant", Key: []byte("t1")}}})
	if r.Allowed {
		t.Fatalf("two of the one token left: got %v, want refused", r)
	}
}

// TestPermitFreedByLeaseExpiry holds the only permit of a concurrency
// limit on a lease nobody renews: a waiting Acquire gets it once the lease
// expires.
func TestPermitFreedByLeaseExpiry(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader()
	l := limitsOf(c.Client(c.Followers(leader)[0]))
	ctx := testcluster.Context(t, 30*time.Second)
	if _, err := l.SetLimit(ctx, &synodpb.SetLimitRequest{Limit: &synodpb.Limit{Name: "jobs", Algorithm: synodpb.Limit_CONCURRENCY, Max: 1}}); err != nil {
		t.Fatal(err)
	}
	first, err := l.Acquire(ctx, &synodpb.AcquireRequest{Limit: "jobs", Key: []byte("k"), Ttl: 2})
	if err != nil || !first.Acquired || first.Lease == 0 {
		t.Fatalf("first acquire: got %v, %v", first, err)
	}
	busy, err := l.Acquire(ctx, &synodpb.AcquireRequest{Limit: "jobs", Key: []byte("k"), Ttl: 30})
	if err != nil || busy.Acquired || busy.Held != 1 {
		t.Fatalf("second acquire without waiting: got %v, %v; want refused, 1 held", busy, err)
	}
	start := time.Now()
	second, err := l.Acquire(ctx, &synodpb.AcquireRequest{Limit: "jobs", Key: []byte("k"), Lease: busy.Lease, WaitMs: 20_000})
	if err != nil || !second.Acquired {
		t.Fatalf("waiting acquire: got %v, %v; want the permit once the first lease expired", second, err)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Fatalf("waited %s for a permit on a 2 s lease", waited)
	}
	// The owner is the leader of the limits' range: the leader now, which
	// a loaded machine may have changed since the start.
	waitFor(t, 10*time.Second, "stats from the owner", func() (bool, string) {
		st, err := l.LimitStats(ctx, &synodpb.LimitStatsRequest{Name: "jobs"})
		now := c.WaitLeader()
		return err == nil && st.Permits == 1 && st.Owner == now.Server().MemberID(),
			fmt.Sprintf("got %v, %v; want 1 permit held, owner the leader (%s)", st, err, now.Name)
	})
	if rel, err := l.Release(ctx, &synodpb.ReleaseRequest{Limit: "jobs", Key: []byte("k"), Permit: second.Permit}); err != nil || !rel.Released {
		t.Fatalf("release: got %v, %v", rel, err)
	}
	if a, err := l.Acquire(ctx, &synodpb.AcquireRequest{Limit: "jobs", Key: []byte("k"), Lease: busy.Lease}); err != nil || !a.Acquired {
		t.Fatalf("acquire after release: got %v, %v", a, err)
	}
}

// TestOwnerCrashAdmitsNoMore takes from keys through the owner, crashes
// it, and takes again through the new one: what the first owner allowed
// (checkpointed or not) is never allowed again, and the new owner answers
// within an election or two.
func TestOwnerCrashAdmitsNoMore(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader()
	l := limitsOf(c.Client(leader))
	ctx := testcluster.Context(t, 30*time.Second)
	if _, err := l.SetLimit(ctx, &synodpb.SetLimitRequest{Limit: &synodpb.Limit{Name: "api", Limit: 1, PeriodMs: 3_600_000, Burst: 40}}); err != nil {
		t.Fatal(err)
	}
	// Key a: all 40; key b: 10 of 40, one at a time (the last ones
	// answered before any checkpoint of them).
	if r := take(t, l, one("api", "a", 40)); !r.Allowed {
		t.Fatalf("take 40 of a: %v", r)
	}
	for range 10 {
		if r := take(t, l, one("api", "b", 1)); !r.Allowed {
			t.Fatalf("take of b: %v", r)
		}
	}
	leader.Crash()
	next := c.WaitLeader()
	l2 := limitsOf(c.Client(next))
	start := time.Now()
	if r := take(t, l2, one("api", "a", 1)); r.Allowed || r.Decisions[0].Unavailable {
		t.Fatalf("key a after the crash: got %v, want refused by the new owner", r.Decisions[0])
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the new owner answered after %s", d)
	}
	allowed := 0
	for range 40 {
		if take(t, l2, one("api", "b", 1)).Allowed {
			allowed++
		}
	}
	// 30 were left; the new owner charges b its allowance (4: a tenth of
	// the burst) for what the old one may have answered unrecorded.
	if allowed > 30 || allowed < 26 {
		t.Fatalf("key b after the crash: %d more allowed, want 26 to 30 (30 left, minus at most the allowance of 4)", allowed)
	}
}

// TestLocalModeShares takes from a LOCAL limit through every node: nodes
// decide from shares the owner grants and counts as taken, so the nodes
// together never allow more than the limit, and once the shares are given
// back (unused for a while) every token can be had.
func TestLocalModeShares(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader()
	var clients []synodpb.LimitsClient
	for _, n := range c.Nodes() {
		clients = append(clients, limitsOf(c.Client(n)))
	}
	follower := limitsOf(c.Client(c.Followers(leader)[0]))
	owner := limitsOf(c.Client(leader))
	ctx := testcluster.Context(t, 30*time.Second)
	const burst = 3000
	if _, err := owner.SetLimit(ctx, &synodpb.SetLimitRequest{Limit: &synodpb.Limit{
		Name: "loc", Mode: synodpb.Limit_LOCAL, Limit: 1, PeriodMs: 3_600_000, Burst: burst, LocalSharePercent: 30,
	}}); err != nil {
		t.Fatal(err)
	}
	var total int64
	// A new owner grants shares only once those of its predecessor may
	// have lapsed; then the follower holds one.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if take(t, follower, one("loc", "k", 1)).Allowed {
			total++
		}
		st, err := owner.LimitStats(ctx, &synodpb.LimitStatsRequest{Name: "loc"})
		if err != nil {
			t.Fatal(err)
		}
		if st.OverAdmissionBound > 0 {
			if st.OverAdmissionBound > burst*30/100 {
				t.Fatalf("shares outstanding %d, above 30%% of %d", st.OverAdmissionBound, burst)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no share was granted to the follower")
		}
	}
	// Through every node until each is refused: never more than the burst.
	refused := map[int]bool{}
	for i := 0; len(refused) < 3; i = (i + 1) % 3 {
		if refused[i] {
			continue
		}
		if take(t, clients[i], one("loc", "k", 10)).Allowed {
			total += 10
		} else {
			refused[i] = true
		}
		if total > burst {
			t.Fatalf("the nodes allowed %d, above the burst of %d", total, burst)
		}
	}
	// Unused shares come back; then the rest can be taken, to the token.
	deadline = time.Now().Add(10 * time.Second)
	for {
		st, err := owner.LimitStats(ctx, &synodpb.LimitStatsRequest{Name: "loc"})
		if err != nil {
			t.Fatal(err)
		}
		if st.OverAdmissionBound == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("shares still outstanding: %d", st.OverAdmissionBound)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	for take(t, owner, one("loc", "k", 1)).Allowed {
		total++
	}
	if total != burst {
		t.Fatalf("allowed %d in all, want exactly the burst of %d", total, burst)
	}
}

// TestFailOpenAndClosed cuts a node off: its requests get no decision in
// time, and each limit answers them as it says.
func TestFailOpenAndClosed(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader()
	f := c.Followers(leader)[0]
	l := limitsOf(c.Client(f))
	ctx := testcluster.Context(t, 30*time.Second)
	for _, def := range []*synodpb.Limit{
		{Name: "open", Limit: 100, PeriodMs: 1000, FailOpen: true, TimeoutMs: 300},
		{Name: "closed", Limit: 100, PeriodMs: 1000, TimeoutMs: 300},
	} {
		if _, err := l.SetLimit(ctx, &synodpb.SetLimitRequest{Limit: def}); err != nil {
			t.Fatal(err)
		}
	}
	c.Isolate(f)
	for name, allowed := range map[string]bool{"open": true, "closed": false} {
		start := time.Now()
		r := take(t, l, one(name, "k", 1))
		if d := r.Decisions[0]; r.Allowed != allowed || !d.Unavailable {
			t.Fatalf("%s, cut off: got %v, want allowed %v, unavailable", name, d, allowed)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("%s: answered after %s, timeout 300ms", name, took)
		}
	}
	c.Heal()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := take(t, l, one("closed", "k", 1))
		if r.Allowed && !r.Decisions[0].Unavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after healing: still %v", r.Decisions[0])
		}
	}
}

// TestLimitChangeReachesEveryNode changes a limit every node has in use
// and checks, through each node, that its decisions follow the new
// definition: the issue promises it within a second, through a watch; the
// test allows a few seconds and logs how long each node took.
func TestLimitChangeReachesEveryNode(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	nodes := c.Nodes()
	var clients []synodpb.LimitsClient
	for _, n := range nodes {
		clients = append(clients, limitsOf(c.Client(n)))
	}
	ctx := testcluster.Context(t, 60*time.Second)
	set := func(l *synodpb.Limit) {
		t.Helper()
		if _, err := clients[0].SetLimit(ctx, &synodpb.SetLimitRequest{Limit: l}); err != nil {
			t.Fatalf("set %v: %v", l, err)
		}
	}
	set(&synodpb.Limit{Name: "chg", Limit: 1, PeriodMs: 3_600_000, Burst: 3})
	// Every node knows the definition before the change (a node that knew
	// none would read it afresh; the change must reach one that holds it).
	for i, l := range clients {
		if r := take(t, l, one("chg", "warm", 1)); !r.Allowed || r.Decisions[0].Limit != 3 {
			t.Fatalf("node %d, before the change: got %v, want allowed of a burst of 3", i, r.Decisions[0])
		}
	}
	const deadline = 5 * time.Second
	// until polls try through node i until it reports done, and logs how
	// long after the change that was.
	until := func(what string, i int, start time.Time, try func(attempt int) bool) {
		t.Helper()
		for attempt := 0; !try(attempt); attempt++ {
			if time.Since(start) > deadline {
				t.Fatalf("node %d (%s): %s not seen after %s", i, nodes[i].Name, what, deadline)
			}
			time.Sleep(10 * time.Millisecond) // polling interval
		}
		t.Logf("node %d (%s): %s seen %s after the change", i, nodes[i].Name, what, time.Since(start).Round(time.Millisecond))
	}

	// A larger burst. A node checks a cost against the capacity it knows
	// before it asks the owner: a cost of 8 is refused as invalid by a
	// node (or owner) that still has a burst of 3, so an answer means this
	// node has the new definition.
	set(&synodpb.Limit{Name: "chg", Limit: 1, PeriodMs: 3_600_000, Burst: 10})
	start := time.Now()
	for i, l := range clients {
		key := fmt.Sprintf("raised-%d", i)
		until("burst 10", i, start, func(int) bool {
			r, err := l.Take(ctx, one("chg", key, 8))
			if status.Code(err) == codes.InvalidArgument {
				return false // the old burst: nothing taken
			}
			if err != nil {
				t.Fatalf("node %d: take 8: %v", i, err)
			}
			if d := r.Decisions[0]; !r.Allowed || d.Remaining != 2 || d.Limit != 10 {
				t.Fatalf("node %d: take 8 of a burst of 10: got %v, want allowed, 2 remaining, limit 10", i, d)
			}
			return true
		})
	}

	// A lower rate and burst: 2 tokens, then one every 15 minutes. Each
	// node, on a key of its own, gets the burst of 2, then a refusal to
	// retry in 15 minutes, not the hour of the old rate.
	set(&synodpb.Limit{Name: "chg", Limit: 4, PeriodMs: 3_600_000, Burst: 2})
	start = time.Now()
	for i, l := range clients {
		var key string
		until("burst 2 at 4 an hour", i, start, func(attempt int) bool {
			key = fmt.Sprintf("lowered-%d-%d", i, attempt) // a fresh key each time
			r := take(t, l, one("chg", key, 1))
			if d := r.Decisions[0]; d.Limit != 2 {
				return false // the old definition, at the owner
			} else if !r.Allowed || d.Remaining != 1 {
				t.Fatalf("node %d: first token of a burst of 2: got %v, want allowed, 1 remaining", i, d)
			}
			return true
		})
		if r := take(t, l, one("chg", key, 1)); !r.Allowed || r.Decisions[0].Remaining != 0 {
			t.Fatalf("node %d: second token of a burst of 2: got %v, want allowed, 0 remaining", i, r.Decisions[0])
		}
		r := take(t, l, one("chg", key, 1))
		if d := r.Decisions[0]; r.Allowed || d.Limit != 2 || d.RetryAfterMs < 899_000 || d.RetryAfterMs > 900_000 {
			t.Fatalf("node %d: third token of a burst of 2: got %v, want refused, retry after about 900000 ms (4 an hour), limit 2", i, d)
		}
	}
}

// scrape reads a node's /metrics: each sample's value by its series as
// the text format writes it (name{label="value",...}, labels sorted).
func scrape(t *testing.T, n *testcluster.Node) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.Server().HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics of %s: got status %d, %v", n.Name, resp.StatusCode, err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("/metrics of %s: bad line %q", n.Name, line)
		}
		out[line[:i]] = v
	}
	return out
}

// TestLimitMetrics reads the synod_limit_* metrics from /metrics: a node
// counts the decisions it answered by limit and outcome (allowed, refused,
// would_refuse, failed_open, failed_closed; peeks are not decisions) and
// the requests it forwarded to the owner; the owner counts its takeover
// and checkpoints, and exports the keys it holds and the over-admission
// bound per limit, which no other node does.
func TestLimitMetrics(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *server.Config) { cfg.MetricsAddr = "127.0.0.1:0" }})
	leader := c.WaitLeader()
	f := c.Followers(leader)[0]
	l := limitsOf(c.Client(f))
	ctx := testcluster.Context(t, 30*time.Second)
	for _, def := range []*synodpb.Limit{
		{Name: "m", Limit: 1, PeriodMs: 3_600_000, Burst: 2},
		{Name: "sh", Limit: 1, PeriodMs: 3_600_000, Burst: 1, Mode: synodpb.Limit_SHADOW},
		{Name: "open", Limit: 100, PeriodMs: 1000, FailOpen: true, TimeoutMs: 300},
		{Name: "closed", Limit: 100, PeriodMs: 1000, TimeoutMs: 300},
	} {
		if _, err := l.SetLimit(ctx, &synodpb.SetLimitRequest{Limit: def}); err != nil {
			t.Fatal(err)
		}
	}
	// Outcomes as the answers give them, to compare with the counts.
	want := map[string]float64{}
	outcome := func(name string, r *synodpb.TakeResponse) {
		d := r.Decisions[0]
		o := "refused"
		switch {
		case d.Unavailable && d.Allowed:
			o = "failed_open"
		case d.Unavailable:
			o = "failed_closed"
		case d.WouldRefuse:
			o = "would_refuse"
		case r.Allowed:
			o = "allowed"
		}
		want[`synod_limit_decisions_total{limit="`+name+`",outcome="`+o+`"}`]++
	}
	sent := 0
	for _, name := range []string{"m", "m", "m", "sh", "sh"} {
		outcome(name, take(t, l, one(name, "k", 1)))
		sent++
	}
	take(t, l, &synodpb.TakeRequest{Peek: true, Items: []*synodpb.TakeItem{{Limit: "m", Key: []byte("k")}}})
	sent++
	// The answers themselves: two of m's burst of 2, one refused; sh's
	// second would have been refused.
	for series, n := range map[string]float64{
		`synod_limit_decisions_total{limit="m",outcome="allowed"}`:       2,
		`synod_limit_decisions_total{limit="m",outcome="refused"}`:       1,
		`synod_limit_decisions_total{limit="sh",outcome="allowed"}`:      1,
		`synod_limit_decisions_total{limit="sh",outcome="would_refuse"}`: 1,
	} {
		if want[series] != n {
			t.Fatalf("answers: got %v, want %s %v", want, series, n)
		}
	}

	fm := scrape(t, f)
	for series, n := range want {
		if got, ok := fm[series]; !ok || got != n {
			t.Errorf("follower: got %s %v (present %v), want %v", series, got, ok, n)
		}
	}
	if got := fm["synod_limit_forwarded_total"]; got < float64(sent) {
		t.Errorf("follower: got synod_limit_forwarded_total %v, want at least the %d requests it sent the owner", got, sent)
	}
	if got := fm["synod_limit_forward_batches_total"]; got < 1 || got > fm["synod_limit_forwarded_total"] {
		t.Errorf("follower: got synod_limit_forward_batches_total %v, want 1 to synod_limit_forwarded_total (%v)", got, fm["synod_limit_forwarded_total"])
	}
	for series := range fm {
		if strings.HasPrefix(series, "synod_limit_keys{") || strings.HasPrefix(series, "synod_limit_over_admission_bound{") {
			t.Errorf("follower: got %s, want the owner's gauges on the owner only", series)
		}
	}

	lm := scrape(t, leader)
	for series, n := range map[string]float64{
		// One key of each limit taken from.
		`synod_limit_keys{limit="m"}`:  1,
		`synod_limit_keys{limit="sh"}`: 1,
		// Strict limits hand out no shares.
		`synod_limit_over_admission_bound{limit="m"}`: 0,
	} {
		if got, ok := lm[series]; !ok || got != n {
			t.Errorf("owner: got %s %v (present %v), want %v", series, got, ok, n)
		}
	}
	// A key is allowed nothing before its first checkpoint: m's and sh's
	// first tokens each waited for one.
	if got := lm["synod_limit_owner_moves_total"]; got < 1 {
		t.Errorf("owner: got synod_limit_owner_moves_total %v, want at least its takeover", got)
	}
	if got := lm["synod_limit_checkpoints_total"]; got < 1 {
		t.Errorf("owner: got synod_limit_checkpoints_total %v, want at least 1", got)
	}
	if got := lm["synod_limit_checkpoint_entries_total"]; got < 2 {
		t.Errorf("owner: got synod_limit_checkpoint_entries_total %v, want at least 2 (m's and sh's key)", got)
	}
	for series := range lm {
		if strings.HasPrefix(series, "synod_limit_decisions_total{") {
			t.Errorf("owner: got %s, want none: it answered no client (it decided for the follower, which counts)", series)
		}
	}

	// Cut off from the owner, the follower answers as each limit says.
	c.Isolate(f)
	for _, name := range []string{"open", "closed"} {
		r := take(t, l, one(name, "k", 1))
		if !r.Decisions[0].Unavailable {
			t.Fatalf("%s, cut off: got %v, want unavailable", name, r.Decisions[0])
		}
		outcome(name, r)
	}
	fm = scrape(t, f)
	for _, series := range []string{
		`synod_limit_decisions_total{limit="open",outcome="failed_open"}`,
		`synod_limit_decisions_total{limit="closed",outcome="failed_closed"}`,
	} {
		if got := fm[series]; want[series] != 1 || got != 1 {
			t.Errorf("follower cut off: got %s %v (answers %v), want 1", series, got, want[series])
		}
	}
	c.Heal()
}
