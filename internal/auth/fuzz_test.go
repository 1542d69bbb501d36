package auth

import (
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// authRequests lists the request types of the auth commands, indexed by
// the fuzzer's kind byte.
var authRequests = []func() proto.Message{
	func() proto.Message { return &pb.AuthEnableRequest{} },
	func() proto.Message { return &pb.AuthDisableRequest{} },
	func() proto.Message { return &pb.InternalAuthenticateRequest{} },
	func() proto.Message { return &pb.AuthUserAddRequest{} },
	func() proto.Message { return &pb.AuthUserDeleteRequest{} },
	func() proto.Message { return &pb.AuthUserChangePasswordRequest{} },
	func() proto.Message { return &pb.AuthUserGrantRoleRequest{} },
	func() proto.Message { return &pb.AuthUserRevokeRoleRequest{} },
	func() proto.Message { return &pb.AuthRoleAddRequest{} },
	func() proto.Message { return &pb.AuthRoleDeleteRequest{} },
	func() proto.Message { return &pb.AuthRoleGrantPermissionRequest{} },
	func() proto.Message { return &pb.AuthRoleRevokePermissionRequest{} },
}

func openMem(t testing.TB) *pebble.DB {
	t.Helper()
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatalf("open pebble: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mustApply(t testing.TB, db *pebble.DB, req proto.Message) {
	t.Helper()
	b := db.NewIndexedBatch()
	if _, _, err := Apply(b, req); err != nil {
		t.Fatalf("apply %T: %v", req, err)
	}
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}
}

// FuzzAuthRequests applies arbitrary auth commands to an auth state with
// auth enabled: no panic; a refused command writes nothing; an accepted one
// bumps the revision at most once and keeps etcd's invariants (auth enabled
// implies root exists with the root role; every granted role exists).
func FuzzAuthRequests(f *testing.F) {
	for i, m := range []proto.Message{
		&pb.AuthEnableRequest{},
		&pb.AuthDisableRequest{},
		&pb.InternalAuthenticateRequest{Name: "root", SimpleToken: "t.1"},
		&pb.AuthUserAddRequest{Name: "bob", HashedPassword: "$2a$04$x"},
		&pb.AuthUserDeleteRequest{Name: "root"},
		&pb.AuthUserChangePasswordRequest{Name: "root", HashedPassword: "h"},
		&pb.AuthUserGrantRoleRequest{User: "root", Role: "r"},
		&pb.AuthUserRevokeRoleRequest{Name: "root", Role: "root"},
		&pb.AuthRoleAddRequest{Name: "r2"},
		&pb.AuthRoleDeleteRequest{Role: "root"},
		&pb.AuthRoleGrantPermissionRequest{Name: "r", Perm: &authpb.Permission{PermType: authpb.Permission_READ, Key: []byte("a")}},
		&pb.AuthRoleRevokePermissionRequest{Role: "r", Key: []byte("a")},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), b)
	}
	f.Add(uint8(10), []byte{0x12, 0x02, 0x08, 0x07}) // a permission of unknown type
	db := openMem(f)
	mustApply(f, db, &pb.AuthUserAddRequest{Name: "root", HashedPassword: "h"})
	mustApply(f, db, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"})
	mustApply(f, db, &pb.AuthRoleAddRequest{Name: "r"})
	mustApply(f, db, &pb.AuthEnableRequest{})
	before, err := Load(db)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, kind uint8, payload []byte) {
		req := authRequests[int(kind)%len(authRequests)]()
		if proto.Unmarshal(payload, req) != nil {
			return
		}
		b := db.NewIndexedBatch()
		defer b.Close()
		_, _, err := Apply(b, req)
		if err != nil {
			if _, ok := status.FromError(err); !ok {
				t.Fatalf("apply %T: got non-status error %v, want an etcd error", req, err)
			}
			if !b.Empty() {
				t.Fatalf("apply %T refused with %v: got writes in the batch, want none", req, err)
			}
			return
		}
		after, err := Load(b)
		if err != nil {
			t.Fatalf("load after %T: %v", req, err)
		}
		if after.Revision != before.Revision && after.Revision != before.Revision+1 {
			t.Fatalf("revision after %T: got %d, want %d or %d", req, after.Revision, before.Revision, before.Revision+1)
		}
		if after.Enabled && !after.IsRoot(RootUser) {
			t.Fatalf("after %T: got auth enabled without root having the root role, want refused", req)
		}
		for _, u := range after.Users {
			for _, r := range u.Roles {
				if _, ok := after.Roles[r]; !ok && r != RootRole {
					t.Fatalf("after %T: user %s has role %q that does not exist", req, u.Name, r)
				}
			}
		}
	})
}

// FuzzCheckTxn checks arbitrary txns for a user without permissions: no
// panic, and only a txn that touches no key at all is allowed.
func FuzzCheckTxn(f *testing.F) {
	for _, m := range []proto.Message{
		&pb.TxnRequest{},
		&pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte("a")}}},
		&pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{}}}}},
		&pb.TxnRequest{Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{}}}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	st := &State{Enabled: true, Users: map[string]*authpb.User{"nobody": {Name: []byte("nobody")}}, Roles: map[string]*authpb.Role{}}
	a := New(Config{Tokens: &Tokens{}})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r pb.TxnRequest
		if proto.Unmarshal(data, &r) != nil {
			return
		}
		err := a.Check(st, "nobody", &r)
		if err == nil && touchesKeys(&r) {
			t.Fatalf("txn %v for a user without permissions: got allowed, want permission denied", &r)
		}
	})
}

func touchesKeys(r *pb.TxnRequest) bool {
	if len(r.Compare) > 0 {
		return true
	}
	return slices.ContainsFunc(slices.Concat(r.Success, r.Failure), func(op *pb.RequestOp) bool {
		if t, ok := op.Request.(*pb.RequestOp_RequestTxn); ok && t.RequestTxn != nil {
			return touchesKeys(t.RequestTxn)
		}
		return true
	})
}
