package coord_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/synod-io/synod/internal/testcluster"
)

// newCluster starts a 3-node in-process cluster with a leader.
func newCluster(t *testing.T) *testcluster.Cluster {
	t.Helper()
	c := testcluster.New(t, testcluster.Options{})
	c.WaitLeader()
	return c
}

// ctxFor returns a context that ends with the test or after d.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	return testcluster.Context(t, d)
}

// conn is a raw gRPC connection to one node, as a non-Go etcd client
// (dotnet-etcd) has: the services' generated stubs run on it.
func conn(t *testing.T, n *testcluster.Node) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(n.ClientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", n.Name, err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// keysUnder counts the keys with a prefix.
func keysUnder(t *testing.T, cli *clientv3.Client, pfx string) int64 {
	t.Helper()
	resp, err := cli.Get(ctxFor(t, 10*time.Second), pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatalf("count %s: %v", pfx, err)
	}
	return resp.Count
}

// waitUntil polls cond until it holds, failing the test after d. The
// polling interval is not a synchronization: cond reads the state waited
// for.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %s", what, d, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
