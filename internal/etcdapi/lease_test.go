package etcdapi

import (
	"context"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/synod-io/synod/internal/kv"
)

// publishDelete makes the hub's revision rev, as the node does when it
// applies a delete (of a lease's key, say) at rev.
func publishDelete(b *fakeBackend, key string, rev int64) {
	b.hub.Publish([]kv.Event{{Type: mvccpb.DELETE, KV: &mvccpb.KeyValue{Key: []byte(key), ModRevision: rev}}}, kv.Meta{Revision: rev})
}

// TestLeaseGrantHeader checks that a lease response carries the node's
// revision when the node's answer names none, as etcd's does.
func TestLeaseGrantHeader(t *testing.T) {
	for _, tt := range []struct {
		name    string
		nodeRev int64
		want    int64
	}{
		{"node names no revision", 0, 10},
		{"node names a revision", 8, 8},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend(t, 10)
			b.leaseGrant = func(_ context.Context, req *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
				return &pb.LeaseGrantResponse{Header: &pb.ResponseHeader{Revision: tt.nodeRev}, ID: req.ID, TTL: req.TTL}, nil
			}
			resp, err := NewLease(b).LeaseGrant(context.Background(), &pb.LeaseGrantRequest{ID: 77, TTL: 30})
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			checkHeader(t, resp.Header, tt.want)
			if resp.ID != 77 || resp.TTL != 30 {
				t.Fatalf("got lease %d with TTL %d, want 77 with 30", resp.ID, resp.TTL)
			}
		})
	}
}

// TestLeaseKeepAlive checks that each keepalive gets the lease's TTL, 0
// for a lease that is gone, in order, and that the stream ends cleanly
// when the client closes its side.
func TestLeaseKeepAlive(t *testing.T) {
	b := newFakeBackend(t, 10)
	ttls := map[int64]int64{1: 30, 2: 0} // lease 2 is gone
	b.leaseRenew = func(_ context.Context, id int64) (int64, error) { return ttls[id], nil }
	stream := newServerStream[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse](context.Background())
	done := serve(func() error { return NewLease(b).LeaseKeepAlive(stream) })
	for _, id := range []int64{1, 2, 1} {
		stream.send(t, &pb.LeaseKeepAliveRequest{ID: id})
		resp := stream.next(t)
		if resp.ID != id || resp.TTL != ttls[id] {
			t.Fatalf("got lease %d with TTL %d, want %d with %d", resp.ID, resp.TTL, id, ttls[id])
		}
		checkHeader(t, resp.Header, 10)
	}
	close(stream.reqs)
	if err := result(t, done); err != nil {
		t.Fatalf("got error %v after the client closed its side, want none", err)
	}
}

// TestLeaseKeepAliveError checks that a renewal that fails ends the stream
// with the etcd error for the failure.
func TestLeaseKeepAliveError(t *testing.T) {
	b := newFakeBackend(t, 10)
	b.leaseRenew = func(context.Context, int64) (int64, error) { return 0, rpctypes.ErrGRPCNotLeader }
	stream := newServerStream[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse](context.Background())
	done := serve(func() error { return NewLease(b).LeaseKeepAlive(stream) })
	stream.send(t, &pb.LeaseKeepAliveRequest{ID: 1})
	checkErr(t, result(t, done), rpctypes.ErrGRPCNotLeader)
	if n := len(stream.resps); n != 0 {
		t.Fatalf("got %d responses, want 0", n)
	}
}

// TestLeaseKeepAliveHeaderPrecedesRenew checks that a keepalive response
// names a revision from before the renewal, as etcd's does: a lease revoked
// (its keys deleted) at revision 11 while the renewal was under way must not
// be reported alive at revision 11.
func TestLeaseKeepAliveHeaderPrecedesRenew(t *testing.T) {
	b := newFakeBackend(t, 10)
	b.leaseRenew = func(context.Context, int64) (int64, error) {
		publishDelete(b, "held", 11)
		return 30, nil
	}
	stream := newServerStream[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse](context.Background())
	done := serve(func() error { return NewLease(b).LeaseKeepAlive(stream) })
	stream.send(t, &pb.LeaseKeepAliveRequest{ID: 1})
	resp := stream.next(t)
	if got, want := resp.GetHeader().GetRevision(), int64(10); got != want {
		t.Fatalf("got header revision %d, want %d (the revision before the renewal)", got, want)
	}
	close(stream.reqs)
	if err := result(t, done); err != nil {
		t.Fatalf("got error %v, want none", err)
	}
}
