package coord_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// The tests in this file run go.etcd.io/etcd/client/v3/concurrency,
// unchanged, against a 3-node cluster: it drives Synod's KV, leases and
// watches exactly as it drives etcd.

func TestEtcdConcurrencyMutex(t *testing.T) {
	c := newCluster(t)
	const clients, rounds = 4, 5
	var inside atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		cli := c.Client(c.Node(i % 3)) // spread over the nodes
		wg.Go(func() {
			s, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			m := concurrency.NewMutex(s, "/locks/counter")
			ctx := ctxFor(t, 60*time.Second)
			for range rounds {
				if err := m.Lock(ctx); err != nil {
					errs <- fmt.Errorf("lock: %w", err)
					return
				}
				if n := inside.Add(1); n != 1 {
					errs <- fmt.Errorf("%d holders inside the critical section, want 1", n)
				}
				// An unguarded read-modify-write: only mutual exclusion
				// keeps increments from being lost.
				g, err := cli.Get(ctx, "counter")
				if err == nil {
					n := 0
					if len(g.Kvs) == 1 {
						n, _ = strconv.Atoi(string(g.Kvs[0].Value))
					}
					_, err = cli.Put(ctx, "counter", strconv.Itoa(n+1))
				}
				inside.Add(-1)
				if err != nil {
					errs <- err
				}
				if err := m.Unlock(ctx); err != nil {
					errs <- fmt.Errorf("unlock: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	g, err := c.Client().Get(ctxFor(t, 10*time.Second), "counter")
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Kvs) != 1 || string(g.Kvs[0].Value) != strconv.Itoa(clients*rounds) {
		t.Fatalf("counter after %d locked increments: got %v, want %d", clients*rounds, g.Kvs, clients*rounds)
	}
}

func TestEtcdConcurrencyTryLockAndOwnership(t *testing.T) {
	c := newCluster(t)
	cliA, cliB := c.Client(c.Node(0)), c.Client(c.Node(1))
	ctx := ctxFor(t, 30*time.Second)
	sa, err := concurrency.NewSession(cliA, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close()
	sb, err := concurrency.NewSession(cliB, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	ma, mb := concurrency.NewMutex(sa, "/try"), concurrency.NewMutex(sb, "/try")
	if err := ma.TryLock(ctx); err != nil {
		t.Fatalf("TryLock of a free lock: %v", err)
	}
	if err := mb.TryLock(ctx); !errors.Is(err, concurrency.ErrLocked) {
		t.Fatalf("TryLock of a held lock: got %v, want ErrLocked", err)
	}
	// The held lock's owner comparison succeeds for its holder only.
	resp, err := cliB.Txn(ctx).If(ma.IsOwner()).Then(clientv3.OpPut("fenced", "a")).Commit()
	if err != nil || !resp.Succeeded {
		t.Fatalf("txn guarded by the holder's ownership: succeeded %v, err %v; want success", resp != nil && resp.Succeeded, err)
	}
	if err := ma.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err = cliB.Txn(ctx).If(ma.IsOwner()).Then(clientv3.OpPut("fenced", "stale")).Commit()
	if err != nil || resp.Succeeded {
		t.Fatalf("txn guarded by a released lock: succeeded %v, err %v; want failure", resp != nil && resp.Succeeded, err)
	}
	if err := mb.Lock(ctx); err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	if mb.Header().Revision <= ma.Header().Revision {
		t.Fatalf("second acquisition at revision %d, first at %d: want later", mb.Header().Revision, ma.Header().Revision)
	}
}

func TestEtcdConcurrencyElection(t *testing.T) {
	c := newCluster(t)
	ctx := ctxFor(t, 60*time.Second)
	session := func(i int) *concurrency.Session {
		s, err := concurrency.NewSession(c.Client(c.Node(i%3)), concurrency.WithTTL(5))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	observer := concurrency.NewElection(session(2), "/election")
	octx, stopObserving := context.WithCancel(ctx)
	defer stopObserving()
	observed := observer.Observe(octx)

	e1 := concurrency.NewElection(session(0), "/election")
	if err := e1.Campaign(ctx, "one"); err != nil {
		t.Fatalf("campaign of the first candidate: %v", err)
	}
	won := make(chan error, 1)
	e2 := concurrency.NewElection(session(1), "/election")
	go func() { won <- e2.Campaign(ctx, "two") }() // ends when it wins or ctx ends

	next := func(want string) {
		t.Helper()
		select {
		case resp, ok := <-observed:
			if !ok {
				t.Fatalf("observe ended, want %q", want)
			}
			if got := string(resp.Kvs[0].Value); got != want {
				t.Fatalf("observed leader value: got %q, want %q", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("observe: no leader value %q before the deadline", want)
		}
	}
	next("one")
	if err := e1.Proclaim(ctx, "one-bis"); err != nil {
		t.Fatalf("proclaim by the leader: %v", err)
	}
	next("one-bis")
	l, err := observer.Leader(ctx)
	if err != nil || string(l.Kvs[0].Value) != "one-bis" {
		t.Fatalf("leader: got %v (%v), want one-bis", l, err)
	}
	select {
	case err := <-won:
		t.Fatalf("second candidate won (%v) while the first leads", err)
	default:
	}
	if err := e1.Resign(ctx); err != nil {
		t.Fatalf("resign: %v", err)
	}
	if err := <-won; err != nil {
		t.Fatalf("campaign of the second candidate after the resignation: %v", err)
	}
	next("two")
	if e2.Rev() <= e1.Rev() {
		t.Fatalf("second leader's revision %d not above the first's %d", e2.Rev(), e1.Rev())
	}
	if err := e1.Proclaim(ctx, "usurper"); !errors.Is(err, concurrency.ErrElectionNotLeader) {
		t.Fatalf("proclaim after resigning: got %v, want ErrElectionNotLeader", err)
	}
}

func TestEtcdConcurrencySTM(t *testing.T) {
	c := newCluster(t)
	ctx := ctxFor(t, 60*time.Second)
	const accounts, start, workers, transfers = 5, 100, 4, 10
	cli := c.Client()
	for i := range accounts {
		if _, err := cli.Put(ctx, fmt.Sprintf("acct/%d", i), strconv.Itoa(start)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wcli := c.Client(c.Node(w % 3))
		wg.Go(func() {
			for i := range transfers {
				from, to := fmt.Sprintf("acct/%d", (w+i)%accounts), fmt.Sprintf("acct/%d", (w+2*i+1)%accounts)
				if from == to {
					continue
				}
				_, err := concurrency.NewSTM(wcli, func(stm concurrency.STM) error {
					a, _ := strconv.Atoi(stm.Get(from))
					b, _ := strconv.Atoi(stm.Get(to))
					stm.Put(from, strconv.Itoa(a-1))
					stm.Put(to, strconv.Itoa(b+1))
					return nil
				}, concurrency.WithAbortContext(ctx), concurrency.WithIsolation(concurrency.SerializableSnapshot))
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("stm: %v", err)
	}
	g, err := cli.Get(ctx, "acct/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, kv := range g.Kvs {
		n, _ := strconv.Atoi(string(kv.Value))
		total += n
	}
	if total != accounts*start {
		t.Fatalf("sum of the accounts after concurrent STM transfers: got %d, want %d", total, accounts*start)
	}
}
