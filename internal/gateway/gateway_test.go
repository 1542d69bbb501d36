package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// fakeKV answers Range with what its call saw.
type fakeKV struct {
	pb.UnimplementedKVServer
	entered chan struct{} // Put signals it is running
	block   chan struct{} // Put waits for it (or its context)
}

func (fakeKV) Range(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	p, _ := peer.FromContext(ctx)
	var kvs []*mvccpb.KeyValue
	for _, k := range []string{"token", "hasleader"} {
		if v := md.Get(k); len(v) > 0 {
			kvs = append(kvs, &mvccpb.KeyValue{Key: []byte(k), Value: []byte(v[0])})
		}
	}
	if p != nil && p.Addr != nil {
		kvs = append(kvs, &mvccpb.KeyValue{Key: []byte("peer"), Value: []byte(p.Addr.String())})
	}
	if len(req.Key) == 0 {
		return nil, rpctypes.ErrGRPCEmptyKey
	}
	return &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: 7}, Kvs: kvs, Count: int64(len(kvs))}, nil
}

func (f fakeKV) Put(ctx context.Context, _ *pb.PutRequest) (*pb.PutResponse, error) {
	f.entered <- struct{}{}
	select {
	case <-f.block:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &pb.PutResponse{}, nil
}

// fakeWatch echoes each create request's key as an event, and fails on a
// key "fail".
type fakeWatch struct{ pb.UnimplementedWatchServer }

func (fakeWatch) Watch(stream pb.Watch_WatchServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		key := req.GetCreateRequest().GetKey()
		if string(key) == "fail" {
			return rpctypes.ErrGRPCPermissionDenied
		}
		if err := stream.Send(&pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 1}, Created: true,
			Events: []*mvccpb.Event{{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: key}}}}); err != nil {
			return err
		}
	}
}

func newTestGateway(t *testing.T, cfg Config, kv fakeKV) (*Gateway, *httptest.Server) {
	t.Helper()
	g := New(cfg)
	pb.RegisterKVServer(g, kv)
	pb.RegisterWatchServer(g, fakeWatch{})
	srv := httptest.NewServer(g)
	t.Cleanup(func() {
		srv.Close()
		g.Close()
	})
	return g, srv
}

func post(t *testing.T, url, body string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func wantAnswer(t *testing.T, what string, resp *http.Response, body string, status int, want string) {
	t.Helper()
	if resp.StatusCode != status || body != want {
		t.Errorf("%s: got %d %s, want %d %s", what, resp.StatusCode, body, status, want)
	}
}

// TestUnaryCallsPassTheInterceptors checks that a call goes through the
// interceptors, in order, with the gRPC method's name, and reaches the
// service with the token and metadata headers as metadata.
func TestUnaryCallsPassTheInterceptors(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	record := func(name string) grpc.UnaryServerInterceptor {
		return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			mu.Lock()
			seen = append(seen, name+" "+info.FullMethod)
			mu.Unlock()
			return h(ctx, req)
		}
	}
	_, srv := newTestGateway(t, Config{Unary: []grpc.UnaryServerInterceptor{record("first"), record("second")}}, fakeKV{})
	resp, body := post(t, srv.URL+"/v3/kv/range", `{"key":"YQ=="}`, "Authorization", "tok", "Grpc-Metadata-Hasleader", "true")
	if resp.StatusCode != 200 || !strings.Contains(body, `{"key":"dG9rZW4=","value":"dG9r"},{"key":"aGFzbGVhZGVy","value":"dHJ1ZQ=="}`) {
		t.Errorf("range: got %d %s, want the token and hasleader metadata", resp.StatusCode, body)
	}
	if !strings.HasPrefix(body, `{"header":{"revision":"7"},"kvs":[`) || !strings.HasSuffix(body, `],"count":"3"}`) {
		t.Errorf("range: got %s, want compact JSON with the header first and count as a string", body)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"first /etcdserverpb.KV/Range", "second /etcdserverpb.KV/Range"}; strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Errorf("interceptors: got %q, want %q", seen, want)
	}
}

// TestErrorsAndLimits checks etcd's error bodies and HTTP statuses, and
// the size limits.
func TestErrorsAndLimits(t *testing.T) {
	_, srv := newTestGateway(t, Config{MaxRecvMsgSize: 100}, fakeKV{})
	resp, body := post(t, srv.URL+"/v3/kv/range", `{}`)
	wantAnswer(t, "empty key", resp, body, 400, `{"code":3,"message":"etcdserver: key is not provided"}`)
	resp, body = post(t, srv.URL+"/v3/kv/range", `{"key":"`+strings.Repeat("QUFB", 40)+`"}`)
	wantAnswer(t, "over the receive limit", resp, body, 429, `{"code":8,"message":"grpc: received message larger than max (122 vs. 100)"}`)
	resp, body = post(t, srv.URL+"/v3/kv/range", `{"key":"`+strings.Repeat("QUFB", 1<<20)+`"}`)
	wantAnswer(t, "body over its limit", resp, body, 429, `{"code":8,"message":"gateway: request larger than max (1048776 bytes of JSON)"}`)
	resp, body = post(t, srv.URL+"/v3/kv/range", `{"key":1}`)
	wantAnswer(t, "wrong type", resp, body, 400, `{"code":3,"message":"proto: (line 1:8): invalid value for bytes field key: 1"}`)
	resp, body = post(t, srv.URL+"/v3/kv/txn", `{}`)
	wantAnswer(t, "unimplemented method", resp, body, 501, `{"code":12,"message":"method Txn not implemented"}`)
	resp, body = post(t, srv.URL+"/v3/lease/grant", `{}`)
	wantAnswer(t, "unregistered service", resp, body, 501, `{"code":12,"message":"unknown method /etcdserverpb.Lease/LeaseGrant"}`)
}

// TestStreams checks a bidirectional stream: each request of the body is a
// message, each response a line, and an error ends the stream with an
// error line (or, before any response, with the error's HTTP status).
func TestStreams(t *testing.T) {
	_, srv := newTestGateway(t, Config{}, fakeKV{})
	resp, body := post(t, srv.URL+"/v3/watch", `{"create_request":{"key":"YQ=="}}`+"\n"+`{"create_request":{"key":"Yg=="}}`)
	wantAnswer(t, "two creates", resp, body, 200,
		`{"result":{"header":{"revision":"1"},"created":true,"events":[{"type":"DELETE","kv":{"key":"YQ=="}}]}}`+"\n"+
			`{"result":{"header":{"revision":"1"},"created":true,"events":[{"type":"DELETE","kv":{"key":"Yg=="}}]}}`+"\n")
	resp, body = post(t, srv.URL+"/v3/watch", `{"create_request":{"key":"YQ=="}} {"create_request":{"key":"ZmFpbA=="}}`)
	wantAnswer(t, "failure after a response", resp, body, 200,
		`{"result":{"header":{"revision":"1"},"created":true,"events":[{"type":"DELETE","kv":{"key":"YQ=="}}]}}`+"\n"+
			`{"error":{"code":7,"message":"etcdserver: permission denied"}}`+"\n")
	resp, body = post(t, srv.URL+"/v3/watch", `{"create_request":{"key":"ZmFpbA=="}}`)
	wantAnswer(t, "failure first", resp, body, 403, `{"error":{"code":7,"message":"etcdserver: permission denied"}}`+"\n")
	resp, body = post(t, srv.URL+"/v3/watch", `{"create_request":`)
	wantAnswer(t, "bad JSON", resp, body, 400, `{"error":{"code":3,"message":"unexpected EOF"}}`+"\n")
	resp, body = post(t, srv.URL+"/v3/watch", ``)
	wantAnswer(t, "empty body", resp, body, 200, ``)
}

// TestCORS checks etcd's CORS headers for allowed origins only, and the
// answer to preflights.
func TestCORS(t *testing.T) {
	_, srv := newTestGateway(t, Config{CORS: []string{"https://console.example"}}, fakeKV{})
	resp, _ := post(t, srv.URL+"/v3/kv/range", `{"key":"YQ=="}`, "Origin", "https://console.example")
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "https://console.example" {
		t.Errorf("allowed origin: got Access-Control-Allow-Origin %q", got)
	}
	resp, _ = post(t, srv.URL+"/v3/kv/range", `{"key":"YQ=="}`, "Origin", "https://evil.example")
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("other origin: got Access-Control-Allow-Origin %q, want none", got)
	}
	req, _ := http.NewRequest(http.MethodOptions, srv.URL+"/v3/kv/range", nil)
	req.Header.Set("Origin", "https://console.example")
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 200 || r.Header.Get("Access-Control-Allow-Headers") != "accept, content-type, authorization" {
		t.Errorf("preflight: got %d %v", r.StatusCode, r.Header)
	}
}

// TestCloseEndsCalls checks that Close cancels the calls in progress,
// waits for them, and refuses new ones.
func TestCloseEndsCalls(t *testing.T) {
	kv := fakeKV{entered: make(chan struct{}, 1), block: make(chan struct{})}
	g, srv := newTestGateway(t, Config{}, kv)
	done := make(chan string, 1)
	go func() {
		resp, body := post(t, srv.URL+"/v3/kv/put", `{"key":"YQ=="}`)
		done <- resp.Status + " " + body
	}()
	select {
	case <-kv.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("put never reached the service")
	}
	g.Close()
	select {
	case got := <-done:
		if !strings.Contains(got, `"code":1,`) {
			t.Errorf("put during Close: got %s, want Canceled", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("put still running after Close")
	}
	resp, body := post(t, srv.URL+"/v3/kv/range", `{"key":"YQ=="}`)
	wantAnswer(t, "after Close", resp, body, 503, `{"code":14,"message":"server is stopping"}`)
}
