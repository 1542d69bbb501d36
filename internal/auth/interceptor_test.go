package auth

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// authDB returns a store with users root (role root) and alice, whose role
// may read and write key "a" only, and with auth enabled if enable.
func authDB(t *testing.T, enable bool) *pebble.DB {
	t.Helper()
	db := openMem(t)
	for _, req := range []proto.Message{
		&pb.AuthUserAddRequest{Name: "root", HashedPassword: "h-root"},
		&pb.AuthUserGrantRoleRequest{User: "root", Role: RootRole},
		&pb.AuthUserAddRequest{Name: "alice", HashedPassword: "h-alice"},
		&pb.AuthRoleAddRequest{Name: "a"},
		&pb.AuthRoleGrantPermissionRequest{Name: "a", Perm: &authpb.Permission{PermType: authpb.Permission_READWRITE, Key: []byte("a")}},
		&pb.AuthUserGrantRoleRequest{User: "alice", Role: "a"},
	} {
		mustApply(t, db, req)
	}
	if enable {
		mustApply(t, db, &pb.AuthEnableRequest{})
	}
	return db
}

// login assigns a simple token to user as an applied Authenticate does.
func login(t *testing.T, db *pebble.DB, a *Authorizer, user, token string) context.Context {
	t.Helper()
	b := db.NewIndexedBatch()
	defer b.Close()
	_, tok, err := Apply(b, &pb.InternalAuthenticateRequest{Name: user, SimpleToken: token})
	if err != nil || tok == nil {
		t.Fatalf("authenticate %s: got token %v, error %v, want a token", user, tok, err)
	}
	a.Tokens().Register(*tok)
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs(TokenMetadataKey, token))
}

func newTestAuthorizer(t *testing.T, db *pebble.DB) *Authorizer {
	t.Helper()
	tokens, err := NewTokens(TokenConfig{}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{DB: db, Tokens: tokens, Header: func() *pb.ResponseHeader { return &pb.ResponseHeader{} }})
}

func unary(a *Authorizer, ctx context.Context, method string, req, resp any) error {
	_, err := a.Unary()(ctx, req, &grpc.UnaryServerInfo{FullMethod: method},
		func(context.Context, any) (any, error) { return resp, nil })
	return err
}

func TestLeaseTimeToLiveKeysNeedRead(t *testing.T) {
	db := authDB(t, true)
	a := newTestAuthorizer(t, db)
	ctx := login(t, db, a, "alice", "tok.1")
	const method = "/etcdserverpb.Lease/LeaseTimeToLive"
	for _, c := range []struct {
		req  *pb.LeaseTimeToLiveRequest
		keys []string
		want error
	}{
		{&pb.LeaseTimeToLiveRequest{ID: 1}, nil, nil},
		{&pb.LeaseTimeToLiveRequest{ID: 1, Keys: true}, []string{"a"}, nil},
		{&pb.LeaseTimeToLiveRequest{ID: 1, Keys: true}, []string{"a", "secret"}, rpctypes.ErrGRPCPermissionDenied},
	} {
		resp := &pb.LeaseTimeToLiveResponse{ID: 1}
		for _, k := range c.keys {
			resp.Keys = append(resp.Keys, []byte(k))
		}
		if err := unary(a, ctx, method, c.req, resp); !errors.Is(err, c.want) {
			t.Errorf("time to live of a lease with keys %q as alice: got error %v, want %v", c.keys, err, c.want)
		}
	}
}

func TestSimpleTokenDiesWithPasswordChangeAndUserDelete(t *testing.T) {
	db := authDB(t, true)
	a := newTestAuthorizer(t, db)
	const method = "/etcdserverpb.KV/Range"
	get := &pb.RangeRequest{Key: []byte("a")}

	ctx := login(t, db, a, "alice", "tok.1")
	if err := unary(a, ctx, method, get, &pb.RangeResponse{}); err != nil {
		t.Fatalf("range with a fresh token: got error %v, want success", err)
	}
	mustApply(t, db, &pb.AuthUserChangePasswordRequest{Name: "alice", HashedPassword: "h-alice-2"})
	a.Invalidate()
	if err := unary(a, ctx, method, get, &pb.RangeResponse{}); !errors.Is(err, rpctypes.ErrGRPCInvalidAuthToken) {
		t.Fatalf("range with a token issued before a password change: got error %v, want %v", err, rpctypes.ErrGRPCInvalidAuthToken)
	}

	ctx = login(t, db, a, "alice", "tok.2")
	mustApply(t, db, &pb.AuthUserDeleteRequest{Name: "alice"})
	mustApply(t, db, &pb.AuthUserAddRequest{Name: "alice", HashedPassword: "h-new-alice"})
	mustApply(t, db, &pb.AuthUserGrantRoleRequest{User: "alice", Role: "a"})
	a.Invalidate()
	if err := unary(a, ctx, method, get, &pb.RangeResponse{}); !errors.Is(err, rpctypes.ErrGRPCInvalidAuthToken) {
		t.Fatalf("range with a token of a deleted then added again user: got error %v, want %v", err, rpctypes.ErrGRPCInvalidAuthToken)
	}
}

// fakeStream is a server stream that receives msgs and records what is sent.
type fakeStream struct {
	grpc.ServerStream
	ctx  context.Context
	msgs []proto.Message
	sent []any
}

func (f *fakeStream) Context() context.Context { return f.ctx }

func (f *fakeStream) SendMsg(m any) error { f.sent = append(f.sent, m); return nil }

func (f *fakeStream) RecvMsg(m any) error {
	if len(f.msgs) == 0 {
		return io.EOF
	}
	proto.Reset(m.(proto.Message))
	proto.Merge(m.(proto.Message), f.msgs[0])
	f.msgs = f.msgs[1:]
	return nil
}

func TestStreamOpenedBeforeAuthEnableIsChecked(t *testing.T) {
	watch := func(key string) *pb.WatchRequest {
		return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte(key)}}}
	}
	for _, c := range []struct {
		name       string
		md         metadata.MD
		want       error
		wantRefuse int // canceled watch responses sent
	}{
		// As etcd: the stream stays open, and each watch it asks for is
		// refused with the reason.
		{"no credentials", metadata.MD{}, io.EOF, 2},
		{"alice", metadata.Pairs(TokenMetadataKey, "tok.1"), nil, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := authDB(t, false)
			a := newTestAuthorizer(t, db)
			a.Tokens().Register(Token{User: "alice", Token: "tok.1", Password: []byte("h-alice")})
			ss := &fakeStream{ctx: metadata.NewIncomingContext(context.Background(), c.md),
				msgs: []proto.Message{watch("secret"), watch("a")}}
			var got error
			var created *pb.WatchRequest
			err := a.Stream()(nil, ss, &grpc.StreamServerInfo{FullMethod: "/etcdserverpb.Watch/Watch", IsClientStream: true, IsServerStream: true},
				func(_ any, s grpc.ServerStream) error {
					// Auth is enabled while the stream is open, then the
					// client creates watches.
					mustApply(t, db, &pb.AuthEnableRequest{})
					a.Invalidate()
					created = &pb.WatchRequest{}
					got = s.RecvMsg(created)
					return nil
				})
			if err != nil {
				t.Fatalf("stream: got error %v, want none", err)
			}
			if !errors.Is(got, c.want) {
				t.Fatalf("watch creations after auth was enabled: got error %v, want %v", got, c.want)
			}
			if got == nil && string(created.GetCreateRequest().GetKey()) != "a" {
				t.Fatalf("watch creation handed to the service: got key %q, want %q", created.GetCreateRequest().GetKey(), "a")
			}
			if len(ss.sent) != c.wantRefuse {
				t.Fatalf("refusals sent: got %d, want %d", len(ss.sent), c.wantRefuse)
			}
			if c.md.Len() == 0 {
				for _, m := range ss.sent {
					if r := m.(*pb.WatchResponse); !r.Canceled || !strings.Contains(r.CancelReason, "user name is empty") {
						t.Fatalf("refusal: got %v, want a cancellation for want of a user", r)
					}
				}
			}
		})
	}
}

func TestRangeStreamCheckedAgainAfterItsRead(t *testing.T) {
	db := authDB(t, true)
	a := newTestAuthorizer(t, db)
	ctx := login(t, db, a, "alice", "tok.1")
	ss := &fakeStream{ctx: ctx, msgs: []proto.Message{&pb.RangeRequest{Key: []byte("a")}}}
	err := a.Stream()(nil, ss, &grpc.StreamServerInfo{FullMethod: "/etcdserverpb.KV/RangeStream", IsServerStream: true},
		func(_ any, s grpc.ServerStream) error {
			if err := s.RecvMsg(&pb.RangeRequest{}); err != nil {
				return err
			}
			// The read waits for its ReadIndex, and meanwhile the node
			// applies a revocation committed before the request.
			mustApply(t, db, &pb.AuthRoleRevokePermissionRequest{Role: "a", Key: []byte("a")})
			a.Invalidate()
			return s.SendMsg(&pb.RangeStreamResponse{RangeResponse: &pb.RangeResponse{Kvs: nil}})
		})
	if !errors.Is(err, rpctypes.ErrGRPCPermissionDenied) {
		t.Fatalf("range stream of a key whose permission was revoked during the read: got error %v, want %v", err, rpctypes.ErrGRPCPermissionDenied)
	}
	if len(ss.sent) != 0 {
		t.Fatalf("responses sent: got %d, want 0", len(ss.sent))
	}
}
