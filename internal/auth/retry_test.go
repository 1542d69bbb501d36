package auth

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// staleHandler is a handler that records the fence of every call and, for
// the first n calls, applies change to the auth state (as a concurrent
// admin call would) and answers that the request is stale, as apply does.
type staleHandler struct {
	t      *testing.T
	db     *pebble.DB
	a      *Authorizer
	n      int
	change func(i int) proto.Message
	fences []Fence
}

func (h *staleHandler) handle(ctx context.Context, _ any) (any, error) {
	f, ok := FenceFromContext(ctx)
	if !ok {
		h.t.Fatal("handler: got a request without a fence, want one")
	}
	h.fences = append(h.fences, f)
	if i := len(h.fences); i <= h.n {
		mustApply(h.t, h.db, h.change(i))
		h.a.Invalidate()
		return nil, rpctypes.ErrGRPCAuthOldRevision
	}
	return &pb.PutResponse{}, nil
}

func (h *staleHandler) call(ctx context.Context, req any) error {
	_, err := h.a.Unary()(ctx, req, &grpc.UnaryServerInfo{FullMethod: "/etcdserverpb.KV/Put"}, h.handle)
	return err
}

// TestStaleRequestIsRetriedUntilItGoesThrough: a request refused at apply
// because the auth state moved is checked again and proposed anew, with a
// fresh revision, as often as it takes (there used to be three tries).
func TestStaleRequestIsRetriedUntilItGoesThrough(t *testing.T) {
	db := authDB(t, true)
	a := newTestAuthorizer(t, db)
	ctx := login(t, db, a, "alice", "tok.1")
	h := &staleHandler{t: t, db: db, a: a, n: 10, change: func(i int) proto.Message {
		return &pb.AuthUserAddRequest{Name: fmt.Sprintf("u%d", i), HashedPassword: "h"}
	}}
	if err := h.call(ctx, &pb.PutRequest{Key: []byte("a")}); err != nil {
		t.Fatalf("put refused as stale 10 times: got %v, want success", err)
	}
	if len(h.fences) != 11 {
		t.Fatalf("calls: got %d, want 11", len(h.fences))
	}
	for i, f := range h.fences {
		if f.User != "alice" || (i > 0 && f.Revision != h.fences[i-1].Revision+1) {
			t.Fatalf("fences: got %+v, want alice's, one revision newer each time", h.fences)
		}
	}
}

// TestStaleRequestIsCheckedAgain: a permission revoked between the check
// and the apply refuses the retry.
func TestStaleRequestIsCheckedAgain(t *testing.T) {
	db := authDB(t, true)
	a := newTestAuthorizer(t, db)
	ctx := login(t, db, a, "alice", "tok.1")
	h := &staleHandler{t: t, db: db, a: a, n: 1, change: func(int) proto.Message {
		return &pb.AuthUserRevokeRoleRequest{Name: "alice", Role: "a"}
	}}
	if err := h.call(ctx, &pb.PutRequest{Key: []byte("a")}); !errors.Is(err, rpctypes.ErrGRPCPermissionDenied) {
		t.Fatalf("put whose permission was revoked before it applied: got %v, want %v", err, rpctypes.ErrGRPCPermissionDenied)
	}
	if len(h.fences) != 1 {
		t.Fatalf("calls: got %d, want 1", len(h.fences))
	}

	// Without a login: checked while auth was disabled, refused at apply
	// because it was enabled meanwhile, checked again: no user.
	db = authDB(t, false)
	a = newTestAuthorizer(t, db)
	h = &staleHandler{t: t, db: db, a: a, n: 1, change: func(int) proto.Message { return &pb.AuthEnableRequest{} }}
	if err := h.call(context.Background(), &pb.PutRequest{Key: []byte("a")}); !errors.Is(err, rpctypes.ErrGRPCUserEmpty) {
		t.Fatalf("put without a login applied after auth was enabled: got %v, want %v", err, rpctypes.ErrGRPCUserEmpty)
	}
	if len(h.fences) != 1 || h.fences[0].User != "" {
		t.Fatalf("fences: got %+v, want one without a user", h.fences)
	}
}

// TestStaleRetriesAreBounded: a request that keeps being refused as stale
// gives up after the retry timeout, answering the refusal.
func TestStaleRetriesAreBounded(t *testing.T) {
	db := authDB(t, true)
	tokens, err := NewTokens(TokenConfig{}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := New(Config{DB: db, Tokens: tokens, RetryTimeout: time.Nanosecond})
	ctx := login(t, db, a, "alice", "tok.1")
	h := &staleHandler{t: t, db: db, a: a, n: 1 << 30, change: func(i int) proto.Message {
		return &pb.AuthUserAddRequest{Name: fmt.Sprintf("u%d", i), HashedPassword: "h"}
	}}
	if err := h.call(ctx, &pb.PutRequest{Key: []byte("a")}); !errors.Is(err, rpctypes.ErrGRPCAuthOldRevision) {
		t.Fatalf("put refused as stale forever: got %v, want %v", err, rpctypes.ErrGRPCAuthOldRevision)
	}
	// A request whose context ends stops too.
	cctx, cancel := context.WithCancel(ctx)
	h = &staleHandler{t: t, db: db, a: New(Config{DB: db, Tokens: tokens}), n: 1 << 30, change: func(i int) proto.Message {
		cancel()
		return &pb.AuthUserAddRequest{Name: fmt.Sprintf("v%d", i), HashedPassword: "h"}
	}}
	if err := h.call(cctx, &pb.PutRequest{Key: []byte("a")}); !errors.Is(err, rpctypes.ErrGRPCAuthOldRevision) || len(h.fences) != 1 {
		t.Fatalf("put refused as stale after its context ended: got %v after %d calls, want %v after 1", err, len(h.fences), rpctypes.ErrGRPCAuthOldRevision)
	}
}
