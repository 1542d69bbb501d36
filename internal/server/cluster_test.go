package server_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/internal/replica"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// Every test runs in parallel (-parallel at a time, GOMAXPROCS by
// default) with its own cluster, on ports the system picks. Tests that
// mostly wait (on elections, lease TTLs, timeouts or refused joins) call
// t.Parallel: they use little CPU. The others call busyParallel.

// busyTurn is held by the test of the package that runs busyParallel's
// kind of test (see there).
var busyTurn = make(chan struct{}, 1)

// busyParallel is t.Parallel for a test that keeps the CPU busy (writers
// and readers as fast as they go, megabytes of watch events, concurrent
// admin calls, snapshots) or that keeps a lease of a second or two alive or
// times an answer: such tests take turns, and each runs next to tests that
// wait, never next to another one. Two busy tests at once gain nothing on
// two cores while CI runs another package next to them, and under that load
// elections time out ("no leader", "too many requests") and timed answers
// come late. The turn is held until t ends, after its cluster has shut down
// (cleanups run last first).
func busyParallel(t *testing.T) {
	t.Helper()
	t.Parallel()
	busyTurn <- struct{}{}
	t.Cleanup(func() { <-busyTurn })
}

func put(t *testing.T, c *clientv3.Client, k, v string) *clientv3.PutResponse {
	t.Helper()
	resp, err := c.Put(testcluster.Context(t, 10*time.Second), k, v)
	if err != nil {
		t.Fatalf("put %q: %v", k, err)
	}
	return resp
}

func get(t *testing.T, c *clientv3.Client, k string, opts ...clientv3.OpOption) *clientv3.GetResponse {
	t.Helper()
	resp, err := c.Get(testcluster.Context(t, 10*time.Second), k, opts...)
	if err != nil {
		t.Fatalf("get %q: %v", k, err)
	}
	return resp
}

func keysOf(kvs []*mvccpb.KeyValue) string {
	var ks []string
	for _, kv := range kvs {
		ks = append(ks, string(kv.Key))
	}
	return strings.Join(ks, ",")
}

func TestKVThroughEtcdClient(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	cli := c.Client()

	if g := get(t, cli, "anything"); g.Header.Revision != 1 {
		t.Fatalf("revision of an empty store: got %d, want 1 (as etcd)", g.Header.Revision)
	}
	r1 := put(t, cli, "fruit/apple", "red")
	if r1.Header.Revision != 2 {
		t.Fatalf("revision of the first write: got %d, want 2 (as etcd)", r1.Header.Revision)
	}
	put(t, cli, "fruit/banana", "yellow")
	put(t, cli, "fruit/cherry", "dark-red")
	put(t, cli, "veg/leek", "green")
	r5 := put(t, cli, "fruit/apple", "green")
	// Revisions may have gaps (a change of leader): above, not +4.
	if r5.Header.Revision <= r1.Header.Revision+3 {
		t.Fatalf("revision after 5 puts: got %d, want above %d", r5.Header.Revision, r1.Header.Revision+3)
	}
	if r5.Header.ClusterId == 0 || r5.Header.MemberId == 0 || r5.Header.RaftTerm == 0 {
		t.Fatalf("response header incomplete: %+v", r5.Header)
	}

	g := get(t, cli, "fruit/apple")
	if len(g.Kvs) != 1 || string(g.Kvs[0].Value) != "green" || g.Kvs[0].Version != 2 ||
		g.Kvs[0].CreateRevision != r1.Header.Revision || g.Kvs[0].ModRevision != r5.Header.Revision {
		t.Fatalf("get apple: got %+v", g.Kvs)
	}
	// Old revision.
	if g := get(t, cli, "fruit/apple", clientv3.WithRev(r1.Header.Revision)); string(g.Kvs[0].Value) != "red" {
		t.Fatalf("get apple at rev %d: got %q, want red", r1.Header.Revision, g.Kvs[0].Value)
	}
	// Prefix, count, limit, more.
	g = get(t, cli, "fruit/", clientv3.WithPrefix(), clientv3.WithLimit(2))
	if got := keysOf(g.Kvs); got != "fruit/apple,fruit/banana" || g.Count != 3 || !g.More {
		t.Fatalf("prefix limit 2: got %s count %d more %v", got, g.Count, g.More)
	}
	// Sort by value descending.
	g = get(t, cli, "fruit/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByValue, clientv3.SortDescend))
	if got := keysOf(g.Kvs); got != "fruit/banana,fruit/apple,fruit/cherry" {
		t.Fatalf("sort by value desc: got %s", got)
	}
	// Sort by create revision, as concurrency.Mutex does (WithFirstCreate).
	g = get(t, cli, "fruit/", clientv3.WithFirstCreate()...)
	if got := keysOf(g.Kvs); got != "fruit/apple" {
		t.Fatalf("first create: got %s, want fruit/apple", got)
	}
	// From key, keys only, count only.
	g = get(t, cli, "fruit/b", clientv3.WithFromKey(), clientv3.WithKeysOnly())
	if got := keysOf(g.Kvs); got != "fruit/banana,fruit/cherry,veg/leek" || len(g.Kvs[0].Value) != 0 {
		t.Fatalf("from key, keys only: got %s", got)
	}
	if g := get(t, cli, "", clientv3.WithPrefix(), clientv3.WithCountOnly()); g.Count != 4 || len(g.Kvs) != 0 {
		t.Fatalf("count only over everything: got count %d kvs %d", g.Count, len(g.Kvs))
	}
	// Serializable read.
	if g := get(t, cli, "veg/leek", clientv3.WithSerializable()); len(g.Kvs) != 1 {
		t.Fatalf("serializable get: got %d kvs, want 1", len(g.Kvs))
	}

	// Delete with prev kv.
	d, err := cli.Delete(testcluster.Context(t, 5*time.Second), "fruit/", clientv3.WithPrefix(), clientv3.WithPrevKV())
	if err != nil {
		t.Fatal(err)
	}
	if d.Deleted != 3 || len(d.PrevKvs) != 3 {
		t.Fatalf("delete prefix: got deleted %d prev %d, want 3 and 3", d.Deleted, len(d.PrevKvs))
	}
	if g := get(t, cli, "fruit/", clientv3.WithPrefix()); len(g.Kvs) != 0 {
		t.Fatalf("after delete: got %s", keysOf(g.Kvs))
	}
	// History is still readable below the delete.
	if g := get(t, cli, "fruit/", clientv3.WithPrefix(), clientv3.WithRev(d.Header.Revision-1)); len(g.Kvs) != 3 {
		t.Fatalf("before delete: got %d keys, want 3", len(g.Kvs))
	}
	if g := get(t, cli, "fruit/apple", clientv3.WithRev(d.Header.Revision)); len(g.Kvs) != 0 {
		t.Fatalf("tombstone visible at delete revision")
	}
}

func TestTxnCompareTargets(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	cli := c.Client()
	r := put(t, cli, "k", "v1")
	rev := r.Header.Revision
	ctx := testcluster.Context(t, 10*time.Second)

	cases := []struct {
		name string
		cmp  clientv3.Cmp
		want bool
	}{
		{"value equal", clientv3.Compare(clientv3.Value("k"), "=", "v1"), true},
		{"value not equal", clientv3.Compare(clientv3.Value("k"), "!=", "v1"), false},
		{"value greater", clientv3.Compare(clientv3.Value("k"), ">", "v0"), true},
		{"value less", clientv3.Compare(clientv3.Value("k"), "<", "v0"), false},
		{"version equal", clientv3.Compare(clientv3.Version("k"), "=", 1), true},
		{"version greater", clientv3.Compare(clientv3.Version("k"), ">", 1), false},
		{"create equal", clientv3.Compare(clientv3.CreateRevision("k"), "=", rev), true},
		{"create less", clientv3.Compare(clientv3.CreateRevision("k"), "<", rev), false},
		{"mod equal", clientv3.Compare(clientv3.ModRevision("k"), "=", rev), true},
		{"mod not equal", clientv3.Compare(clientv3.ModRevision("k"), "!=", rev), false},
		{"lease equal", clientv3.Compare(clientv3.LeaseValue("k"), "=", clientv3.NoLease), true},
		{"missing key create is 0", clientv3.Compare(clientv3.CreateRevision("missing"), "=", 0), true},
		{"missing key value fails", clientv3.Compare(clientv3.Value("missing"), "=", ""), false},
	}
	for _, tc := range cases {
		resp, err := cli.Txn(ctx).If(tc.cmp).Then(clientv3.OpGet("k")).Else(clientv3.OpGet("missing")).Commit()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if resp.Succeeded != tc.want {
			t.Errorf("%s: got succeeded %v, want %v", tc.name, resp.Succeeded, tc.want)
		}
	}

	// A compare-and-swap: exactly one of two concurrent swaps wins.
	var wg sync.WaitGroup
	wins := make(chan string, 2)
	for _, who := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := cli.Txn(ctx).
				If(clientv3.Compare(clientv3.ModRevision("k"), "=", rev)).
				Then(clientv3.OpPut("k", who)).Commit()
			if err == nil && resp.Succeeded {
				wins <- who
			}
		}()
	}
	wg.Wait()
	close(wins)
	if n := len(wins); n != 1 {
		t.Fatalf("winners of compare-and-swap: got %d, want 1", n)
	}

	// Range compare over a prefix and nested txn.
	put(t, cli, "p/1", "x")
	put(t, cli, "p/2", "x")
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Value("p/"), "=", "x").WithPrefix()).
		Then(clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Version("p/1"), "=", 1)},
			[]clientv3.Op{clientv3.OpPut("nested", "yes")}, nil)).
		Commit()
	if err != nil || !resp.Succeeded {
		t.Fatalf("prefix compare with nested txn: %v %v", resp, err)
	}
	if g := get(t, cli, "nested"); len(g.Kvs) != 1 {
		t.Fatalf("nested txn put missing")
	}
}

// wantErr checks that err is the etcd error want, with its gRPC code, as
// clientv3 reports it (it turns known server errors into EtcdError).
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got no error, want %v", what, want)
	}
	w := status.Convert(want)
	code, msg := status.Code(err), status.Convert(err).Message()
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code, msg = ee.Code(), ee.Error()
	}
	if code != w.Code() || msg != w.Message() {
		t.Fatalf("%s: got %q (%s), want %q (%s)", what, msg, code, w.Message(), w.Code())
	}
}

func TestBadInputGetsEtcdErrors(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.MaxRequestBytes = 64 * 1024
		cfg.MaxTxnOps = 4
	}})
	c.WaitLeader()
	cli := c.Client()
	ctx := testcluster.Context(t, 20*time.Second)
	put(t, cli, "a", "1")
	r := put(t, cli, "a", "2")

	_, err := cli.Put(ctx, "", "v")
	wantErr(t, "put empty key", err, rpctypes.ErrGRPCEmptyKey)
	_, err = cli.Get(ctx, "")
	wantErr(t, "get empty key", err, rpctypes.ErrGRPCEmptyKey)
	_, err = cli.Put(ctx, "big", strings.Repeat("x", 70*1024))
	wantErr(t, "put over the request limit", err, rpctypes.ErrGRPCRequestTooLarge)
	_, err = cli.Put(ctx, "huge", strings.Repeat("x", 2<<20))
	if code := status.Code(err); code != codes.ResourceExhausted && code != codes.InvalidArgument {
		t.Fatalf("put far over the limit: got %v, want ResourceExhausted", err)
	}
	var ops []clientv3.Op
	for i := 0; i < 5; i++ {
		ops = append(ops, clientv3.OpPut(fmt.Sprintf("t%d", i), "v"))
	}
	_, err = cli.Txn(ctx).Then(ops...).Commit()
	wantErr(t, "txn over max ops", err, rpctypes.ErrGRPCTooManyOps)
	_, err = cli.Txn(ctx).Then(clientv3.OpPut("d", "1"), clientv3.OpPut("d", "2")).Commit()
	wantErr(t, "txn with duplicate key", err, rpctypes.ErrGRPCDuplicateKey)
	_, err = cli.Get(ctx, "a", clientv3.WithRev(r.Header.Revision+100))
	wantErr(t, "get future revision", err, rpctypes.ErrGRPCFutureRev)
	_, err = cli.Put(ctx, "a", "v", clientv3.WithLease(12345))
	wantErr(t, "put with unknown lease", err, rpctypes.ErrGRPCLeaseNotFound)
	_, err = cli.Put(ctx, "nokey", "", clientv3.WithIgnoreValue())
	wantErr(t, "ignore value on missing key", err, rpctypes.ErrGRPCKeyNotFound)

	// Compaction.
	if _, err := cli.Compact(ctx, r.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}
	_, err = cli.Get(ctx, "a", clientv3.WithRev(r.Header.Revision-1))
	wantErr(t, "get below compaction", err, rpctypes.ErrGRPCCompacted)
	if g := get(t, cli, "a", clientv3.WithRev(r.Header.Revision)); string(g.Kvs[0].Value) != "2" {
		t.Fatalf("get at compaction revision: got %q, want 2", g.Kvs[0].Value)
	}
	_, err = cli.Compact(ctx, r.Header.Revision)
	wantErr(t, "compact again at the same revision", err, rpctypes.ErrGRPCCompacted)
	_, err = cli.Compact(ctx, r.Header.Revision+100)
	wantErr(t, "compact a future revision", err, rpctypes.ErrGRPCFutureRev)

	// After all that, the cluster still serves.
	put(t, cli, "still", "ok")
	if g := get(t, cli, "still"); len(g.Kvs) != 1 {
		t.Fatalf("cluster stopped serving after bad input")
	}
}

// TestFollowerReadsAreLinearizable writes through the leader and reads each
// value back at once through a client bound to a follower.
func TestFollowerReadsAreLinearizable(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader()
	w := c.Client(leader)
	for _, f := range c.Followers(leader) {
		r := c.Client(f)
		for i := 0; i < 50; i++ {
			v := fmt.Sprintf("%s-%d", f.Name, i)
			put(t, w, "lin", v)
			if g := get(t, r, "lin"); len(g.Kvs) != 1 || string(g.Kvs[0].Value) != v {
				t.Fatalf("read through %s after write %d: got %v, want %q", f.Name, i, g.Kvs, v)
			}
		}
		// Writes sent to a follower are forwarded and acknowledged there.
		put(t, r, "via-follower", f.Name)
		if g := get(t, w, "via-follower"); string(g.Kvs[0].Value) != f.Name {
			t.Fatalf("write through follower %s: read back %q", f.Name, g.Kvs[0].Value)
		}
	}
}

func writeKeys(t *testing.T, cli *clientv3.Client, prefix string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		put(t, cli, fmt.Sprintf("%s%04d", prefix, i), "v")
	}
}

func checkKeys(t *testing.T, cli *clientv3.Client, prefix string, n int) {
	t.Helper()
	g := get(t, cli, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if g.Count != int64(n) {
		t.Fatalf("keys under %q: got %d, want %d", prefix, g.Count, n)
	}
}

func TestAcknowledgedWritesSurviveLeaderCrash(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader()
	cli := c.Client()
	writeKeys(t, cli, "before/", 100)
	leader.Crash()
	newLeader := c.WaitLeader()
	if newLeader == leader {
		t.Fatalf("crashed node is still leader")
	}
	checkKeys(t, c.Client(newLeader), "before/", 100)
	writeKeys(t, c.Client(newLeader), "during/", 20)
	leader.Restart()
	c.WaitLeader()
	checkKeys(t, c.Client(leader), "before/", 100)
	checkKeys(t, c.Client(leader), "during/", 20)
}

func TestAcknowledgedWritesSurviveCrashOfAllNodes(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	cli := c.Client()
	// Concurrent writers, so that many writes share fsyncs.
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[string]bool{}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				k := fmt.Sprintf("w%d/%d", w, i)
				if _, err := cli.Put(context.Background(), k, "v"); err == nil {
					mu.Lock()
					acked[k] = true
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(acked) != 200 {
		t.Fatalf("acknowledged writes: got %d, want 200", len(acked))
	}
	for _, n := range c.Nodes() {
		n.Crash()
	}
	for _, n := range c.Nodes() {
		n.Restart()
	}
	c.WaitLeader()
	for _, n := range c.Nodes() {
		g := get(t, c.Client(n), "w", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		found := map[string]bool{}
		for _, kv := range g.Kvs {
			found[string(kv.Key)] = true
		}
		for k := range acked {
			if !found[k] {
				t.Fatalf("node %s lost acknowledged write %q", n.Name, k)
			}
		}
	}
}

func TestStoppedFollowerCatchesUpBySnapshot(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{LogTruncateThreshold: 50, LogKeepEntries: 5})
	leader := c.WaitLeader()
	lagging := c.Followers(leader)[0]
	lagging.Stop()
	cli := c.Client(leader)
	writeKeys(t, cli, "snap/", 300)
	lagging.Restart()
	// The restarted node must catch up although the entries it missed are
	// gone from every log.
	cl := c.Client(lagging)
	deadline := time.Now().Add(15 * time.Second)
	for {
		g, err := cl.Get(testcluster.Context(t, 5*time.Second), "snap/", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithSerializable())
		if err == nil && g.Count == 300 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lagging follower did not catch up: %v %v", g, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, err := cl.Status(testcluster.Context(t, 5*time.Second), lagging.ClientAddr)
	if err != nil {
		t.Fatal(err)
	}
	lst, err := cli.Status(testcluster.Context(t, 5*time.Second), leader.ClientAddr)
	if err != nil {
		t.Fatal(err)
	}
	if st.Header.Revision != lst.Header.Revision {
		t.Fatalf("revision of caught-up follower: got %d, want %d", st.Header.Revision, lst.Header.Revision)
	}
}

func TestMembersAndStatus(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader()
	cli := c.Client()
	ctx := testcluster.Context(t, 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ml, err := cli.MemberList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		published := 0
		for _, m := range ml.Members {
			if m.Name != "" && len(m.ClientURLs) == 1 && len(m.PeerURLs) == 1 {
				published++
			}
		}
		if len(ml.Members) != 3 {
			t.Fatalf("members: got %d, want 3", len(ml.Members))
		}
		if published == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members did not publish their client URLs: %v", ml.Members)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, n := range c.Nodes() {
		st, err := cli.Status(ctx, n.ClientAddr)
		if err != nil {
			t.Fatal(err)
		}
		if st.Leader != leader.Server().MemberID() || st.Header.MemberId != n.Server().MemberID() ||
			st.RaftAppliedIndex == 0 || st.RaftIndex < st.RaftAppliedIndex || st.DbSize == 0 {
			t.Fatalf("status of %s: %+v", n.Name, st)
		}
	}
}

// TestNoLeaderError checks that a node cut off from its peers answers with
// etcd's no-leader error rather than hanging.
func TestNoLeaderError(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader()
	survivor := c.Followers(leader)[0]
	for _, n := range c.Nodes() {
		if n != survivor {
			n.Stop()
		}
	}
	cli := c.Client(survivor)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := cli.Put(ctx, "x", "y")
		cancel()
		if err != nil && (errors.Is(err, rpctypes.ErrNoLeader) || status.Convert(err).Message() == rpctypes.ErrGRPCNoLeader.Error()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("put on a node without quorum: got %v, want %v", err, rpctypes.ErrGRPCNoLeader)
		}
	}
}

// TestRequestTimesOutWhileItsReplicaIsStuck holds a member's replica loop
// (a hung disk would): a write sent to that member must end with etcd's
// "request timed out" after RequestTimeout, not wait for the client's
// deadline.
func TestRequestTimesOutWhileItsReplicaIsStuck(t *testing.T) {
	t.Parallel()
	gate := testcluster.NewApplyGate(func(replica.ApplyOutput) bool { return true })
	defer gate.Release()
	const timeout = 500 * time.Millisecond
	c := testcluster.New(t, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.RequestTimeout = timeout
		cfg.TestingBeforeApply = gate.Hook(i)
	}})
	leader := c.WaitLeader()
	stuck := c.Followers(leader)[0]
	gate.Arm(stuck)
	ctx := testcluster.Context(t, 30*time.Second)
	if _, err := c.Client(leader).Put(ctx, "a", "1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gate.Held():
	case <-ctx.Done():
		t.Fatal("the follower never applied the put")
	}
	start := time.Now()
	_, err := c.Client(stuck).Put(ctx, "b", "2")
	if !errors.Is(err, rpctypes.ErrTimeout) {
		t.Fatalf("put through a stuck member: got %v, want %v", err, rpctypes.ErrTimeout)
	}
	if took := time.Since(start); took < timeout {
		t.Fatalf("timed out after %v, before RequestTimeout (%v)", took, timeout)
	}
}

// TestReadOnlyTxnIsALinearizableRead checks that a txn with only compares
// and gets is served as etcd serves it: through a follower it sees the
// write acknowledged just before, and it adds no Raft entry.
func TestReadOnlyTxnIsALinearizableRead(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader()
	w := c.Client(leader)
	f := c.Followers(leader)[0]
	r := c.Client(f)
	ctx := t.Context()
	for i := range 20 {
		v := fmt.Sprint(i)
		pr := put(t, w, "ro", v)
		resp, err := r.Txn(ctx).
			If(clientv3.Compare(clientv3.Value("ro"), "=", v)).
			Then(clientv3.OpGet("ro"), clientv3.OpGet("r", clientv3.WithPrefix(), clientv3.WithCountOnly())).
			Else(clientv3.OpGet("nothing")).
			Commit()
		if err != nil {
			t.Fatalf("read-only txn %d: %v", i, err)
		}
		if !resp.Succeeded {
			t.Fatalf("read-only txn through %s after write %d: compare on the value written got false, want true", f.Name, i)
		}
		if got := resp.Header.Revision; got < pr.Header.Revision {
			t.Fatalf("read-only txn header revision: got %d, want at least %d", got, pr.Header.Revision)
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) != 1 || string(kvs[0].Value) != v {
			t.Fatalf("get in the txn: got %v, want value %q", kvs, v)
		}
	}
	before, err := r.Status(ctx, f.ClientAddr)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if _, err := r.Txn(ctx).Then(clientv3.OpGet("ro")).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	after, err := r.Status(ctx, f.ClientAddr)
	if err != nil {
		t.Fatal(err)
	}
	// ReadIndex adds no entry; the writes of lease checkpoints or a new
	// leader's empty entry might, but not one per txn.
	if grown := after.RaftIndex - before.RaftIndex; grown >= 20 {
		t.Fatalf("raft index grew by %d over 20 read-only txns, want them served without entries", grown)
	}
}

// TestPublishedCommitIndex checks the commit index a node publishes (the
// committed-index metric and /readyz's applied-versus-committed check use
// it): after a write every member knows it committed and, once caught up,
// has applied it.
func TestPublishedCommitIndex(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	put(t, c.Client(), "k", "v")
	for _, n := range c.Nodes() {
		waitFor(t, 10*time.Second, n.Name+" publishing a non-zero commit index, all applied", func() (bool, string) {
			pub := n.Server().Published()
			return pub.Commit > 0 && pub.Applied == pub.Commit, fmt.Sprintf("applied %d, commit %d", pub.Applied, pub.Commit)
		})
		if ok, why := n.Server().Ready(); !ok {
			t.Fatalf("%s: ready: got false (%s), want true", n.Name, why)
		}
	}
}
