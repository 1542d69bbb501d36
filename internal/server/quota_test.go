package server_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// TestNoSpaceRecoversWithoutRestart fills a cluster with a small quota until
// writes are refused, checks that no member's counted size passed the quota
// by more than one request, then follows etcd's documented recovery through
// an etcd client (compact, defragment every member, disarm): writes work
// again, and keep working, without restarting anything.
func TestNoSpaceRecoversWithoutRestart(t *testing.T) {
	busyParallel(t)
	const (
		quota     = 1 << 20
		valueSize = 16 << 10
		// One request's worth: its key and value and a version's overhead,
		// with room to spare.
		oneRequest = valueSize + 1024
	)
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.QuotaBackendBytes = quota
	}})
	c.WaitLeader()
	cli := c.Client(c.Node(0))
	ctx := testcluster.Context(t, 120*time.Second)
	value := make([]byte, valueSize)
	puts := 0
	for {
		rand.Read(value) // incompressible, as the quota's estimate assumes nothing
		_, err := cli.Put(ctx, fmt.Sprintf("big/%06d", puts), string(value))
		if errors.Is(err, rpctypes.ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatalf("put %d: %v", puts, err)
		}
		puts++
		if puts > 2*quota/valueSize {
			t.Fatalf("still writing after %d puts of %d bytes under a quota of %d bytes", puts, valueSize, quota)
		}
	}
	// What the quota counts is the data: the writes filled most of it.
	if puts*valueSize < quota/2 {
		t.Fatalf("NOSPACE after %d puts of %d bytes: got %d bytes written, want at least half the quota (%d)", puts, valueSize, puts*valueSize, quota/2)
	}
	for _, n := range c.Nodes() {
		st, err := cli.Status(ctx, n.ClientAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes counted after %d puts", n.Name, st.DbSize, puts)
		if st.DbSize > quota+oneRequest {
			t.Fatalf("%s counts %d bytes: got past the quota (%d) by more than one request (%d)", n.Name, st.DbSize, quota, oneRequest)
		}
	}
	waitFor(t, 10*time.Second, "NOSPACE alarm raised", func() (bool, string) {
		al, err := cli.AlarmList(ctx)
		if err != nil {
			return false, err.Error()
		}
		return len(al.Alarms) > 0 && al.Alarms[0].Alarm == pb.AlarmType_NOSPACE, fmt.Sprintf("alarms %v", al.Alarms)
	})
	if _, err := cli.Put(ctx, "small", "x"); !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("put with NOSPACE raised: got %v, want %v", err, rpctypes.ErrNoSpace)
	}
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut("in-txn", "x")).Commit(); !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("txn with a put with NOSPACE raised: got %v, want %v", err, rpctypes.ErrNoSpace)
	}
	if _, err := cli.Get(ctx, "big/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		t.Fatalf("read with NOSPACE raised: %v", err)
	}

	// etcd's documented recovery: compact, defragment, disarm.
	d, err := cli.Delete(ctx, "big/", clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("delete with NOSPACE raised: %v", err)
	}
	if _, err := cli.Compact(ctx, d.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact with NOSPACE raised: %v", err)
	}
	for _, n := range c.Nodes() {
		if _, err := cli.Defragment(ctx, n.ClientAddr); err != nil {
			t.Fatalf("defragment %s: %v", n.Name, err)
		}
		st, err := cli.Status(ctx, n.ClientAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes counted after compact and defragment", n.Name, st.DbSize)
		if st.DbSize > quota/4 {
			t.Fatalf("%s after compact and defragment: got %d bytes counted, want at most %d", n.Name, st.DbSize, quota/4)
		}
	}
	al, err := cli.AlarmList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range al.Alarms {
		if _, err := cli.AlarmDisarm(ctx, (*clientv3.AlarmMember)(a)); err != nil {
			t.Fatal(err)
		}
	}
	// Writes work, and go on working past several quota checks (one a
	// second): the alarm stays off.
	until := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(until); i++ {
		if _, err := cli.Put(ctx, fmt.Sprintf("after/%d", i), "x"); err != nil {
			t.Fatalf("put %d after compact, defragment and disarm: got %v, want success", i, err)
		}
	}
	if al, err := cli.AlarmList(ctx); err != nil || len(al.Alarms) > 0 {
		t.Fatalf("alarms after recovery: got %v, %v; want none", al, err)
	}
	st, err := cli.Status(ctx, c.Nodes()[0].ClientAddr)
	if err != nil || st.DbSizeQuota != quota {
		t.Fatalf("status quota: got %+v, %v; want %d", st, err, quota)
	}
}

// TestAlarmForUnknownMemberIsRefused raises an alarm for a member ID the
// cluster does not have: etcd's "member not found", and writes go on.
func TestAlarmForUnknownMemberIsRefused(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	cli := c.Client()
	ctx := testcluster.Context(t, 30*time.Second)
	mc := pb.NewMaintenanceClient(cli.ActiveConnection())
	_, err := mc.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: 0x1234, Alarm: pb.AlarmType_NOSPACE})
	if !errors.Is(rpctypes.Error(err), rpctypes.ErrMemberNotFound) {
		t.Fatalf("alarm for an unknown member: got %v, want %v", err, rpctypes.ErrMemberNotFound)
	}
	if al, err := cli.AlarmList(ctx); err != nil || len(al.Alarms) > 0 {
		t.Fatalf("alarms: got %v, %v; want none", al, err)
	}
	put(t, cli, "k", "v")
	// A member's own alarm can be raised, and disarmed.
	id := c.Node(1).Server().MemberID()
	if _, err := mc.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: id, Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatalf("alarm for member %x: %v", id, err)
	}
	if _, err := cli.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: id, Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatal(err)
	}
	put(t, cli, "k", "v2")
}
