package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/client"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

func TestQueueKeysAreReserved(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 1})
	c.WaitLeader()
	ctx := testcluster.Context(t, 30*time.Second)
	cli := c.Client()
	q := client.FromEtcd(cli).Queue("r")
	if _, err := q.Push(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what string
		do   func() error
	}{
		{"put", func() error { _, err := cli.Put(ctx, "\x01synod/queue/r/state/0000000000000001", "x"); return err }},
		{"delete everything", func() error { _, err := cli.Delete(ctx, "\x00", clientv3.WithFromKey()); return err }},
		{"txn put", func() error {
			_, err := cli.Txn(ctx).Then(clientv3.OpPut("\x01synod/x", "y")).Commit()
			return err
		}},
	} {
		err := tc.do()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "reserved for synod's services") {
			t.Errorf("%s: got %v, want the reserved keys' InvalidArgument", tc.what, err)
		}
	}
	// Everything else is as before: a delete of the user keys works, and
	// the queue still has its job.
	if _, err := cli.Put(ctx, "a", "1"); err != nil {
		t.Fatal(err)
	}
	if r, err := cli.Delete(ctx, "\x02", clientv3.WithFromKey()); err != nil || r.Deleted != 1 {
		t.Fatalf("delete from \\x02: got %v %v", r, err)
	}
	if st, err := q.Stats(ctx); err != nil || st.Available != 1 {
		t.Fatalf("stats: %v %v", st, err)
	}
}

func TestQueueAuth(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 1, Configure: fastBcrypt})
	c.WaitLeader()
	ctx := testcluster.Context(t, 60*time.Second)
	open := c.Client()
	enableAuth(t, ctx, open)
	root := authClient(t, c.Nodes(), "root", "rootpw")
	for _, step := range []func() error{
		func() error { _, err := root.RoleAdd(ctx, "mail"); return err },
		func() error {
			_, err := root.RoleGrantPermission(ctx, "mail", "synod/queues/mail", "", clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error {
			_, err := root.RoleGrantPermission(ctx, "mail", "app/", clientv3.GetPrefixRangeEnd("app/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := root.RoleAdd(ctx, "watcher"); return err },
		func() error {
			_, err := root.RoleGrantPermission(ctx, "watcher", "synod/queues/", clientv3.GetPrefixRangeEnd("synod/queues/"), clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error {
			// Every key: but not the reserved ones.
			_, err := root.RoleGrantPermission(ctx, "watcher", "\x00", "\x00", clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error { _, err := root.UserAdd(ctx, "alice", "alicepw"); return err },
		func() error { _, err := root.UserGrantRole(ctx, "alice", "mail"); return err },
		func() error { _, err := root.UserAdd(ctx, "bob", "bobpw"); return err },
		func() error { _, err := root.UserGrantRole(ctx, "bob", "watcher"); return err },
	} {
		wantAuthOK(t, "setup", step())
	}
	alice := client.FromEtcd(authClient(t, c.Nodes(), "alice", "alicepw"))
	bob := client.FromEtcd(authClient(t, c.Nodes(), "bob", "bobpw"))
	denied := rpctypes.ErrGRPCPermissionDenied

	id, err := alice.Queue("mail").Push(ctx, []byte("hi"))
	wantAuthOK(t, "alice pushes to mail", err)
	_, err = alice.Queue("other").Push(ctx, []byte("hi"))
	wantAuthErr(t, "alice pushes to other", err, denied)
	_, _, err = alice.Queue("mail").PushTxn(ctx, nil, []client.KVPut{{Key: "secret", Value: "x"}}, client.Spec{})
	wantAuthErr(t, "alice pushes with a put outside her keys", err, denied)
	_, _, err = alice.Queue("mail").PushTxn(ctx, nil, []client.KVPut{{Key: "app/x", Value: "x"}}, client.Spec{})
	wantAuthOK(t, "alice pushes with a put in her keys", err)
	wantAuthErr(t, "alice pauses mail", alice.Queue("mail").Pause(ctx), denied)
	wantAuthOK(t, "root pauses and resumes mail", errors.Join(client.FromEtcd(root).Queue("mail").Pause(ctx), client.FromEtcd(root).Queue("mail").Resume(ctx)))

	_, err = bob.Queue("mail").Get(ctx, id)
	wantAuthOK(t, "bob reads a job of mail", err)
	_, err = bob.Queue("mail").Stats(ctx)
	wantAuthOK(t, "bob reads mail's stats", err)
	_, err = bob.Queue("mail").Push(ctx, []byte("x"))
	wantAuthErr(t, "bob pushes to mail", err, denied)
	_, err = bob.Get(ctx, "\x01synod/", clientv3.WithPrefix())
	wantAuthErr(t, "bob reads the reserved keys", err, denied)
	_, err = bob.Get(ctx, "\x00", clientv3.WithFromKey())
	wantAuthErr(t, "bob reads every key", err, denied)
	_, err = bob.Get(ctx, "\x02", clientv3.WithFromKey())
	wantAuthOK(t, "bob reads the keys above the reserved ones", err)

	// Claim streams: alice works mail; bob may not.
	got := make(chan uint64, 1)
	s, err := alice.NewSession(ctx, client.WithTTL(5))
	wantAuthOK(t, "alice's session", err)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go alice.Queue("mail").NewWorker(s, func(_ context.Context, j *client.Job) ([]byte, error) {
		got <- j.ID
		return nil, nil
	}).Run(wctx)
	if g := <-got; g != id {
		t.Fatalf("alice's worker got job %d, want %d", g, id)
	}
	bs, err := bob.NewSession(ctx, client.WithTTL(5))
	wantAuthOK(t, "bob's session", err)
	err = bob.Queue("mail").NewWorker(bs, func(context.Context, *client.Job) ([]byte, error) { return nil, nil }).Run(ctx)
	wantAuthErr(t, "bob works mail", err, denied)
}

func TestQueueGateway(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 1})
	n := c.WaitLeader()
	g := newGWClient(t, n)
	st, body := g.post("/v3/synod/queue/push", `{"queue":"gw","jobs":[{"payload":"`+b64("hello")+`","priority":3}]}`)
	if st != 200 {
		t.Fatalf("push: %d %s", st, body)
	}
	var resp struct {
		IDs []string `json:"ids"`
	}
	g.unmarshal(body, &resp)
	if len(resp.IDs) != 1 {
		t.Fatalf("push: got %s", body)
	}
	st, body = g.post("/v3/synod/queue/get", `{"queue":"gw","id":"`+resp.IDs[0]+`"}`)
	if st != 200 || !strings.Contains(body, `"state":"PENDING"`) || !strings.Contains(body, `"payload":"`+b64("hello")+`"`) || !strings.Contains(body, `"priority":3`) {
		t.Fatalf("get: %d %s", st, body)
	}
	st, body = g.post("/v3/synod/queue/stats", `{"queue":"gw"}`)
	if st != 200 || !strings.Contains(body, `"available":"1"`) {
		t.Fatalf("stats: %d %s", st, body)
	}
	st, body = g.post("/v3/synod/queue/get", `{"queue":"gw","id":"1"}`)
	g.expect("get a job that does not exist", st, body, 404, `{"code":5,"message":"queue: job 1 not found in queue gw"}`)
}

func (g *gwClient) unmarshal(body string, v any) {
	g.t.Helper()
	if err := json.Unmarshal([]byte(body), v); err != nil {
		g.t.Fatalf("%s: %v", body, err)
	}
}

func TestQueueMetrics(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 1, Configure: func(_ int, cfg *server.Config) { cfg.MetricsAddr = "127.0.0.1:0" }})
	n := c.WaitLeader()
	ctx := testcluster.Context(t, 30*time.Second)
	cli := client.FromEtcd(c.Client())
	q := cli.Queue("m")
	id, err := q.Push(ctx, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := cli.NewSession(ctx, client.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = q.NewWorker(s, func(context.Context, *client.Job) ([]byte, error) { return nil, nil }).Run(wctx)
	})
	if _, err := q.Wait(ctx, id); err != nil {
		t.Fatal(err)
	}
	stop()
	wg.Wait()
	resp, err := http.Get("http://" + n.Server().HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{
		`synod_queue_jobs{queue="m",state="completed"} 1`,
		`synod_queue_jobs{queue="m",state="available"} 0`,
		`synod_queue_jobs_total{outcome="pushed",queue="m"} 1`,
		`synod_queue_jobs_total{outcome="completed",queue="m"} 1`,
		`synod_queue_pickup_seconds_count{queue="m"} 1`,
		`synod_queue_oldest_available_seconds{queue="m"} 0`,
		`synod_queue_commands_applied_total`,
		`synod_queue_batch_operations_count`,
	} {
		if !strings.Contains(string(b), m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
}

// TestQueueFollowerCatchesUpBySnapshot: a member that missed the queue's
// commands and gets the state by snapshot (its queue state rebuilt from
// the keys) serves workers as the others do, and so does every member
// after a restart of all.
func TestQueueFollowerCatchesUpBySnapshot(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{LogTruncateThreshold: 50, LogKeepEntries: 5, OnDisk: true})
	leader := c.WaitLeader()
	lagging := c.Followers(leader)[0]
	lagging.Stop()
	ctx := testcluster.Context(t, 60*time.Second)
	q := client.FromEtcd(c.Client(leader)).Queue("snap")
	var ids []uint64
	for i := range 200 {
		id, err := q.Push(ctx, []byte(fmt.Sprint(i)), client.WithGroup(fmt.Sprint("g", i%3)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	lagging.Restart()
	// A worker on the member that came back runs every job, a group's in
	// push order.
	lc := client.FromEtcd(c.Client(lagging))
	s, err := lc.NewSession(ctx, client.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []uint64
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go lc.Queue("snap").NewWorker(s, func(_ context.Context, j *client.Job) ([]byte, error) {
		mu.Lock()
		order = append(order, j.ID)
		mu.Unlock()
		return nil, nil
	}, client.WithConcurrency(8)).Run(wctx)
	if _, err := lc.Queue("snap").Wait(ctx, ids[len(ids)-1]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := lc.Queue("snap").Stats(ctx)
		if err == nil && st.Completed == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats: %v %v", st, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	mu.Lock()
	last := map[uint64]uint64{}
	for _, id := range order {
		g := uint64(0)
		for i, x := range ids {
			if x == id {
				g = uint64(i % 3)
			}
		}
		if id < last[g] {
			t.Fatalf("group g%d ran job %d after %d", g, id, last[g])
		}
		last[g] = id
	}
	mu.Unlock()
	stop()
	// Crash and restart everyone: the state comes back from the store.
	for _, n := range c.Nodes() {
		n.Crash()
	}
	for _, n := range c.Nodes() {
		n.Restart()
	}
	c.WaitLeader()
	for _, n := range c.Nodes() {
		st, err := client.FromEtcd(c.Client(n)).Queue("snap").Stats(ctx)
		if err != nil || st.Completed != 200 {
			t.Fatalf("stats on %s after the restart: %v %v", n.Name, st, err)
		}
	}
	j, err := client.FromEtcd(c.Client()).Queue("snap").Get(ctx, ids[0])
	if err != nil || j.State != queuepb.State_COMPLETED || j.Lost != 0 {
		t.Fatalf("job %d after the restart: %v %v", ids[0], j, err)
	}
}

// TestQueueScheduleFiresOncePerFiringAcrossFailovers runs an @every 1s
// schedule while the leader is crashed twice: every firing from the
// schedule's creation on pushes exactly one job, none is skipped.
func TestQueueScheduleFiresOncePerFiringAcrossFailovers(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 3})
	c.WaitLeader()
	ctx := testcluster.Context(t, 60*time.Second)
	q := client.FromEtcd(c.Client()).Queue("cron")
	sc, err := q.PutSchedule(ctx, "tick", "@every 1s", client.Spec{Payload: []byte("t")})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		time.Sleep(1500 * time.Millisecond) // let firings happen under this leader
		leader := c.WaitLeader()
		leader.Crash()
		c.WaitLeader()
		leader.Restart()
	}
	time.Sleep(1500 * time.Millisecond)
	if _, err := q.DeleteSchedule(ctx, "tick"); err != nil {
		t.Fatal(err)
	}
	jobs, _, err := q.List(ctx, 0, 0, 1000, false)
	if err != nil {
		t.Fatal(err)
	}
	fired := map[int64]int{}
	var last int64
	for _, j := range jobs {
		var at int64
		if _, err := fmt.Sscanf(j.IdempotencyKey, "cron:tick:%d", &at); err != nil {
			t.Fatalf("job %d has key %q", j.Id, j.IdempotencyKey)
		}
		fired[at]++
		last = max(last, at)
	}
	n := 0
	for at := sc.CreatedAtMs + 1000; at <= last; at += 1000 {
		if fired[at] != 1 {
			t.Errorf("firing at %d pushed %d jobs, want 1", at, fired[at])
		}
		n++
	}
	if n < 4 || len(jobs) != n {
		t.Fatalf("%d firings, %d jobs: want one job per firing over the run", n, len(jobs))
	}
}

// TestQueueKVOpsStayInTheQueuesRange checks that on a store split into
// ranges a push or completion may compare and put only keys of the data
// range that holds the queues: its apply cannot read or write what
// another range's log decides (the pre-split chaos run caught completion
// keys written outside their range, missing from its index).
func TestQueueKVOpsStayInTheQueuesRange(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Configure: splitAt("g")})
	c.WaitLeader()
	ctx := testcluster.Context(t, 30*time.Second)
	cli := c.Client()
	q := client.FromEtcd(cli).Queue("spans")
	if _, _, err := q.PushTxn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.Version("a/seen"), "=", 0)}, []client.KVPut{{Key: "a/x", Value: "1"}}, client.Spec{Payload: []byte("in")}); err != nil {
		t.Fatalf("push with a compare and a put in the first range: %v", err)
	}
	for _, tc := range []struct {
		what string
		cmps []clientv3.Cmp
		puts []client.KVPut
	}{
		{"a put in another range", nil, []client.KVPut{{Key: "h/x", Value: "1"}}},
		{"a compare in another range", []clientv3.Cmp{clientv3.Compare(clientv3.Version("h/seen"), "=", 0)}, nil},
		{"a compare over both ranges", []clientv3.Cmp{clientv3.Compare(clientv3.Version("a"), "=", 0).WithRange("z")}, nil},
	} {
		_, _, err := q.PushTxn(ctx, tc.cmps, tc.puts, client.Spec{Payload: []byte("out")})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "outside the data range that holds the queues") {
			t.Errorf("%s: got %v, want FailedPrecondition: outside the data range that holds the queues", tc.what, err)
		}
	}
	if g := get(t, cli, "a/x"); len(g.Kvs) != 1 {
		t.Errorf("the put in the first range: got %d keys, want 1", len(g.Kvs))
	}
	if g := get(t, cli, "h/x"); len(g.Kvs) != 0 {
		t.Errorf("the refused put: got %d keys, want 0", len(g.Kvs))
	}
	if st, err := q.Stats(ctx); err != nil || st.Available != 1 {
		t.Errorf("jobs pushed: got %+v, %v, want only the first one available", st, err)
	}
}
