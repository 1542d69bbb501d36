package auth

import (
	"errors"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/synodpb"
)

// TestLimitPermissions: bob may take from limit "api" (readwrite on its
// reserved prefix) and only read limit "ro"; defining limits is root's.
func TestLimitPermissions(t *testing.T) {
	db := authDB(t, false)
	for _, req := range []proto.Message{
		&pb.AuthUserAddRequest{Name: "bob", HashedPassword: "h-bob"},
		&pb.AuthRoleAddRequest{Name: "limits"},
		&pb.AuthRoleGrantPermissionRequest{Name: "limits", Perm: &authpb.Permission{PermType: authpb.Permission_READWRITE, Key: []byte("\x01synod/limit/api/"), RangeEnd: []byte("\x01synod/limit/api0")}},
		&pb.AuthRoleGrantPermissionRequest{Name: "limits", Perm: &authpb.Permission{PermType: authpb.Permission_READ, Key: []byte("\x01synod/limit/ro/"), RangeEnd: []byte("\x01synod/limit/ro0")}},
		&pb.AuthUserGrantRoleRequest{User: "bob", Role: "limits"},
		&pb.AuthEnableRequest{},
	} {
		mustApply(t, db, req)
	}
	a := newTestAuthorizer(t, db)
	bob := login(t, db, a, "bob", "tok.bob")
	root := login(t, db, a, "root", "tok.root")
	items := func(names ...string) []*synodpb.TakeItem {
		var out []*synodpb.TakeItem
		for _, n := range names {
			out = append(out, &synodpb.TakeItem{Limit: n, Key: []byte("k")})
		}
		return out
	}
	deny := rpctypes.ErrGRPCPermissionDenied
	for _, c := range []struct {
		method string
		req    any
		want   error
	}{
		{"Take", &synodpb.TakeRequest{Items: items("api")}, nil},
		{"Take", &synodpb.TakeRequest{Items: items("api", "ro")}, deny}, // one forbidden item fails the batch
		{"Take", &synodpb.TakeRequest{Items: items("ro"), Peek: true}, nil},
		{"Take", &synodpb.TakeRequest{Items: items("ro")}, deny},
		{"Take", &synodpb.TakeRequest{Items: items("apix")}, deny}, // another limit sharing the name's prefix
		{"Refund", &synodpb.RefundRequest{Items: items("api")}, nil},
		{"Refund", &synodpb.RefundRequest{Items: items("ro")}, deny},
		{"Acquire", &synodpb.AcquireRequest{Limit: "api"}, nil},
		{"Release", &synodpb.ReleaseRequest{Limit: "ro"}, deny},
		{"GetLimit", &synodpb.GetLimitRequest{Name: "ro"}, nil},
		{"LimitStats", &synodpb.LimitStatsRequest{Name: "api"}, nil},
		{"LimitStats", &synodpb.LimitStatsRequest{Name: "other"}, deny},
		{"ListLimits", &synodpb.ListLimitsRequest{}, deny},
		{"SetLimit", &synodpb.SetLimitRequest{Limit: &synodpb.Limit{Name: "api"}}, deny},
		{"DeleteLimit", &synodpb.DeleteLimitRequest{Name: "api"}, deny},
	} {
		if err := unary(a, bob, "/synodpb.Limits/"+c.method, c.req, nil); !errors.Is(err, c.want) {
			t.Errorf("bob: %s %v: got %v, want %v", c.method, c.req, err, c.want)
		}
	}
	for _, req := range []any{&synodpb.SetLimitRequest{}, &synodpb.DeleteLimitRequest{}, &synodpb.ListLimitsRequest{}} {
		if err := unary(a, root, "/synodpb.Limits/X", req, nil); err != nil {
			t.Errorf("root: %T: %v", req, err)
		}
	}
}
