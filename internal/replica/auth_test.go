package replica

import (
	"errors"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/raftcmd"
)

// proposeAs submits a command carrying the authorization fields a client
// request gets (see server.propose) on replica 1 and applies it.
func (nw *network) proposeAs(kind raftcmd.Kind, req proto.Message, set func(*raftcmd.Command)) Result {
	nw.t.Helper()
	payload, err := proto.Marshal(req)
	if err != nil {
		nw.t.Fatal(err)
	}
	nw.nextReq++
	cmd := raftcmd.Command{RangeID: testRange, Proposer: 1, RequestID: nw.nextReq, Kind: kind, Payload: payload}
	if set != nil {
		set(&cmd)
	}
	p := NewProposal(nw.nextReq, cmd.Encode(nil))
	nw.replicas[1].Propose(p)
	nw.stabilize()
	return result(nw.t, p)
}

func (nw *network) mustAuth(kind raftcmd.Kind, req proto.Message) {
	nw.t.Helper()
	if res := nw.proposeAs(kind, req, nil); res.Err != nil {
		nw.t.Fatalf("%s: %v", kind, res.Err)
	}
}

// TestApplyChecksHowARequestWasAuthorized: a request checked while auth was
// disabled fails at apply once auth is enabled (to be checked again); a
// request with a login fails if the auth state moved since its check; and a
// put or revoke by a non-root user is checked against the keys attached to
// its lease when it applies.
func TestApplyChecksHowARequestWasAuthorized(t *testing.T) {
	nw := newNetwork(t, 1, Config{})
	nw.elect(1)
	put := func(key string, lease int64) *etcdpb.PutRequest {
		return &etcdpb.PutRequest{Key: []byte(key), Value: []byte("v"), Lease: lease}
	}
	noLogin := func(c *raftcmd.Command) { c.AuthNoLogin = true }

	// Auth disabled: admin changes move the revision, but requests without
	// a login do not clash on it.
	nw.mustAuth(raftcmd.KindUserAdd, &etcdpb.AuthUserAddRequest{Name: "root", HashedPassword: "h"})
	nw.mustAuth(raftcmd.KindUserGrantRole, &etcdpb.AuthUserGrantRoleRequest{User: "root", Role: "root"})
	if res := nw.proposeAs(raftcmd.KindUserAdd, &etcdpb.AuthUserAddRequest{Name: "alice", HashedPassword: "h"}, noLogin); res.Err != nil {
		t.Fatalf("user add without a login while auth is disabled: got %v, want success", res.Err)
	}
	nw.mustAuth(raftcmd.KindRoleAdd, &etcdpb.AuthRoleAddRequest{Name: "a"})
	nw.mustAuth(raftcmd.KindRoleGrantPermission, &etcdpb.AuthRoleGrantPermissionRequest{Name: "a",
		Perm: &authpb.Permission{PermType: authpb.Permission_READWRITE, Key: []byte("a/"), RangeEnd: []byte("a0")}})
	nw.mustAuth(raftcmd.KindUserGrantRole, &etcdpb.AuthUserGrantRoleRequest{User: "alice", Role: "a"})
	if res := nw.proposeAs(raftcmd.KindPut, put("x", 0), noLogin); res.Err != nil {
		t.Fatalf("put without a login while auth is disabled: got %v, want success", res.Err)
	}
	nw.mustAuth(raftcmd.KindLeaseGrant, &etcdpb.LeaseGrantRequest{ID: 7, TTL: 60})
	nw.mustAuth(raftcmd.KindLeaseGrant, &etcdpb.LeaseGrantRequest{ID: 8, TTL: 60})
	nw.mustAuth(raftcmd.KindPut, put("a/1", 7))
	nw.mustAuth(raftcmd.KindPut, put("secret", 8))
	nw.mustAuth(raftcmd.KindAuthEnable, &etcdpb.AuthEnableRequest{})

	// Checked while auth was disabled, applied after it was enabled.
	if res := nw.proposeAs(raftcmd.KindPut, put("x", 0), noLogin); !errors.Is(res.Err, rpctypes.ErrGRPCAuthOldRevision) {
		t.Fatalf("put without a login after auth was enabled: got %v, want %v", res.Err, rpctypes.ErrGRPCAuthOldRevision)
	}
	st, err := auth.Revision(nw.dbs[1])
	if err != nil {
		t.Fatal(err)
	}
	as := func(user string, rev uint64) func(*raftcmd.Command) {
		return func(c *raftcmd.Command) { c.AuthUser, c.AuthRevision = user, rev }
	}
	if res := nw.proposeAs(raftcmd.KindPut, put("a/2", 0), as("alice", st-1)); !errors.Is(res.Err, rpctypes.ErrGRPCAuthOldRevision) {
		t.Fatalf("alice's put checked at an older auth revision: got %v, want %v", res.Err, rpctypes.ErrGRPCAuthOldRevision)
	}
	if res := nw.proposeAs(raftcmd.KindPut, put("r", 0), as("root", st-1)); res.Err != nil {
		t.Fatalf("root's put checked at an older auth revision: got %v, want success (root may do everything)", res.Err)
	}
	for _, c := range []struct {
		what string
		kind raftcmd.Kind
		req  proto.Message
		user string
		want error
	}{
		{"alice put on her lease", raftcmd.KindPut, put("a/2", 7), "alice", nil},
		{"alice put on the lease holding secret", raftcmd.KindPut, put("a/3", 8), "alice", rpctypes.ErrGRPCPermissionDenied},
		{"alice txn putting on it in the failure branch", raftcmd.KindTxn, &etcdpb.TxnRequest{Failure: []*etcdpb.RequestOp{
			{Request: &etcdpb.RequestOp_RequestPut{RequestPut: put("a/3", 8)}}}}, "alice", rpctypes.ErrGRPCPermissionDenied},
		{"alice revoke the lease holding secret", raftcmd.KindLeaseRevoke, &etcdpb.LeaseRevokeRequest{ID: 8}, "alice", rpctypes.ErrGRPCPermissionDenied},
		{"root put on the lease holding secret", raftcmd.KindPut, put("a/3", 8), "root", nil},
		{"alice revoke her lease", raftcmd.KindLeaseRevoke, &etcdpb.LeaseRevokeRequest{ID: 7}, "alice", nil},
	} {
		if res := nw.proposeAs(c.kind, c.req, as(c.user, st)); !errors.Is(res.Err, c.want) {
			t.Fatalf("%s: got %v, want %v", c.what, res.Err, c.want)
		}
	}

	// Auth management is judged by who may do it when it applies, not by
	// the revision (as etcd): concurrent admin calls do not clash.
	old := st - 1
	for _, c := range []struct {
		what string
		kind raftcmd.Kind
		req  proto.Message
		user string
		want error
	}{
		{"root adds a user, checked at an older revision", raftcmd.KindUserAdd, &etcdpb.AuthUserAddRequest{Name: "carol", HashedPassword: "h"}, "root", nil},
		{"alice changes her password, checked at an older revision", raftcmd.KindUserChangePassword, &etcdpb.AuthUserChangePasswordRequest{Name: "alice", HashedPassword: "h2"}, "alice", nil},
		{"alice adds a user", raftcmd.KindUserAdd, &etcdpb.AuthUserAddRequest{Name: "dave", HashedPassword: "h"}, "alice", rpctypes.ErrGRPCPermissionDenied},
		{"a deleted user adds a user", raftcmd.KindUserAdd, &etcdpb.AuthUserAddRequest{Name: "erin", HashedPassword: "h"}, "gone", rpctypes.ErrGRPCUserNotFound},
		{"Authenticate stays fenced by revision", raftcmd.KindAuthenticate, &etcdpb.InternalAuthenticateRequest{Name: "alice", SimpleToken: "t"}, "alice", rpctypes.ErrGRPCAuthOldRevision},
	} {
		if res := nw.proposeAs(c.kind, c.req, as(c.user, old)); !errors.Is(res.Err, c.want) {
			t.Fatalf("%s: got %v, want %v", c.what, res.Err, c.want)
		}
	}
	if _, ok := nw.get(1, "a/3"); !ok {
		t.Fatal("root's put on the lease holding secret: got no key a/3, want it")
	}
	if _, ok := nw.get(1, "a/1"); ok {
		t.Fatal("alice revoked her lease: got key a/1 still there, want it deleted")
	}
}
