package server_test

import (
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/internal/testcluster"
)

// TestLeasePermissions checks issue 20 item 2 with etcd clients: what a
// user may do with a lease depends on the keys attached to it, as in etcd.
// Keeping a lease alive or attaching a key to it needs write permission on
// every key already attached (or mallory could keep alice's keys alive, or
// pin her own key to alice's lease and so block alice's revoke), and
// listing the leases needs read permission on every attached key. Each
// node is asked, since keep-alives are forwarded to the leader.
func TestLeasePermissions(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 3, Configure: fastBcrypt})
	c.WaitLeader()
	ctx := testcluster.Context(t, 60*time.Second)
	enableAuth(t, ctx, c.Client())
	root := authClient(t, c.Nodes()[:1], "root", "rootpw")
	for _, u := range []string{"alice", "mallory"} {
		_, err := root.RoleAdd(ctx, u)
		wantAuthOK(t, "add role "+u, err)
		_, err = root.RoleGrantPermission(ctx, u, u+"/", clientv3.GetPrefixRangeEnd(u+"/"), clientv3.PermissionType(clientv3.PermReadWrite))
		wantAuthOK(t, "grant "+u+"/", err)
		_, err = root.UserAdd(ctx, u, u+"pw")
		wantAuthOK(t, "add user "+u, err)
		_, err = root.UserGrantRole(ctx, u, u)
		wantAuthOK(t, "grant role "+u, err)
	}
	alice := authClient(t, c.Nodes(), "alice", "alicepw")
	var mallory []*clientv3.Client // one per node
	for _, n := range c.Nodes() {
		mallory = append(mallory, authClient(t, []*testcluster.Node{n}, "mallory", "mallorypw"))
	}
	denied := rpctypes.ErrGRPCPermissionDenied

	// alice's lease, holding one of her keys.
	la, err := alice.Grant(ctx, 60)
	wantAuthOK(t, "alice grant", err)
	_, err = alice.Put(ctx, "alice/k", "v", clientv3.WithLease(la.ID))
	wantAuthOK(t, "alice put alice/k on her lease", err)
	_, err = alice.Put(ctx, "alice/k2", "v", clientv3.WithLease(la.ID))
	wantAuthOK(t, "alice attach a second key", err)
	_, err = alice.KeepAliveOnce(ctx, la.ID)
	wantAuthOK(t, "alice keep her lease alive", err)

	for i, m := range mallory {
		node := c.Node(i).Name
		_, err = m.KeepAliveOnce(ctx, la.ID)
		wantAuthErr(t, "mallory keep alice's lease alive via "+node, err, denied)
		_, err = m.Put(ctx, "mallory/x", "v", clientv3.WithLease(la.ID))
		wantAuthErr(t, "mallory attach her key to alice's lease via "+node, err, denied)
		// In a txn: either branch, nested.
		_, err = m.Txn(ctx).If(clientv3.Compare(clientv3.Version("mallory/x"), "=", 0)).
			Then(clientv3.OpPut("mallory/y", "v")).
			Else(clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpPut("mallory/x", "v", clientv3.WithLease(la.ID))}, nil)).Commit()
		wantAuthErr(t, "mallory txn attaching to alice's lease in a nested else branch via "+node, err, denied)
		_, err = m.Leases(ctx)
		wantAuthErr(t, "mallory list the leases via "+node, err, denied)
	}
	if resp, err := root.Get(ctx, "mallory/", clientv3.WithPrefix()); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("mallory's keys after the refused writes: got %v, %v, want none", resp.Kvs, err)
	}

	// mallory's own lease works for her; alice's revoke is not blocked.
	lm, err := mallory[0].Grant(ctx, 60)
	wantAuthOK(t, "mallory grant", err)
	_, err = mallory[1].Put(ctx, "mallory/x", "v", clientv3.WithLease(lm.ID))
	wantAuthOK(t, "mallory put on her own lease", err)
	_, err = mallory[2].KeepAliveOnce(ctx, lm.ID)
	wantAuthOK(t, "mallory keep her own lease alive", err)
	_, err = alice.Revoke(ctx, lm.ID)
	wantAuthErr(t, "alice revoke mallory's lease", err, denied)
	_, err = alice.Revoke(ctx, la.ID)
	wantAuthOK(t, "alice revoke her lease", err)
	if resp, err := root.Get(ctx, "alice/", clientv3.WithPrefix()); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("alice's keys after her revoke: got %v, %v, want none", resp.Kvs, err)
	}

	// Listing: root sees every lease; a user who may read every attached
	// key may list them too (as etcd).
	ls, err := root.Leases(ctx)
	wantAuthOK(t, "root list the leases", err)
	if len(ls.Leases) != 1 || ls.Leases[0].ID != lm.ID {
		t.Fatalf("root list the leases: got %v, want only mallory's %x", ls.Leases, lm.ID)
	}
	_, err = mallory[0].Leases(ctx)
	wantAuthOK(t, "mallory list the leases when she may read every attached key", err)
	_, err = alice.Leases(ctx)
	wantAuthErr(t, "alice list the leases holding mallory's key", err, denied)

	// A lease without keys holds nothing a user could be denied (as etcd).
	empty, err := alice.Grant(ctx, 60)
	wantAuthOK(t, "alice grant an empty lease", err)
	_, err = mallory[0].KeepAliveOnce(ctx, empty.ID)
	wantAuthOK(t, "mallory keep an empty lease alive", err)
}
