package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/keys"
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
