package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// TestReadsAtOracleRevisions reads and writes a few keys through every
// member, with linearizable reads served at a revision from the oracle
// (server.Config.ReadsAtOracleRevision: a read fence on the data range),
// while the leadership moves and the leader crashes. Each read must hold
// exactly the store's state at its revision, as the final history has it
// (so no write at or below a read's revision committed after the read:
// the fence held), and its revision must be above that of every write
// acknowledged before it began. Without the fence, writes stamped from
// revisions the leader held below a read's revision commit after it.
func TestReadsAtOracleRevisions(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *server.Config) { cfg.ReadsAtOracleRevision = true }})
	var ks []string
	for i := range 8 {
		ks = append(ks, fmt.Sprintf("r/%d", i))
	}
	checkReadsAtRevisions(t, c, ks)
}

// checkReadsAtRevisions writes the keys ks at random through every member
// and reads them all at once (every key from "" on) while the leadership
// moves and the leader crashes, then checks each read against the final
// history: exactly the state at its revision, above every write
// acknowledged before it began.
func checkReadsAtRevisions(t *testing.T, c *testcluster.Cluster, ks []string) {
	t.Helper()
	c.WaitLeader()
	nkeys := len(ks)
	type op struct {
		start, end time.Time
		rev        int64
		key, value string            // writes
		kvs        map[string]string // reads: key -> value
		mods       map[string]int64  // reads: key -> mod revision
	}
	var (
		mu             sync.Mutex
		writes, reads  []op
		done           atomic.Bool
		wg             sync.WaitGroup
		nwrite, nreads atomic.Int64
	)
	for i, n := range c.Nodes() {
		for w := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(i), uint64(w)))
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
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					start := time.Now()
					if w == 0 {
						resp, err := cli.Get(ctx, "", clientv3.WithFromKey())
						end := time.Now()
						cancel()
						if err != nil {
							continue
						}
						o := op{start: start, end: end, rev: resp.Header.Revision, kvs: map[string]string{}, mods: map[string]int64{}}
						for _, kv := range resp.Kvs {
							o.kvs[string(kv.Key)], o.mods[string(kv.Key)] = string(kv.Value), kv.ModRevision
						}
						mu.Lock()
						reads = append(reads, o)
						mu.Unlock()
						nreads.Add(1)
						continue
					}
					key, value := ks[rng.IntN(nkeys)], fmt.Sprintf("%d/%d/%d", i, w, seq)
					resp, err := cli.Put(ctx, key, value)
					end := time.Now()
					cancel()
					if err != nil {
						continue
					}
					mu.Lock()
					writes = append(writes, op{start: start, end: end, rev: resp.Header.Revision, key: key, value: value})
					mu.Unlock()
					nwrite.Add(1)
				}
			}()
		}
	}
	progress := func(what string) {
		t.Helper()
		w, r := nwrite.Load()+100, nreads.Load()+50
		waitFor(t, 30*time.Second, what, func() (bool, string) {
			return nwrite.Load() >= w && nreads.Load() >= r, fmt.Sprintf("%d writes and %d reads, want %d and %d", nwrite.Load(), nreads.Load(), w, r)
		})
	}
	progress("start")
	ctx := testcluster.Context(t, 60*time.Second)
	for round := range 3 {
		l := c.WaitLeader()
		to := c.Followers(l)[round%2]
		if _, err := c.Client(l).MoveLeader(ctx, to.Server().MemberID()); err != nil {
			t.Fatalf("move leader: %v", err)
		}
		progress("after moving the leadership")
	}
	l := c.WaitLeader()
	l.Crash()
	progress("with the leader crashed")
	l.Restart()
	progress("after its restart")
	done.Store(true)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	// Real time: a read's revision is above every write acknowledged
	// before it began.
	for _, r := range reads {
		for _, w := range writes {
			if w.end.Before(r.start) && w.rev > r.rev {
				t.Fatalf("a read at revision %d began after the write of %s=%s was acknowledged at revision %d", r.rev, w.key, w.value, w.rev)
			}
		}
	}
	// Each read holds the final history's state at its revision.
	last := int64(0)
	for _, w := range writes {
		last = max(last, w.rev)
	}
	n := c.Nodes()[0]
	// A read through n at a revision from the oracle: n then applied every
	// write (in every range) acknowledged before.
	if resp, err := c.Client(n).Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly()); err != nil || resp.Header.Revision < last {
		t.Fatalf("read through %s: got %v %v, want a revision of %d or more", n.Name, resp, err, last)
	}
	type version struct {
		rev   int64
		value string
	}
	history := map[string][]version{}
	err := mvcc.ChangesSince(n.Server().DB(), nil, nil, 0, func(ch mvcc.Change) error {
		history[string(ch.KV.Key)] = append(history[string(ch.KV.Key)], version{ch.KV.ModRevision, string(ch.KV.Value)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range history {
		slices.SortFunc(vs, func(a, b version) int { return int(a.rev - b.rev) })
		history[k] = vs
	}
	for _, r := range reads {
		for _, k := range ks {
			var want version
			for _, v := range history[k] {
				if v.rev <= r.rev {
					want = v
				}
			}
			if got, mod := r.kvs[k], r.mods[k]; got != want.value || mod != want.rev {
				t.Fatalf("read at revision %d: %s=%q at revision %d, want %q at revision %d (a write at or below the read's revision committed after it)",
					r.rev, k, got, mod, want.value, want.rev)
			}
		}
	}
	t.Logf("%d reads, %d writes, revisions up to %d", len(reads), len(writes), last)
}
