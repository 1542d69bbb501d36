package coord_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/api/synodpb"
)

// describe prints group events as "TYPE member=metadata@revision".
func describe(evs []*synodpb.GroupEvent) string {
	var out []string
	for _, e := range evs {
		out = append(out, fmt.Sprintf("%s %s=%s", e.Type, e.Member.Id, e.Member.Metadata))
	}
	return strings.Join(out, ", ")
}

// groupWatcher collects a group watch's events.
type groupWatcher struct {
	stream grpc.ServerStreamingClient[synodpb.GroupWatchResponse]
	first  int64 // the first response's header revision
	events []*synodpb.GroupEvent
}

func watchGroup(t *testing.T, gc synodpb.GroupsClient, group string, from int64) *groupWatcher {
	t.Helper()
	stream, err := gc.Watch(ctxFor(t, 60*time.Second), &synodpb.GroupWatchRequest{Group: group, StartRevision: from})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatalf("first watch response: %v", err)
	}
	if len(first.Events) != 0 {
		t.Fatalf("first watch response has events: %v", first.Events)
	}
	return &groupWatcher{stream: stream, first: first.Header.Revision}
}

// until receives events until there are n of them.
func (w *groupWatcher) until(t *testing.T, n int) []*synodpb.GroupEvent {
	t.Helper()
	for len(w.events) < n {
		r, err := w.stream.Recv()
		if err != nil {
			t.Fatalf("watch after %d events (%s), want %d: %v", len(w.events), describe(w.events), n, err)
		}
		for _, e := range r.Events {
			if e.Revision > r.Header.Revision {
				t.Fatalf("event at revision %d in a response at revision %d", e.Revision, r.Header.Revision)
			}
		}
		w.events = append(w.events, r.Events...)
	}
	return w.events
}

func TestGroupsJoinLeaveExpiryWatched(t *testing.T) {
	c := newCluster(t)
	cc := conn(t, c.Node(0))
	gc, lc := synodpb.NewGroupsClient(cc), pb.NewLeaseClient(cc)
	ctx := ctxFor(t, 60*time.Second)
	live := watchGroup(t, synodpb.NewGroupsClient(conn(t, c.Node(2))), "web", 0)

	join := func(member, meta string, lease, ttl int64) *synodpb.Member {
		t.Helper()
		r, err := gc.Join(ctx, &synodpb.JoinRequest{Group: "web", Member: member, Metadata: []byte(meta), Lease: lease, Ttl: ttl})
		if err != nil {
			t.Fatalf("join %s: %v", member, err)
		}
		return r.Member
	}
	leave := func(member string) bool {
		t.Helper()
		r, err := gc.Leave(ctx, &synodpb.LeaveRequest{Group: "web", Member: member})
		if err != nil {
			t.Fatalf("leave %s: %v", member, err)
		}
		return r.Left
	}
	leaseA := grant(t, lc, 30)
	a := join("a", "a1", leaseA, 0)
	join("c", "c", grant(t, lc, 30), 0)
	a2 := join("a", "a2", leaseA, 0)
	if a2.CreateRevision != a.CreateRevision || a2.ModRevision <= a.ModRevision {
		t.Fatalf("rejoin: got %+v after %+v, want the same create revision and a later mod revision", a2, a)
	}
	if _, err := gc.Join(ctx, &synodpb.JoinRequest{Group: "web", Member: "a", Lease: grant(t, lc, 30)}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("join of a member ID held under another lease: got %v, want AlreadyExists", err)
	}
	list, err := gc.List(ctx, &synodpb.ListRequest{Group: "web"})
	if err != nil || len(list.Members) != 2 || list.Members[0].Id != "a" || string(list.Members[0].Metadata) != "a2" || list.Members[1].Id != "c" {
		t.Fatalf("list: got %v (%v), want a=a2 and c", list, err)
	}
	// Members are plain keys etcd clients read.
	g, err := c.Client().Get(ctx, "synod/groups/web/members/", clientv3.WithPrefix())
	if err != nil || len(g.Kvs) != 2 || string(g.Kvs[0].Key) != "synod/groups/web/members/a" || g.Kvs[0].Lease != leaseA {
		t.Fatalf("member keys through etcd's client: got %v (%v)", g.Kvs, err)
	}
	if !leave("c") {
		t.Fatalf("leave of a member: left false, want true")
	}
	// b joins on a lease the server grants and nobody renews: it expires.
	join("b", "b", 0, 1)
	live.until(t, 6)
	leaseD := grant(t, lc, 30)
	join("d", "d", leaseD, 0)
	if _, err := lc.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: leaseD}); err != nil {
		t.Fatal(err)
	}
	if !leave("a") {
		t.Fatalf("leave of a member: left false, want true")
	}
	if leave("nobody") {
		t.Fatalf("leave of a non-member: left true, want false")
	}
	want := "JOIN a=a1, JOIN c=c, UPDATE a=a2, LEAVE c=c, JOIN b=b, EXPIRE b=b, JOIN d=d, EXPIRE d=d, LEAVE a=a2"
	evs := live.until(t, 9)
	if got := describe(evs); got != want {
		t.Fatalf("live watcher saw\n  %s\nwant\n  %s", got, want)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Revision <= evs[i-1].Revision {
			t.Fatalf("events out of revision order: %v after %v", evs[i], evs[i-1])
		}
	}
	if evs[0].Revision != live.first+1 {
		t.Fatalf("first event at revision %d, watch started after %d: want the next revision", evs[0].Revision, live.first)
	}
	// A watcher started later from the first event's revision replays the
	// same history, through another node.
	replay := watchGroup(t, synodpb.NewGroupsClient(conn(t, c.Node(1))), "web", evs[0].Revision)
	if got := describe(replay.until(t, 9)); got != want {
		t.Fatalf("watcher from revision %d saw\n  %s\nwant\n  %s", evs[0].Revision, got, want)
	}
	for i, e := range replay.events {
		if e.Revision != evs[i].Revision {
			t.Fatalf("replayed event %d at revision %d, live at %d", i, e.Revision, evs[i].Revision)
		}
	}
	// The list at an old revision is the group as it was.
	old, err := gc.List(ctx, &synodpb.ListRequest{Group: "web", Revision: a2.ModRevision})
	if err != nil || len(old.Members) != 2 || old.Header.Revision != a2.ModRevision {
		t.Fatalf("list at revision %d: got %v (%v), want a and c", a2.ModRevision, old, err)
	}
	if now, err := gc.List(ctx, &synodpb.ListRequest{Group: "web"}); err != nil || len(now.Members) != 0 {
		t.Fatalf("list after everyone left: got %v (%v), want no member", now, err)
	}
	for _, bad := range []*synodpb.JoinRequest{{Group: "", Member: "x", Ttl: 5}, {Group: "a/b", Member: "x", Ttl: 5}, {Group: "g", Member: "x"}} {
		if _, err := gc.Join(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("join %v: got %v, want InvalidArgument", bad, err)
		}
	}
}
