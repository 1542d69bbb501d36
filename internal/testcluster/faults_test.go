package testcluster_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/synod-io/synod/internal/testcluster"
)

// waitFor polls cond until it holds or 15s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestIsolatedLeaderIsReplaced(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	old := c.WaitLeader()
	c.Isolate(old)
	if got, want := c.LinkState(), "cut"; !strings.Contains(got, want) {
		t.Fatalf("link state: got %q, want it to mention %q", got, want)
	}
	// The majority elects a new leader; the old one cannot reach it.
	waitFor(t, "a new leader among the others", func() bool {
		l := c.SomeLeader()
		return l != nil && l != old
	})
	others := c.Followers(old)
	cli := c.Client(others...)
	ctx := testcluster.Context(t, 20*time.Second)
	if _, err := cli.Put(ctx, "k", "during"); err != nil {
		t.Fatalf("put on the majority side: %v", err)
	}
	// The isolated node cannot serve a linearizable read.
	short := testcluster.Context(t, 500*time.Millisecond)
	if _, err := c.Client(old).Get(short, "k"); err == nil {
		t.Fatalf("linearizable read on the isolated node: got success, want an error")
	}
	c.Heal()
	if got := c.LinkState(); got != "healthy" {
		t.Fatalf("link state after Heal: got %q, want healthy", got)
	}
	c.WaitLeader()
	resp, err := c.Client(old).Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "during" {
		t.Fatalf("read on the healed node: got %v, %v; want during", resp, err)
	}
}

func TestOneWayPartitionFromLeader(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	old := c.WaitLeader()
	// The leader hears everyone but reaches no one: the followers elect
	// another leader.
	for _, f := range c.Followers(old) {
		c.OneWay(old, f)
	}
	waitFor(t, "a new leader", func() bool {
		l := c.SomeLeader()
		return l != nil && l != old
	})
	c.Heal()
	c.WaitLeader()
}

func TestFlakyLinksStillCommit(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Nodes: 5})
	c.WaitLeader()
	c.SetAllLinkFaults(testcluster.LinkFaults{Drop: 0.1, Duplicate: 0.2, Delay: time.Millisecond, Jitter: 5 * time.Millisecond})
	cli := c.Client()
	ctx := testcluster.Context(t, 30*time.Second)
	for i := range 30 {
		// A proposal a follower forwards may be lost (Raft does not resend
		// it, as in etcd): the client retries after a short timeout.
		waitFor(t, fmt.Sprintf("put %d over flaky links", i), func() bool {
			ctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			_, err := cli.Put(ctx, "k", fmt.Sprint(i))
			return err == nil
		})
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "29" {
		t.Fatalf("read over flaky links: got %v, %v; want 29", resp, err)
	}
}
