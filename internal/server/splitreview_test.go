package server_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/rangedesc"
	"github.com/synod-io/synod/internal/replica"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// TestSplitLearnedBySnapshotStampsFreshRevisions: a member that was down
// during the first split of a one-range cluster catches up by a snapshot of
// the split range from after the split. Its replica of that range was
// started when there was one data range (stamping from pre-fetched blocks);
// once it leads, a write to the left range acknowledged after a write to the
// right range must still get a higher revision (revisions follow real time
// across ranges).
func TestSplitLearnedBySnapshotStampsFreshRevisions(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{LogTruncateThreshold: 20, LogKeepEntries: 5})
	l := c.WaitLeader()
	ctx := testcluster.Context(t, 60*time.Second)
	cli := c.Client(l)
	for i := range 10 {
		if _, err := cli.Put(ctx, fmt.Sprintf("a/before/%02d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	f := c.Followers(l)[0]
	f.Crash()
	rc := synodpb.NewRangesClient(cli.ActiveConnection())
	if _, err := rc.SplitRange(ctx, &synodpb.SplitRangeRequest{Keys: [][]byte{[]byte("m")}}); err != nil {
		t.Fatalf("split: %v", err)
	}
	splitIndex := l.Server().RangePublished(keys.FirstDataRangeID).Applied
	for i := range 40 {
		for _, p := range []string{"a", "x"} {
			if _, err := cli.Put(ctx, fmt.Sprintf("%s/during/%02d", p, i), "v"); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, 10*time.Second, "logs truncated past the split", func() (bool, string) {
		for _, n := range c.Nodes() {
			if n == f {
				continue
			}
			if pub := n.Server().RangePublished(keys.FirstDataRangeID); pub == nil || pub.LogFirst <= splitIndex {
				return false, fmt.Sprintf("%s's log of range 2 starts at or below %d", n.Name, splitIndex)
			}
		}
		return true, ""
	})
	f.Restart()
	fcli := c.Client(f)
	waitFor(t, 30*time.Second, "the restarted member's ranges", func() (bool, string) {
		got := strings.Join(listSpans(ctx, t, fcli), " ")
		for _, id := range []keys.RangeID{keys.FirstDataRangeID, keys.FirstDataRangeID + 1} {
			if pub := f.Server().RangePublished(id); pub == nil || !pub.Initialized {
				return false, fmt.Sprintf("%s; range %d not initialized", got, id)
			}
		}
		return got == "[,m) [m,)", got
	})

	// The restarted member leads every range.
	waitFor(t, 20*time.Second, "the restarted member leads", func() (bool, string) {
		if l := c.Leader(); l == f {
			return true, ""
		} else if l != nil {
			mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := c.Client(l).MoveLeader(mctx, f.Server().MemberID())
			cancel()
			if err != nil {
				return false, err.Error()
			}
		}
		return false, "another member leads"
	})

	// One client, one write after another: each begins after the previous
	// was acknowledged, so each must get a higher revision.
	var prev int64
	prevKey := ""
	for i := range 10 {
		for _, p := range []string{"a", "x"} {
			k := fmt.Sprintf("%s/after/%02d", p, i)
			resp, err := fcli.Put(ctx, k, "v")
			if err != nil {
				t.Fatal(err)
			}
			if r := resp.Header.Revision; r <= prev {
				t.Fatalf("put %s acknowledged after put %s at %d: got revision %d, want above %d", k, prevKey, prev, r, prev)
			}
			prev, prevKey = resp.Header.Revision, k
		}
	}
}

// TestSplitRestartWithMetaAheadOfTheRange: a member whose replica of the
// split range has not applied the split (nor the writes before it) when it
// crashes, while its replica of the system range already holds the meta
// copies of the split's descriptors. Restarted, it must replay the split
// range's log as every other replica did: a txn over keys on both sides of
// the split key, applied before the split, writes both keys.
func TestSplitRestartWithMetaAheadOfTheRange(t *testing.T) {
	busyParallel(t)
	gate := testcluster.NewApplyGate(func(out replica.ApplyOutput) bool {
		for _, ev := range out.Events {
			if string(ev.KV.Key) == "a/hold" {
				return true
			}
		}
		return false
	})
	defer gate.Release()
	c := testcluster.New(t, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.TestingBeforeApply = gate.Hook(i)
	}})
	l := c.WaitLeader()
	ctx := testcluster.Context(t, 60*time.Second)
	cli := c.Client(l)
	f := c.Followers(l)[0]
	gate.Arm(f)
	if _, err := cli.Put(ctx, "a/hold", "v"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gate.Held():
	case <-ctx.Done():
		t.Fatal("the follower's apply was never held")
	}
	// Before the split, in the one data range: a txn over both sides of
	// the split key, and a put above it.
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut("a/txn", "v"), clientv3.OpPut("x/txn", "v")).Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "x/put", "v"); err != nil {
		t.Fatal(err)
	}
	rc := synodpb.NewRangesClient(cli.ActiveConnection())
	if _, err := rc.SplitRange(ctx, &synodpb.SplitRangeRequest{Keys: [][]byte{[]byte("m")}}); err != nil {
		t.Fatalf("split: %v", err)
	}
	waitFor(t, 10*time.Second, "the held member's meta copies name the new range", func() (bool, string) {
		ds, err := rangedesc.Load(f.Server().DB())
		if err != nil {
			return false, err.Error()
		}
		return len(ds) == 2, fmt.Sprint(ds)
	})
	if err := f.Server().DB().Flush(); err != nil {
		t.Fatal(err)
	}
	f.CrashAnd(gate.Release)
	f.Restart()

	history := func(n *testcluster.Node) map[string]int64 {
		h := map[string]int64{}
		if err := mvcc.ChangesSince(n.Server().DB(), nil, nil, 0, func(ch mvcc.Change) error {
			h[string(ch.KV.Key)] = ch.KV.ModRevision
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return h
	}
	want := history(l)
	waitFor(t, 20*time.Second, "the restarted member's history", func() (bool, string) {
		got := history(f)
		var diff []string
		for k, r := range want {
			if got[k] != r {
				diff = append(diff, fmt.Sprintf("%s at %d, want %d", k, got[k], r))
			}
		}
		slices.Sort(diff)
		return len(diff) == 0, strings.Join(diff, "; ")
	})
}

// TestSplitRacingAMemberRemoval: a two-member cluster removes one member
// while the leader splits its data range. The removal takes the member out
// of the data ranges the leader knew when it began, then out of the system
// range (which stops it); the range the split made copied the split range's
// configuration, the removed member included. It must not keep a stopped
// member as a voter: with two voters and one of them gone it has no quorum,
// and no leader that could remove it.
func TestSplitRacingAMemberRemoval(t *testing.T) {
	busyParallel(t)
	gate := testcluster.NewApplyGate(func(out replica.ApplyOutput) bool { return len(out.Splits) > 0 })
	defer gate.Release()
	c := testcluster.New(t, testcluster.Options{Nodes: 2, Configure: func(i int, cfg *server.Config) {
		cfg.TestingBeforeApply = gate.Hook(i)
	}})
	l := c.WaitLeader()
	ctx := testcluster.Context(t, 60*time.Second)
	cli := c.Client(l)
	gone := c.Followers(l)[0]
	if _, err := cli.Put(ctx, "x/before", "v"); err != nil {
		t.Fatal(err)
	}
	// The leader applies the split but holds it there, before it acts on
	// it (its routing table still has one data range).
	gate.Arm(l)
	splitErr := make(chan error, 1)
	go func() {
		_, err := synodpb.NewRangesClient(cli.ActiveConnection()).SplitRange(ctx, &synodpb.SplitRangeRequest{Keys: [][]byte{[]byte("m")}})
		splitErr <- err
	}()
	select {
	case <-gate.Held():
	case <-ctx.Done():
		t.Fatal("the split was never held")
	}
	removeErr := make(chan error, 1)
	go func() {
		_, err := cli.MemberRemove(ctx, gone.Server().MemberID())
		removeErr <- err
	}()
	waitFor(t, 10*time.Second, "the removal waiting on the split range", func() (bool, string) {
		buf := make([]byte, 1<<22)
		buf = buf[:runtime.Stack(buf, true)]
		return strings.Contains(string(buf), "proposeRangeConfChange"), "not yet"
	})
	gate.Release()
	if err := <-splitErr; err != nil {
		t.Fatalf("split: %v", err)
	}
	if err := <-removeErr; err != nil {
		t.Fatalf("remove %s: %v", gone.Name, err)
	}
	right := keys.FirstDataRangeID + 1
	waitFor(t, 10*time.Second, "the new range's voters", func() (bool, string) {
		pub := l.Server().RangePublished(right)
		if pub == nil {
			return false, "no replica"
		}
		return slices.Equal(pub.Voters, []uint64{l.Server().MemberID()}), fmt.Sprintf("got voters %x, want [%x]", pub.Voters, l.Server().MemberID())
	})
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Put(pctx, "x/after", "v"); err != nil {
		t.Fatalf("put in the new range: %v", err)
	}
}
