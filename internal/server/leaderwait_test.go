package server_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// TestRestartedMemberWaitsForItsLeader restarts a member and at once uses
// it as a Kubernetes API server would: watches created with
// WithRequireLeader, a write, a linearizable read, a lease keep-alive and
// TTL. The other members' traffic to it is delayed, so that it has not
// heard from the leader yet when the requests arrive. They must wait for
// the leader instead of answering "no leader" (clientv3 ends such a watch
// for good on that answer), and the watches must then deliver events.
func TestRestartedMemberWaitsForItsLeader(t *testing.T) {
	t.Parallel()
	const (
		electionTicks = 100 // 1 s at 10 ms ticks: requests wait 2 s for a leader
		delay         = 500 * time.Millisecond
		watches       = 3
	)
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.ElectionTicks = electionTicks
	}})
	leader := c.WaitLeader()
	member := c.Followers(leader)[0]
	ctx := testcluster.Context(t, 30*time.Second)
	lcli := c.Client(leader)
	l, err := lcli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}

	member.Stop()
	for _, n := range c.Nodes() {
		if n != member {
			c.SetLinkFaults(n, member, testcluster.LinkFaults{Delay: delay})
		}
	}
	member.Restart()
	restarted := time.Now()
	cli := c.Client(member)

	wctx := clientv3.WithRequireLeader(ctx)
	var wchs []clientv3.WatchChan
	for i := range watches {
		wchs = append(wchs, cli.Watch(wctx, fmt.Sprintf("w/%d", i), clientv3.WithCreatedNotify()))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	run := func(what string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil {
				errs <- fmt.Errorf("%s through the restarted member: got %v, want success", what, err)
			}
		}()
	}
	run("put", func() error {
		_, err := cli.Put(ctx, "p", "1")
		return err
	})
	run("get", func() error {
		_, err := cli.Get(ctx, "p")
		return err
	})
	run("keep-alive", func() error {
		resp, err := cli.KeepAliveOnce(ctx, l.ID)
		if err == nil && resp.TTL <= 0 {
			err = fmt.Errorf("ttl %d", resp.TTL)
		}
		return err
	})
	run("time-to-live", func() error {
		resp, err := cli.TimeToLive(ctx, l.ID)
		if err == nil && resp.TTL <= 0 {
			err = fmt.Errorf("ttl %d", resp.TTL)
		}
		return err
	})
	for i, wch := range wchs {
		select {
		case wr, ok := <-wch:
			if !ok || wr.Canceled || !wr.Created {
				t.Errorf("watch %d with WithRequireLeader on the restarted member: got created=%v canceled=%v err=%v, want created",
					i, wr.Created, wr.Canceled, wr.Err())
			}
		case <-ctx.Done():
			t.Errorf("watch %d was never created", i)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	if since := time.Since(restarted); since < delay {
		// The requests were all answered before the leader could have been
		// heard from: the test did not test what it means to.
		t.Fatalf("answered %v after the restart, before the leader's traffic (delayed %v) arrived", since, delay)
	}
	c.Heal()

	for i := range watches {
		put(t, lcli, fmt.Sprintf("w/%d", i), "v")
	}
	for i, wch := range wchs {
		select {
		case wr, ok := <-wch:
			if !ok || wr.Canceled || len(wr.Events) != 1 || string(wr.Events[0].Kv.Key) != fmt.Sprintf("w/%d", i) {
				t.Fatalf("watch %d: got open=%v canceled=%v err=%v events=%v, want the put of w/%d", i, ok, wr.Canceled, wr.Err(), wr.Events, i)
			}
		case <-ctx.Done():
			t.Fatalf("watch %d delivered no event", i)
		}
	}
}

// TestRequireLeaderWatchOnIsolatedMember checks the bound of the wait: on a
// member cut off from the others, a watch that requires a leader is
// cancelled with "no leader", whether it was open before or created after
// the member lost its leader.
func TestRequireLeaderWatchOnIsolatedMember(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader()
	member := c.Followers(leader)[0]
	ctx := testcluster.Context(t, 30*time.Second)
	cli := c.Client(member)
	open := cli.Watch(clientv3.WithRequireLeader(ctx), "k", clientv3.WithCreatedNotify())
	if wr := <-open; !wr.Created {
		t.Fatalf("watch on a member with a leader: got %+v, want created", wr)
	}

	c.Isolate(member)
	waitNoLeader(t, open, "open watch")
	if member.Server().HasLeader() {
		t.Fatal("an isolated member knows a leader after its watch was cancelled")
	}
	// A new client: clientv3 would answer a watch on the cancelled stream
	// itself, with that stream's error.
	start := time.Now()
	created := c.Client(member).Watch(clientv3.WithRequireLeader(ctx), "k")
	waitNoLeader(t, created, "new watch")
	if took, min := time.Since(start), member.Server().ElectionTimeout(); took < min {
		t.Fatalf("new watch on a member without a leader refused after %v, want a wait of about two election timeouts", took)
	}
}

// waitNoLeader waits for a watch to be cancelled with "no leader".
func waitNoLeader(t *testing.T, wch clientv3.WatchChan, what string) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case wr, ok := <-wch:
			if !ok {
				t.Fatalf("%s closed without an error, want %v", what, rpctypes.ErrNoLeader)
			}
			if wr.Canceled {
				if err := wr.Err(); !errors.Is(err, rpctypes.ErrNoLeader) {
					t.Fatalf("%s cancelled: got %v, want %v", what, err, rpctypes.ErrNoLeader)
				}
				return
			}
		case <-deadline:
			t.Fatalf("%s on an isolated member: not cancelled after 15s, want %v", what, rpctypes.ErrNoLeader)
		}
	}
}
