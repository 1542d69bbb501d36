package coord_test

import (
	"context"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/synod-io/synod/api/v3lockpb"
	"github.com/synod-io/synod/internal/coord"
	"github.com/synod-io/synod/internal/etcdapi"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/watch"
)

// countingBackend is a node's coordination backend that counts the reads
// the services make: ranges and read-only txns.
type countingBackend struct {
	srv    *server.Server
	kv     *etcdapi.KV
	lease  *etcdapi.Lease
	ranges atomic.Int64
}

func (b *countingBackend) Header() *pb.ResponseHeader { return b.srv.Header() }
func (b *countingBackend) Hub() *watch.Hub            { return b.srv.Hub() }
func (b *countingBackend) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	b.ranges.Add(1)
	return b.kv.Range(ctx, r)
}
func (b *countingBackend) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if kv.IsReadOnlyTxn(r) {
		b.ranges.Add(1)
	}
	return b.kv.Txn(ctx, r)
}
func (b *countingBackend) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	return b.lease.LeaseGrant(ctx, r)
}

// TestLockHasNoHerdEffect queues many waiters behind one holder and drains
// the queue: every release must wake one waiter, which reads once (its
// predecessors and its own key, in one read-only txn), so the reads grow
// linearly with the waiters, not quadratically; and the lock must pass in
// queue order.
func TestLockHasNoHerdEffect(t *testing.T) {
	const waiters = 200
	c := newCluster(t)
	srv := c.Node(0).Server()
	b := &countingBackend{srv: srv, kv: etcdapi.NewKV(srv, etcdapi.Limits{MaxTxnOps: 128}), lease: etcdapi.NewLease(srv)}
	gs := grpc.NewServer()
	coord.New(b, nil).Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var serving sync.WaitGroup
	serving.Go(func() { _ = gs.Serve(lis) })
	defer func() {
		gs.Stop()
		serving.Wait()
	}()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	lk := v3lockpb.NewLockClient(cc)
	lc := pb.NewLeaseClient(conn(t, c.Node(0)))
	ctx := ctxFor(t, 120*time.Second)
	cli := c.Client()

	holder, err := lk.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("herd"), Lease: grant(t, lc, 60)})
	if err != nil {
		t.Fatal(err)
	}
	type acquired struct {
		token int64
		order int64
	}
	var seq atomic.Int64
	results := make(chan acquired, waiters)
	errs := make(chan error, waiters)
	var wg sync.WaitGroup
	for range waiters {
		lease := grant(t, lc, 60)
		wg.Go(func() {
			r, err := lk.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("herd"), Lease: lease})
			if err != nil {
				errs <- err
				return
			}
			results <- acquired{token: r.Header.Revision, order: seq.Add(1)}
			if _, err := lk.Unlock(ctx, &v3lockpb.UnlockRequest{Key: r.Key}); err != nil {
				errs <- err
			}
		})
	}
	waitUntil(t, 60*time.Second, "every waiter queued", func() (bool, string) {
		n := keysUnder(t, cli, "herd/")
		return n == waiters+1, fmt.Sprintf("%d of %d keys", n, waiters+1)
	})
	before := b.ranges.Load()
	start := time.Now()
	if _, err := lk.Unlock(ctx, &v3lockpb.UnlockRequest{Key: holder.Key}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(results)
	close(errs)
	for err := range errs {
		t.Fatalf("waiter: %v", err)
	}
	reads := b.ranges.Load() - before
	t.Logf("%d waiters drained in %s with %d reads (%.2f per release)", waiters, time.Since(start).Round(time.Millisecond), reads, float64(reads)/waiters)
	if reads > 2*waiters+10 {
		t.Fatalf("draining %d waiters took %d reads, want at most %d: releases wake more than one waiter", waiters, reads, 2*waiters+10)
	}
	var got []acquired
	for r := range results {
		got = append(got, r)
	}
	sort.Slice(got, func(i, j int) bool { return got[i].order < got[j].order })
	for i := 1; i < len(got); i++ {
		if got[i].token <= got[i-1].token {
			t.Fatalf("acquisition %d got token %d after token %d: want the queue order (strictly increasing tokens)", i, got[i].token, got[i-1].token)
		}
	}
	if got[0].token <= holder.Header.Revision {
		t.Fatalf("first waiter's token %d not above the holder's %d", got[0].token, holder.Header.Revision)
	}
}
