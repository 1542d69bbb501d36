package server_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// TestPeerSecretOverClientAPI checks that every member, a node that
// joined included, serves the same peer secret on the client API, and only
// to root once auth is enabled: a node joining without root's credentials
// gets nothing.
func TestPeerSecretOverClientAPI(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Configure: fastBcrypt})
	c.WaitLeader()
	ctx := testcluster.Context(t, 60*time.Second)
	joined, err := c.AddNode()
	if err != nil {
		t.Fatal(err)
	}
	var first []byte
	for _, n := range c.Nodes() {
		got, err := server.FetchPeerSecret(ctx, c.Client(n).ActiveConnection())
		if err != nil {
			t.Fatalf("peer secret from %s: %v", n.Name, err)
		}
		if first == nil {
			first = got
		} else if !bytes.Equal(got, first) {
			t.Fatalf("peer secret from %s: got %x, want %x as from n1", n.Name, got, first)
		}
	}
	// The joined node holds it: it talks to the others.
	waitFor(t, 20*time.Second, "the joined node to follow the leader", func() (bool, string) {
		pub := joined.Server().Published()
		return pub.Lead != 0 && pub.Initialized, "no leader or data yet"
	})

	open := c.Client(c.Nodes()[:3]...)
	enableAuth(t, ctx, open)
	root := authClient(t, c.Nodes()[:1], "root", "rootpw")
	if _, err := root.UserAdd(ctx, "bob", "bobpw"); err != nil {
		t.Fatal(err)
	}
	bob := authClient(t, c.Nodes()[:1], "bob", "bobpw")
	for _, tc := range []struct {
		who  string
		get  func() ([]byte, error)
		want error
	}{
		{"no user", func() ([]byte, error) { return server.FetchPeerSecret(ctx, open.ActiveConnection()) }, rpctypes.ErrGRPCUserEmpty},
		{"bob", func() ([]byte, error) { return server.FetchPeerSecret(ctx, bob.ActiveConnection()) }, rpctypes.ErrGRPCPermissionDenied},
	} {
		got, err := tc.get()
		if !isErr(err, tc.want) || got != nil {
			t.Errorf("peer secret as %s: got %x (err %v), want %v", tc.who, got, err, tc.want)
		}
	}
	if got, err := server.FetchPeerSecret(ctx, root.ActiveConnection()); err != nil || !bytes.Equal(got, first) {
		t.Errorf("peer secret as root: got %x (err %v), want %x", got, err, first)
	}

	// Joining needs root now (--join dials without credentials here).
	_, err = c.AddNode()
	if err == nil || !strings.Contains(err.Error(), "get the cluster's peer secret") {
		t.Fatalf("join without credentials with auth enabled: got %v, want the peer secret refused", err)
	}
}
