package server_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/testcluster"
)

// TestStampedRevisionsAcrossLeaderChanges writes through every member
// while the leadership moves around and the leader crashes: the data
// range's leader stamps each write with a revision from the oracle, and
// every new leader with revisions of its own. Every acknowledged write must
// have a revision of its own, a write begun after another was acknowledged
// a higher one, and every member the same history, in which a watch from
// the start sees each write once, in revision order.
func TestStampedRevisionsAcrossLeaderChanges(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	type write struct {
		key        string
		start, end time.Time
		rev        int64
	}
	var (
		mu     sync.Mutex
		writes []write
		done   atomic.Bool
		stale  atomic.Int64 // writes refused for a stale stamp
		wg     sync.WaitGroup
	)
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(writes)
	}
	for i, n := range c.Nodes() {
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var cli *clientv3.Client
				for seq := 0; !done.Load(); seq++ {
					if n.Server() == nil {
						time.Sleep(time.Millisecond) // crashed: wait for its restart
						cli = nil
						continue
					}
					if cli == nil {
						cli = c.Client(n)
					}
					key := fmt.Sprintf("k/%d/%d/%d", i, w, seq)
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					start := time.Now()
					resp, err := cli.Put(ctx, key, "v")
					end := time.Now()
					cancel()
					if err != nil {
						if strings.Contains(err.Error(), "stamped with a revision") {
							stale.Add(1)
						}
						continue
					}
					mu.Lock()
					writes = append(writes, write{key: key, start: start, end: end, rev: resp.Header.Revision})
					mu.Unlock()
				}
			}()
		}
	}
	progress := func(what string, more int) {
		t.Helper()
		want := count() + more
		deadline := time.Now().Add(30 * time.Second)
		for count() < want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: got %d writes, want %d", what, count(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	progress("start", 100)
	ctx := testcluster.Context(t, 60*time.Second)
	for round := range 4 {
		l := c.WaitLeader()
		to := c.Followers(l)[round%2]
		if _, err := c.Client(l).MoveLeader(ctx, to.Server().MemberID()); err != nil {
			t.Fatalf("move leader: %v", err)
		}
		progress("after moving the leadership", 100)
	}
	l := c.WaitLeader()
	l.Crash()
	progress("with the leader crashed", 100)
	l.Restart()
	progress("after its restart", 100)
	done.Store(true)
	wg.Wait()

	if n := stale.Load(); n > 0 {
		t.Fatalf("%d writes refused for a stamp not above their range's revision, want none", n)
	}
	mu.Lock()
	defer mu.Unlock()
	byRev := slices.Clone(writes)
	slices.SortFunc(byRev, func(a, b write) int { return int(a.rev - b.rev) })
	for i := 1; i < len(byRev); i++ {
		if byRev[i].rev == byRev[i-1].rev {
			t.Fatalf("writes %s and %s both acknowledged at revision %d", byRev[i-1].key, byRev[i].key, byRev[i].rev)
		}
	}
	byEnd := slices.Clone(writes)
	slices.SortFunc(byEnd, func(a, b write) int { return a.end.Compare(b.end) })
	byStart := slices.Clone(writes)
	slices.SortFunc(byStart, func(a, b write) int { return a.start.Compare(b.start) })
	var maxEnded write
	j := 0
	for _, w := range byStart {
		for ; j < len(byEnd) && byEnd[j].end.Before(w.start); j++ {
			if byEnd[j].rev > maxEnded.rev {
				maxEnded = byEnd[j]
			}
		}
		if w.rev <= maxEnded.rev {
			t.Fatalf("write %s begun after %s was acknowledged at revision %d got revision %d", w.key, maxEnded.key, maxEnded.rev, w.rev)
		}
	}
	// Every member holds the same history, each acknowledged write in it
	// at its revision.
	last := byRev[len(byRev)-1].rev
	var histories []string
	for _, n := range c.Nodes() {
		waitFor(t, 10*time.Second, n.Name+" applied", func() (bool, string) {
			return n.Server().Published().KV.Revision >= last, ""
		})
		at := map[string]int64{}
		var h []byte
		err := mvcc.ChangesSince(n.Server().DB(), nil, nil, 0, func(ch mvcc.Change) error {
			at[string(ch.KV.Key)] = ch.KV.ModRevision
			h = fmt.Appendf(h, "%s@%d ", ch.KV.Key, ch.KV.ModRevision)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range writes {
			if at[w.key] != w.rev {
				t.Fatalf("%s holds %s at revision %d, want %d (acknowledged)", n.Name, w.key, at[w.key], w.rev)
			}
		}
		histories = append(histories, string(h))
	}
	for i := 1; i < len(histories); i++ {
		if histories[i] != histories[0] {
			t.Fatalf("members n1 and n%d hold different histories", i+1)
		}
	}
	// A watch from the start sees every write once, in revision order.
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	wch := c.Client().Watch(wctx, "k/", clientv3.WithPrefix(), clientv3.WithRev(1))
	seen, prev := 0, int64(0)
	for seen < len(writes) {
		resp, ok := <-wch
		if !ok || resp.Err() != nil {
			t.Fatalf("watch ended after %d of %d events: %v", seen, len(writes), resp.Err())
		}
		for _, ev := range resp.Events {
			if ev.Kv.ModRevision <= prev {
				t.Fatalf("watch event at revision %d after one at %d", ev.Kv.ModRevision, prev)
			}
			prev = ev.Kv.ModRevision
			seen++
		}
	}
	t.Logf("%d writes, revisions up to %d", len(writes), last)
}
