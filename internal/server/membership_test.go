package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/metadata"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/peerauth"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// writer keeps writing distinct keys and records the acknowledged ones.
type writer struct {
	mu    sync.Mutex
	acked []string
	stop  chan struct{}
	done  chan struct{}
}

func startWriter(cli *clientv3.Client, prefix string) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			k := fmt.Sprintf("%s%06d", prefix, i)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, err := cli.Put(ctx, k, "v")
			cancel()
			if err == nil {
				w.mu.Lock()
				w.acked = append(w.acked, k)
				w.mu.Unlock()
			}
		}
	}()
	return w
}

func (w *writer) finish() []string {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		ok, why := cond()
		if ok {
			return
		}
		last = why
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not done after %v: %s", what, d, last)
}

// waitVoters waits until the member list has exactly n voters and no
// learners, as seen by cli.
func waitVoters(t *testing.T, cli *clientv3.Client, n int) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("%d voters", n), func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ml, err := cli.MemberList(ctx)
		if err != nil {
			return false, err.Error()
		}
		voters, learners := 0, 0
		for _, m := range ml.Members {
			if m.IsLearner {
				learners++
			} else {
				voters++
			}
		}
		return voters == n && learners == 0, fmt.Sprintf("%d voters, %d learners", voters, learners)
	})
}

func checkAcked(t *testing.T, cli *clientv3.Client, prefix string, acked []string) {
	t.Helper()
	g := get(t, cli, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	have := map[string]bool{}
	for _, kv := range g.Kvs {
		have[string(kv.Key)] = true
	}
	for _, k := range acked {
		if !have[k] {
			t.Fatalf("acknowledged write %q lost", k)
		}
	}
}

func TestGrowAndShrinkUnderLoad(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 1})
	c.WaitLeader()
	first := c.Node(0)
	cli := c.Client(first)
	w := startWriter(cli, "load/")

	var added []*testcluster.Node
	for _, size := range []int{2, 3, 4, 5} {
		n, err := c.AddNode()
		if err != nil {
			t.Fatalf("add node %d: %v", size, err)
		}
		added = append(added, n)
		waitVoters(t, cli, size)
		if size == 3 {
			waitFor(t, 10*time.Second, "writes with 3 voters", func() (bool, string) { return w.count() > 50, "" })
		}
	}
	// Every node, including those that joined, has every acknowledged write.
	grown := w.finish()
	if len(grown) == 0 {
		t.Fatalf("no write acknowledged while growing")
	}
	for _, n := range added {
		checkAcked(t, c.Client(n), "load/", grown)
	}

	// Shrink back to one, removing the leader once on the way.
	leader := c.WaitLeader()
	if leader == first {
		ctx := testcluster.Context(t, 10*time.Second)
		if _, err := cli.MoveLeader(ctx, added[3].Server().MemberID()); err != nil {
			t.Fatalf("move leader away from n1: %v", err)
		}
		leader = c.WaitLeader()
	}
	order := []*testcluster.Node{leader}
	for _, n := range slices.Backward(added) {
		if n != leader {
			order = append(order, n)
		}
	}
	w = startWriter(cli, "shrink/")
	for i, n := range order {
		ctx := testcluster.Context(t, 20*time.Second)
		if _, err := cli.MemberRemove(ctx, n.Server().MemberID()); err != nil {
			t.Fatalf("remove %s: %v", n.Name, err)
		}
		select {
		case err := <-n.Server().Fatal():
			if !errors.Is(err, server.ErrMemberRemoved) {
				t.Fatalf("removed %s reports %v, want ErrMemberRemoved", n.Name, err)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("removed node %s did not notice its removal", n.Name)
		}
		n.Stop()
		waitVoters(t, cli, 4-i)
		// Writes go on after each removal.
		before := w.count()
		waitFor(t, 15*time.Second, fmt.Sprintf("writes after removing %s", n.Name), func() (bool, string) {
			return w.count() > before+10, fmt.Sprintf("%d acknowledged", w.count()-before)
		})
	}
	acked := w.finish()
	if len(acked) == 0 {
		t.Fatalf("no write acknowledged while shrinking")
	}
	checkAcked(t, cli, "shrink/", acked)
	if leader := c.WaitLeader(); leader != first {
		t.Fatalf("leader of the one-node cluster: got %s, want n1", leader.Name)
	}
	// A removed member cannot come back with its old data.
	if err := order[1].Start(); err == nil || !strings.Contains(err.Error(), "was removed") {
		t.Fatalf("restart of a removed member: got %v, want a refusal", err)
	}
}

func TestReplaceDeadNode(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader()
	cli := c.Client(leader)
	writeKeys(t, cli, "before/", 50)
	dead := c.Followers(leader)[0]
	deadID := dead.Server().MemberID()
	dead.Crash()
	ctx := testcluster.Context(t, 30*time.Second)
	if _, err := cli.MemberRemove(ctx, deadID); err != nil {
		t.Fatalf("remove the dead member: %v", err)
	}
	n, err := c.AddNode()
	if err != nil {
		t.Fatal(err)
	}
	waitVoters(t, cli, 3)
	writeKeys(t, cli, "after/", 20)
	nc := c.Client(n)
	waitFor(t, 10*time.Second, "replacement serves the data", func() (bool, string) {
		g, err := nc.Get(context.Background(), "before/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return false, err.Error()
		}
		return g.Count == 50, fmt.Sprintf("%d keys", g.Count)
	})
	checkKeys(t, nc, "after/", 20)
	// With the replacement, the cluster survives losing another node.
	c.Followers(c.WaitLeader())[0].Crash()
	writeKeys(t, c.Client(c.WaitLeader()), "two-left/", 5)
}

func TestMoveLeader(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader()
	target := c.Followers(leader)[1]
	// Asked through a follower: forwarded to the leader.
	cli := c.Client(c.Followers(leader)[0])
	if _, err := cli.MoveLeader(testcluster.Context(t, 10*time.Second), target.Server().MemberID()); err != nil {
		t.Fatalf("move leader: %v", err)
	}
	if got := c.WaitLeader(); got != target {
		t.Fatalf("leader after move: got %s, want %s", got.Name, target.Name)
	}
	_, err := cli.MoveLeader(testcluster.Context(t, 10*time.Second), 12345)
	wantErr(t, "move leader to a non-member", err, rpctypes.ErrGRPCBadLeaderTransferee)
}

func TestMembershipQuorumSafety(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader()
	fs := c.Followers(leader)
	down, up := fs[0], fs[1]
	downID := down.Server().MemberID()
	// Frames a node sent before it stopped still count as hearing it when
	// they arrive; a node stopped right after the election may not have
	// been heard yet at all. So it is heard first, then stopped.
	waitFor(t, 10*time.Second, "leader hears both followers", func() (bool, string) {
		return leader.Server().PeerActive(downID) && leader.Server().PeerActive(up.Server().MemberID()), ""
	})
	down.Stop()
	cli := c.Client(leader)
	ctx := testcluster.Context(t, 30*time.Second)
	// Once the leader no longer hears from the stopped node, removing
	// another voter would leave no quorum: refused. The wait is for a
	// silence far longer than PeerActive's half election timeout, so that
	// frames the node sent just before it stopped, delivered late on a
	// loaded machine, have all been read.
	waitFor(t, 10*time.Second, "leader notices the stopped node", func() (bool, string) {
		silent := time.Since(leader.Server().PeerLastHeard(downID))
		return silent > time.Second && !leader.Server().PeerActive(downID), fmt.Sprintf("silent for %s", silent)
	})
	_, err := cli.MemberRemove(ctx, up.Server().MemberID())
	wantErr(t, "remove a voter with another voter down", err, rpctypes.ErrGRPCMemberNotEnoughStarted)
	_, err = cli.MemberAdd(ctx, []string{"http://127.0.0.1:1"})
	if !errors.Is(err, rpctypes.ErrMemberNotEnoughStarted) {
		t.Fatalf("add a voter with a voter down: got %v, want %v", err, rpctypes.ErrMemberNotEnoughStarted)
	}
	// A learner does not count towards quorum: adding one is fine.
	if _, err := cli.MemberAddAsLearner(ctx, []string{"http://127.0.0.1:1"}); err != nil {
		t.Fatalf("add a learner with a voter down: %v", err)
	}
	// Removing the member that is down keeps a quorum.
	if _, err := cli.MemberRemove(ctx, downID); err != nil {
		t.Fatalf("remove the member that is down: %v", err)
	}
	// Errors of etcd's kind.
	_, err = cli.MemberRemove(ctx, 42)
	wantErr(t, "remove an unknown member", err, rpctypes.ErrGRPCMemberNotFound)
	_, err = cli.MemberPromote(ctx, up.Server().MemberID())
	wantErr(t, "promote a voter", err, rpctypes.ErrGRPCMemberNotLearner)
	_, err = cli.MemberAdd(ctx, []string{"http://" + up.PeerAddr})
	wantErr(t, "add an existing peer URL", err, rpctypes.ErrGRPCPeerURLExist)
	// Forcing overrides the safety check.
	fctx := metadata.AppendToOutgoingContext(ctx, server.ForceMetadataKey, "true")
	if _, err := cli.MemberAdd(fctx, []string{"http://127.0.0.1:2"}); err != nil {
		t.Fatalf("forced add: %v", err)
	}
}

func TestHashKVEqualAcrossMembers(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	cli := c.Client()
	ctx := testcluster.Context(t, 30*time.Second)
	for i := 0; i < 200; i++ {
		k := fmt.Sprintf("h/%d", i%23)
		if i%5 == 0 {
			if _, err := cli.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
			continue
		}
		put(t, cli, k, fmt.Sprint(i))
	}
	r := put(t, cli, "h/last", "x")
	if _, err := cli.Compact(ctx, r.Header.Revision-50); err != nil {
		t.Fatal(err)
	}
	var hashes []uint32
	for _, n := range c.Nodes() {
		// The hash covers versions above the member's compaction
		// revision: wait for the compaction too, not just the writes.
		waitFor(t, 10*time.Second, n.Name+" applied", func() (bool, string) {
			kv := n.Server().Published().KV
			return kv.Revision >= r.Header.Revision && kv.CompactRevision >= r.Header.Revision-50, ""
		})
		h, err := cli.HashKV(ctx, n.ClientAddr, r.Header.Revision)
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, h.Hash)
	}
	if hashes[0] != hashes[1] || hashes[1] != hashes[2] {
		t.Fatalf("hash at revision %d differs between members: %x", r.Header.Revision, hashes)
	}
}

func TestSnapshotSaveRestore(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	cli := c.Client()
	ctx := testcluster.Context(t, 60*time.Second)
	writeKeys(t, cli, "keep/", 100)
	l, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "leased", "x", clientv3.WithLease(l.ID)); err != nil {
		t.Fatal(err)
	}
	// A rate limit's key drained: its checkpointed state is in the backup.
	limits := synodpb.NewLimitsClient(cli.ActiveConnection())
	if _, err := limits.SetLimit(ctx, &synodpb.SetLimitRequest{Limit: &synodpb.Limit{Name: "kept", Limit: 1, PeriodMs: 3_600_000, Burst: 5}}); err != nil {
		t.Fatal(err)
	}
	if tr, err := limits.Take(ctx, &synodpb.TakeRequest{Items: []*synodpb.TakeItem{{Limit: "kept", Key: []byte("k"), Cost: 5}}}); err != nil || !tr.Allowed {
		t.Fatalf("take: %v, %v", tr, err)
	}
	r := put(t, cli, "keep/last", "x")
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		t.Fatalf("stream snapshot: %v", err)
	}
	f.Close()
	rc.Close()
	h, pairs, err := server.VerifyBackup(file)
	if err != nil {
		t.Fatalf("verify backup: %v", err)
	}
	if h.Revision < r.Header.Revision || pairs < 100 {
		t.Fatalf("backup header: revision %d (want >= %d), %d pairs", h.Revision, r.Header.Revision, pairs)
	}
	// The peer secret is node-local: a backup never carries it.
	oldSecret, err := server.FetchPeerSecret(ctx, cli.ActiveConnection())
	if err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(file); err != nil || bytes.Contains(data, oldSecret) {
		t.Fatalf("backup holds the cluster's peer secret (read err %v)", err)
	}
	orig, err := cli.HashKV(ctx, c.Nodes()[0].ClientAddr, h.Revision)
	if err != nil {
		t.Fatal(err)
	}

	// Restore a new three-member cluster from the file.
	var pls, cls []net.Listener
	var spec []string
	for i := 0; i < 3; i++ {
		pl, _ := net.Listen("tcp", "127.0.0.1:0")
		cl, _ := net.Listen("tcp", "127.0.0.1:0")
		pls, cls = append(pls, pl), append(cls, cl)
		spec = append(spec, fmt.Sprintf("r%d=%s", i+1, pl.Addr()))
	}
	var srvs []*server.Server
	secret, err := peerauth.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		dir := filepath.Join(t.TempDir(), fmt.Sprintf("r%d", i+1))
		if _, err := server.Restore(server.RestoreConfig{
			Backup: file, DataDir: dir, Name: fmt.Sprintf("r%d", i+1),
			InitialCluster: strings.Join(spec, ","), ClusterToken: "restored", PeerSecret: secret,
		}); err != nil {
			t.Fatalf("restore r%d: %v", i+1, err)
		}
		s, err := server.Open(server.Config{
			Name: fmt.Sprintf("r%d", i+1), DataDir: dir, PeerListener: pls[i], ClientListener: cls[i],
			InitialCluster: strings.Join(spec, ","), ClusterToken: "restored", TickInterval: 10 * time.Millisecond,
		})
		if err != nil {
			t.Fatalf("start restored r%d: %v", i+1, err)
		}
		t.Cleanup(func() { s.Close() })
		srvs = append(srvs, s)
	}
	rcli, err := clientv3.New(clientv3.Config{Endpoints: []string{srvs[0].ClientAddr(), srvs[1].ClientAddr(), srvs[2].ClientAddr()}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer rcli.Close()
	checkKeys(t, rcli, "keep/", 101)
	if tr, err := synodpb.NewLimitsClient(rcli.ActiveConnection()).Take(ctx, &synodpb.TakeRequest{Items: []*synodpb.TakeItem{{Limit: "kept", Key: []byte("k")}}}); err != nil || tr.Allowed {
		t.Fatalf("take from the drained key after restore: got %v, %v; want refused", tr, err)
	}
	if g := get(t, rcli, "leased"); len(g.Kvs) != 1 || g.Kvs[0].Lease != int64(l.ID) {
		t.Fatalf("leased key after restore: %v", g.Kvs)
	}
	for _, s := range srvs {
		got, err := rcli.HashKV(ctx, s.ClientAddr(), h.Revision)
		if err != nil {
			t.Fatal(err)
		}
		if got.Hash != orig.Hash {
			t.Fatalf("HashKV at %d of restored %s: got %x, want %x", h.Revision, s.ClientAddr(), got.Hash, orig.Hash)
		}
	}
	// The restored cluster is a new cluster, and it takes writes above the
	// backup's revision (revisions may have gaps).
	if srvs[0].ClusterID() == c.Nodes()[0].Server().ClusterID() {
		t.Fatalf("restored cluster kept the old cluster ID")
	}
	if r2 := put(t, rcli, "after-restore", "x"); r2.Header.Revision <= h.Revision {
		t.Fatalf("first write after restore: revision %d, want above %d", r2.Header.Revision, h.Revision)
	}
}

func TestMetricsAndHealth(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.MetricsAddr = "127.0.0.1:0"
		cfg.EnablePprof = i == 0
	}})
	leader := c.WaitLeader()
	put(t, c.Client(leader), "m", "1")
	httpGet := func(n *testcluster.Node, path string) (int, string) {
		resp, err := http.Get("http://" + n.Server().HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := httpGet(leader, "/metrics")
	for _, m := range []string{"synod_raft_term", "synod_raft_is_leader 1", "synod_disk_wal_fsync_duration_seconds_count",
		"synod_grpc_requests_total", "synod_raft_apply_lag", "synod_raft_log_entries", "synod_storage_size_bytes", "synod_storage_quota_used_bytes", "synod_storage_compaction_debt_bytes", "synod_storage_l0_sublevels", "synod_storage_read_amplification", "synod_ranges 2", "synod_ranges_led", "synod_watchers", "synod_leases"} {
		if code != 200 || !strings.Contains(body, m) {
			t.Fatalf("/metrics lacks %q (status %d)", m, code)
		}
	}
	if code, _ := httpGet(leader, "/healthz"); code != 200 {
		t.Fatalf("/healthz: got %d, want 200", code)
	}
	if code, body := httpGet(leader, "/readyz"); code != 200 {
		t.Fatalf("/readyz of a healthy leader: got %d %q, want 200", code, body)
	}
	// The profiler only where enabled (etcd's --enable-pprof).
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/symbol"} {
		if code, _ := httpGet(c.Node(0), path); code != http.StatusOK {
			t.Fatalf("%s with EnablePprof: got %d, want 200", path, code)
		}
		if code, _ := httpGet(c.Node(1), path); code != http.StatusNotFound {
			t.Fatalf("%s without EnablePprof: got %d, want 404", path, code)
		}
	}
	// A node cut off from the others loses its leader and is not ready.
	lone := c.Followers(leader)[0]
	for _, other := range c.Nodes() {
		if other != lone {
			other.Stop()
		}
	}
	waitFor(t, 10*time.Second, "lone node not ready", func() (bool, string) {
		code, body := httpGet(lone, "/readyz")
		return code == http.StatusServiceUnavailable, body
	})
}

// TestMemberURLsAreValidated adds and updates members with peer URLs no
// member could be reached at: etcd's clients must get etcd's error
// (InvalidArgument, "given member URLs are invalid"), and the membership
// must not change.
func TestMemberURLsAreValidated(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader()
	ctx := testcluster.Context(t, 30*time.Second)
	// Through a follower: it checks before forwarding to the leader.
	cli := c.Client(c.Followers(leader)[0])
	before, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// clientv3 refuses some of these itself; the raw API must too.
	raw := pb.NewClusterClient(cli.ActiveConnection())
	for _, u := range []string{
		"http://127.0.0.1:99999", "http://127.0.0.1:0", ":0", "http://:2380", "http://127.0.0.1",
		"unix://127.0.0.1:2380", "ftp://127.0.0.1:2380", "http://127.0.0.1:2380/path",
		"http://127.0.0.1:2380?x=1", "http://127.0.0.1:2380#x", "http://user@127.0.0.1:2380",
	} {
		_, err := raw.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{u}})
		wantErr(t, fmt.Sprintf("member add %s", u), err, rpctypes.ErrGRPCMemberBadURLs)
		_, err = raw.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{"http://127.0.0.1:2390", u}, IsLearner: true})
		wantErr(t, fmt.Sprintf("member add as learner %s", u), err, rpctypes.ErrGRPCMemberBadURLs)
		_, err = raw.MemberUpdate(ctx, &pb.MemberUpdateRequest{ID: leader.Server().MemberID(), PeerURLs: []string{u}})
		wantErr(t, fmt.Sprintf("member update %s", u), err, rpctypes.ErrGRPCMemberBadURLs)
	}
	// Those clientv3 lets through: it must see its typed error.
	for _, u := range []string{"http://127.0.0.1:99999", "http://127.0.0.1:0", "http://:2380"} {
		if _, err := cli.MemberAdd(ctx, []string{u}); !errors.Is(err, rpctypes.ErrMemberBadURLs) {
			t.Fatalf("clientv3 member add %s: got %v, want %v", u, err, rpctypes.ErrMemberBadURLs)
		}
		if _, err := cli.MemberUpdate(ctx, leader.Server().MemberID(), []string{u}); !errors.Is(err, rpctypes.ErrMemberBadURLs) {
			t.Fatalf("clientv3 member update %s: got %v, want %v", u, err, rpctypes.ErrMemberBadURLs)
		}
	}
	after, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Members) != len(before.Members) {
		t.Fatalf("members after refused adds: got %d, want %d", len(after.Members), len(before.Members))
	}
	for i, m := range after.Members {
		if !slices.Equal(m.PeerURLs, before.Members[i].PeerURLs) {
			t.Fatalf("peer URLs of %x after refused updates: got %v, want %v", m.ID, m.PeerURLs, before.Members[i].PeerURLs)
		}
	}
}
