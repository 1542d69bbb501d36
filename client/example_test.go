package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/client"
)

func ExampleNew() {
	ctx := context.Background()
	// endpoints lists some or all of the cluster's nodes, for example
	// []string{"10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"}.
	cli, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()

	// The etcd KV, Watch and Lease APIs, with failover across endpoints.
	if _, err := cli.Put(ctx, "greeting", "hello"); err != nil {
		log.Fatal(err)
	}
	resp, err := cli.Get(ctx, "greeting")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", resp.Kvs[0].Value)
	// Output: hello
}

func ExampleMutex() {
	ctx := context.Background()
	cli, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	// The session's lease (TTL 10s) is kept alive in the background; if
	// this process dies, the lock is released when it expires.
	s, err := cli.NewSession(ctx, client.WithTTL(10))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)

	m := client.NewMutex(s, "locks/report")
	if err := m.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	// The fencing token strictly increases with each acquisition: give it
	// to whatever the lock protects.
	fmt.Println("token > 0:", m.Token() > 0)

	// A write guarded by the token succeeds only while the lock is held.
	if _, err := m.GuardedPut(ctx, "report/owner", "me"); err != nil {
		log.Fatal(err)
	}
	if err := m.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	_, err = m.GuardedPut(ctx, "report/owner", "me again")
	fmt.Println("after unlock:", errors.Is(err, client.ErrNotHeld))
	// Output:
	// token > 0: true
	// after unlock: true
}

func ExampleMutex_GuardedTxn() {
	ctx := context.Background()
	cli, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	s, err := cli.NewSession(ctx, client.WithTTL(10))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)
	m := client.NewMutex(s, "locks/balance")
	if err := m.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	defer m.Unlock(ctx)

	// Work on the lock's behalf: stop when it is lost (Lost), and make
	// every write conditional on still holding it.
	select {
	case <-m.Lost():
		log.Fatal("lock lost")
	default:
	}
	resp, err := m.GuardedTxn(ctx).
		Then(clientv3.OpPut("balance", "100"), clientv3.OpPut("balance/by", fmt.Sprint(m.Token()))).
		Commit()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("written while holding the lock:", resp.Succeeded)
	// Output: written while holding the lock: true
}

func ExampleSemaphore() {
	ctx := context.Background()
	cli, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	var slots []*client.Semaphore
	for range 3 {
		s, err := cli.NewSession(ctx, client.WithTTL(10))
		if err != nil {
			log.Fatal(err)
		}
		defer s.Close(ctx)
		slots = append(slots, client.NewSemaphore(s, "semaphores/downloads", 2))
	}
	fmt.Println(slots[0].Acquire(ctx), slots[1].Acquire(ctx))
	fmt.Println(slots[2].TryAcquire(ctx)) // only 2 at a time
	if err := slots[0].Release(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(slots[2].Acquire(ctx))
	// Output:
	// <nil> <nil>
	// semaphore is full
	// <nil>
}

func ExampleRWMutex() {
	ctx := context.Background()
	cli, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	var readers []*client.RWMutex
	for range 2 {
		s, err := cli.NewSession(ctx, client.WithTTL(10))
		if err != nil {
			log.Fatal(err)
		}
		defer s.Close(ctx)
		readers = append(readers, client.NewRWMutex(s, "rwlocks/config"))
	}
	// Readers share the lock.
	fmt.Println(readers[0].RLock(ctx), readers[1].RLock(ctx))
	fmt.Println(readers[0].Unlock(ctx), readers[1].Unlock(ctx))
	// Output:
	// <nil> <nil>
	// <nil> <nil>
}

func ExampleElection() {
	ctx := context.Background()
	cli, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	s, err := cli.NewSession(ctx, client.WithTTL(10))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)

	octx, stop := context.WithCancel(ctx)
	defer stop()
	leaders := cli.ObserveElection(octx, "elections/scheduler")

	e := client.NewElection(s, "elections/scheduler")
	if err := e.Campaign(ctx, "node-a"); err != nil { // waits until elected
		log.Fatal(err)
	}
	l := <-leaders
	fmt.Printf("leader %s, token matches: %v\n", l.Value, l.Token == e.Token())
	if err := e.Proclaim(ctx, "node-a (busy)"); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("leader %s\n", (<-leaders).Value)
	if err := e.Resign(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// leader node-a, token matches: true
	// leader node-a (busy)
}

func ExampleGroup() {
	ctx := context.Background()
	cli, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	g := cli.Group("web")

	// Follow the group from now on.
	_, rev, err := g.Members(ctx)
	if err != nil {
		log.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	changes := g.Watch(wctx, rev+1)

	s, err := cli.NewSession(ctx, client.WithTTL(10))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)
	m, err := g.Join(ctx, s, "web-1", []byte("10.0.0.1:8080"))
	if err != nil {
		log.Fatal(err)
	}
	members, _, err := g.Members(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, mb := range members {
		fmt.Printf("member %s at %s\n", mb.ID, mb.Metadata)
	}
	if err := m.Leave(ctx); err != nil {
		log.Fatal(err)
	}
	for n := 0; n < 2; {
		resp := <-changes
		for _, e := range resp.Events {
			fmt.Println(e.Type, e.Member.ID)
			n++
		}
	}
	// Output:
	// member web-1 at 10.0.0.1:8080
	// JOIN web-1
	// LEAVE web-1
}

func ExampleSession() {
	ctx := context.Background()
	cli, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	s, err := cli.NewSession(ctx, client.WithTTL(5))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ttl:", s.TTL(), "alive for a while:", time.Until(s.AliveUntil()) > time.Second)
	// Revoke the lease: everything held on the session is released.
	if err := s.Close(ctx); err != nil {
		log.Fatal(err)
	}
	<-s.Done()
	fmt.Println(s.Err())
	// Output:
	// ttl: 5s alive for a while: true
	// session closed
}

func ExampleQueue() {
	ctx := context.Background()
	cli, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	q := cli.Queue("example-emails")

	// Push a job: with an idempotency key, a retried push (after a timeout,
	// say) returns the same job instead of a second one.
	id, err := q.Push(ctx, []byte("to: ada@example.com"),
		client.WithIdempotencyKey("welcome-ada"), client.WithMaxAttempts(5))
	if err != nil {
		log.Fatal(err)
	}
	again, err := q.Push(ctx, []byte("to: ada@example.com"), client.WithIdempotencyKey("welcome-ada"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("same job:", again == id)

	// Enqueue exactly when your own state change commits: the job and the
	// order are written in one revision, or neither is.
	ids, _, err := q.PushTxn(ctx,
		[]clientv3.Cmp{clientv3.Compare(clientv3.Version("orders/42"), "=", 0)},
		[]client.KVPut{{Key: "orders/42", Value: "placed"}},
		client.Spec{Payload: []byte("order 42 placed"), Group: "customer-7"})
	if err != nil {
		log.Fatal(err) // client.ErrCompareFailed: the order existed
	}
	order, err := cli.Get(ctx, "orders/42")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("order 42 %s, job %v\n", order.Kvs[0].Value, ids[0] > 0)

	// Cancel the job and remove the order (so that the example runs again).
	if _, err := q.Cancel(ctx, ids[0]); err != nil {
		log.Fatal(err)
	}
	if _, err := cli.Delete(ctx, "orders/42"); err != nil {
		log.Fatal(err)
	}
	// Output:
	// same job: true
	// order 42 placed, job true
}

func ExampleQueue_NewWorker() {
	ctx := context.Background()
	cli, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	q := cli.Queue("example-reports")
	id, err := q.Push(ctx, []byte("monthly"))
	if err != nil {
		log.Fatal(err)
	}

	// The worker's claims are bound to its session's lease: if this
	// process dies, its jobs run again elsewhere as soon as the lease
	// (TTL 10s) expires.
	s, err := cli.NewSession(ctx, client.WithTTL(10))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)
	w := q.NewWorker(s, func(ctx context.Context, j *client.Job) ([]byte, error) {
		// j.Token increases with every claim of the job: pass it to what
		// the job writes, which should refuse a lower token than it saw.
		if err := j.Progress(ctx, []byte("rendering")); err != nil {
			return nil, err // the job is no longer ours (client.ErrStaleToken)
		}
		return []byte("report for " + string(j.Payload)), nil
	}, client.WithConcurrency(4))
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()

	j, err := q.Wait(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %s\n", j.State, j.Result)

	// Stop claiming, let running jobs finish, then return.
	stop()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output: COMPLETED: report for monthly
}
