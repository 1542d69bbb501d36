package server_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	raftpb "go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// dataCopyAuthRevision returns the auth revision of node n's copy of the
// system state in the data range.
func dataCopyAuthRevision(t *testing.T, n *testcluster.Node) uint64 {
	t.Helper()
	ss, err := datarange.LoadSystemState(n.Server().DB(), keys.FirstDataRangeID)
	if err != nil {
		t.Fatal(err)
	}
	st, err := auth.DecodeMirror(ss.AuthMirror)
	if err != nil {
		t.Fatal(err)
	}
	return st.Revision
}

// TestDataRangeGetsTheSystemState checks that a data range checks its
// commands against the system range's auth state: a change made through
// the API is acknowledged only once every member's data range has it, and
// one the system range applied but whose hand-over a crash cut short (made
// here by proposing it to the system range alone) reaches the data range
// all the same, from the system range's leader.
func TestDataRangeGetsTheSystemState(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Configure: fastBcrypt})
	leader := c.WaitLeader()
	ctx := testcluster.Context(t, 30*time.Second)
	cli := c.Client()
	if _, err := cli.UserAdd(ctx, "alice", "pw"); err != nil {
		t.Fatal(err)
	}
	// Acknowledged: the proposing member's copy has it already.
	for _, n := range c.Nodes() {
		rev, err := auth.Revision(n.Server().DB())
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, n.Name+"'s data range has the user", func() (bool, string) {
			got := dataCopyAuthRevision(t, n)
			return got == rev, fmt.Sprintf("copy at auth revision %d, system range at %d", got, rev)
		})
	}

	// A change the system range applied alone.
	payload, err := proto.Marshal(&pb.AuthUserAddRequest{Name: "bob", HashedPassword: "h"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leader.Server().ProposeToRange(ctx, keys.SystemRangeID, raftcmd.KindUserAdd, payload); err != nil {
		t.Fatal(err)
	}
	want, err := auth.Revision(leader.Server().DB())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes() {
		waitFor(t, 10*time.Second, n.Name+"'s data range has the change made in the system range alone", func() (bool, string) {
			got := dataCopyAuthRevision(t, n)
			return got == want, fmt.Sprintf("copy at auth revision %d, want %d", got, want)
		})
	}
}

// TestDataRangeFollowsTheSystemRange checks that the system range's leader
// keeps the data range in step: a configuration change made in the system
// range alone (a membership change cut short) is made in the data range
// too, and the data range's leadership follows the system range's.
func TestDataRangeFollowsTheSystemRange(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader()
	ctx := testcluster.Context(t, 30*time.Second)
	const ghost = 0x5eed // a learner no node runs: no quorum depends on it
	if err := leader.Server().ChangeRangeConfig(ctx, keys.SystemRangeID, raftpb.ConfChangeAddLearnerNode, ghost); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the learner added to the system range alone is added to the data range", func() (bool, string) {
		pub := leader.Server().RangePublished(keys.FirstDataRangeID)
		return slices.Contains(pub.Learners, ghost), fmt.Sprintf("data range learners %x", pub.Learners)
	})
	if err := leader.Server().ChangeRangeConfig(ctx, keys.SystemRangeID, raftpb.ConfChangeRemoveNode, ghost); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the learner removed from the system range alone leaves the data range", func() (bool, string) {
		pub := leader.Server().RangePublished(keys.FirstDataRangeID)
		return !slices.Contains(pub.Learners, ghost), fmt.Sprintf("data range learners %x", pub.Learners)
	})

	// Only the system range's leadership moves; the data range's follows.
	target := c.Followers(leader)[0]
	if err := leader.Server().TransferRangeLeader(ctx, keys.SystemRangeID, target.Server().MemberID()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the data range's leader follows the system range's", func() (bool, string) {
		srv := target.Server()
		sys, data := srv.RangePublished(keys.SystemRangeID), srv.RangePublished(keys.FirstDataRangeID)
		return sys.Lead == srv.MemberID() && data.Lead == srv.MemberID(),
			fmt.Sprintf("system range led by %x, data range by %x", sys.Lead, data.Lead)
	})
}

// TestOldLayoutIsRefused checks that a data dir written before the system
// range existed (one Raft group for everything; no layout key) is refused
// with what to do, not opened as if it were new or half-read.
func TestOldLayoutIsRefused(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 1, OnDisk: true})
	c.WaitLeader()
	n := c.Node(0)
	n.Stop()
	db, err := pebble.Open(n.DataDir(), &pebble.Options{FS: n.FS()})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Delete(keys.NodeLayoutKey(), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	err = n.Start()
	if !errors.Is(err, server.ErrOldLayout) {
		t.Fatalf("restart on a single-range data dir: got %v, want %v", err, server.ErrOldLayout)
	}
}

// TestRestoreKeepsTheAuthState checks that a restored cluster has the
// backup's users, roles and auth flag, as etcd's restore keeps them, and
// checks writes against them from its first command (the data range's copy
// of the system state is restored with them).
func TestRestoreKeepsTheAuthState(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 1, Configure: fastBcrypt})
	c.WaitLeader()
	ctx := testcluster.Context(t, 30*time.Second)
	open := c.Client()
	if _, err := open.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	enableAuth(t, ctx, open)
	root := authClient(t, c.Nodes(), "root", "rootpw")
	rc, err := root.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		t.Fatal(err)
	}
	f.Close()
	rc.Close()

	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "r1")
	spec := "r1=" + pl.Addr().String()
	if _, err := server.Restore(server.RestoreConfig{Backup: file, DataDir: dir, Name: "r1", InitialCluster: spec}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	srv, err := server.Open(server.Config{Name: "r1", DataDir: dir, PeerListener: pl, ClientListener: cl,
		InitialCluster: spec, TickInterval: 10 * time.Millisecond, BcryptCost: bcrypt.MinCost})
	if err != nil {
		t.Fatalf("start the restored member: %v", err)
	}
	defer srv.Close()
	anon, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.ClientAddr()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	waitFor(t, 10*time.Second, "the restored member refuses a write without a user", func() (bool, string) {
		_, err := anon.Put(ctx, "x", "1")
		return isErr(err, rpctypes.ErrGRPCUserEmpty), fmt.Sprint(err)
	})
	rootAgain, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.ClientAddr()}, DialTimeout: 5 * time.Second,
		Logger: zap.NewNop(), Username: "root", Password: "rootpw"})
	if err != nil {
		t.Fatalf("log in as root on the restored member: %v", err)
	}
	defer rootAgain.Close()
	g, err := rootAgain.Get(ctx, "k")
	if err != nil || len(g.Kvs) != 1 || string(g.Kvs[0].Value) != "v" {
		t.Fatalf("root reads k on the restored member: got %v, %v, want v", g, err)
	}
}
