package server_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/replica"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// TestSplitLearnedByRefreshBeforeTheHold: a member that was down during
// the first split of a one-range cluster installs a snapshot of the split
// range from after the split. refreshDescriptors (rangesLoop, every half
// election timeout) may read the installed state, published, before
// onApply checks the range's generation: it learns the new range, and
// onApply then sees no generation change, so no watch merger is ever
// made. The member then has two data ranges and no merger: the new range's
// writes never reach its watchers. Here the race is made certain: the
// member's apply of the snapshot waits until it has learned the new range.
func TestSplitLearnedByRefreshBeforeTheHold(t *testing.T) {
	busyParallel(t)
	var (
		mu      sync.Mutex
		fName   string
		fNode   *testcluster.Node
		waited  atomic.Bool
		timeout atomic.Bool
	)
	c := testcluster.New(t, testcluster.Options{LogTruncateThreshold: 20, LogKeepEntries: 5, Configure: func(_ int, cfg *server.Config) {
		name := cfg.Name
		cfg.TestingBeforeApply = func(id keys.RangeID, out replica.ApplyOutput) {
			mu.Lock()
			n := fNode
			mine := name == fName
			mu.Unlock()
			if !mine || id != keys.FirstDataRangeID || !out.SnapshotInstalled || waited.Swap(true) {
				return
			}
			// refreshDescriptors learns the new range from the installed
			// state and the meta copies while onApply has not run yet.
			deadline := time.Now().Add(15 * time.Second)
			for time.Now().Before(deadline) {
				if s := n.Server(); s != nil && s.RangePublished(keys.FirstDataRangeID+1) != nil {
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			timeout.Store(true)
		}
	}})
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
	mu.Lock()
	fName, fNode = f.Name, f
	mu.Unlock()
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
	if !waited.Load() || timeout.Load() {
		t.Skipf("the race was not set up (snapshot apply seen: %v, learned in time: %v)", waited.Load(), !timeout.Load())
	}
	// A write to each range through the leader, after the member caught
	// up: a watch on the member sees both.
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	fcur, err := fcli.Get(ctx, "a/before/00")
	if err != nil {
		t.Fatal(err)
	}
	wch := fcli.Watch(wctx, "", clientv3.WithFromKey(), clientv3.WithRev(fcur.Header.Revision+1))
	for _, k := range []string{"a/after", "x/after"} {
		if _, err := cli.Put(ctx, k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for !seen["a/after"] || !seen["x/after"] {
		select {
		case resp, ok := <-wch:
			if !ok || resp.Err() != nil {
				t.Fatalf("watch on the restarted member ended: %v", resp.Err())
			}
			for _, ev := range resp.Events {
				seen[string(ev.Kv.Key)] = true
			}
		case <-timer.C:
			t.Fatalf("watch on the restarted member after 10s: got a/after %v, x/after %v, want both", seen["a/after"], seen["x/after"])
		}
	}
}
