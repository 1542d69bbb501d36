package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Config configures a Gateway.
type Config struct {
	// Unary and Stream are the interceptors of the node's gRPC server, in
	// the same order: every call through the gateway passes them as the same
	// call over gRPC does (metrics, authentication, authorization).
	Unary  []grpc.UnaryServerInterceptor
	Stream []grpc.StreamServerInterceptor
	// MaxRecvMsgSize is the gRPC server's grpc.MaxRecvMsgSize: a request
	// whose protobuf encoding is larger is refused with the error gRPC
	// gives (default 4 MiB, gRPC's default).
	MaxRecvMsgSize int
	// CORS lists the origins whose pages may read the gateway's answers
	// (etcd's --cors); "*" allows any. Empty: no CORS headers.
	CORS   []string
	Logger *slog.Logger
}

// Gateway serves the node's gRPC services as JSON over HTTP, in the shape
// of etcd's gRPC gateway. It implements grpc.ServiceRegistrar: register
// each service with it as with the gRPC server (see Tee), and it serves the
// routes of the registered methods.
type Gateway struct {
	unary     grpc.UnaryServerInterceptor
	stream    grpc.StreamServerInterceptor
	maxRecv   int
	maxBody   int64
	corsAll   bool
	corsAllow map[string]bool
	logger    *slog.Logger

	// ctx is cancelled by Close; every call's context ends with it.
	ctx    context.Context
	cancel context.CancelFunc
	calls  sync.WaitGroup

	mu struct {
		sync.RWMutex
		methods map[string]*method // by full method name
		closed  bool
	}
}

// method is one registered gRPC method.
type method struct {
	impl   any
	unary  grpc.MethodHandler // nil for a stream
	stream *grpc.StreamDesc   // nil for a unary method
	name   string             // full name
}

// New returns a Gateway with no services registered.
func New(cfg Config) *Gateway {
	g := &Gateway{
		unary:     chainUnary(cfg.Unary),
		stream:    chainStream(cfg.Stream),
		maxRecv:   cfg.MaxRecvMsgSize,
		corsAllow: map[string]bool{},
		logger:    cfg.Logger,
	}
	if g.maxRecv <= 0 {
		g.maxRecv = 4 << 20
	}
	// A JSON request is larger than its protobuf encoding: base64 makes
	// bytes a third larger, and names and quotes add to every field.
	g.maxBody = 2*int64(g.maxRecv) + 1<<20
	for _, o := range cfg.CORS {
		if o == "*" {
			g.corsAll = true
		}
		g.corsAllow[o] = true
	}
	if g.logger == nil {
		g.logger = slog.New(slog.DiscardHandler)
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.mu.methods = map[string]*method{}
	return g
}

// RegisterService implements grpc.ServiceRegistrar.
func (g *Gateway) RegisterService(desc *grpc.ServiceDesc, impl any) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range desc.Methods {
		name := "/" + desc.ServiceName + "/" + desc.Methods[i].MethodName
		g.mu.methods[name] = &method{impl: impl, unary: desc.Methods[i].Handler, name: name}
	}
	for i := range desc.Streams {
		name := "/" + desc.ServiceName + "/" + desc.Streams[i].StreamName
		g.mu.methods[name] = &method{impl: impl, stream: &desc.Streams[i], name: name}
	}
}

// Tee returns a registrar that registers every service with each of regs:
// the node's gRPC server and its gateway.
func Tee(regs ...grpc.ServiceRegistrar) grpc.ServiceRegistrar { return tee(regs) }

type tee []grpc.ServiceRegistrar

func (t tee) RegisterService(desc *grpc.ServiceDesc, impl any) {
	for _, r := range t {
		r.RegisterService(desc, impl)
	}
}

// Close ends the calls in progress (their contexts are cancelled) and waits
// for them to return; later requests are refused.
func (g *Gateway) Close() {
	g.mu.Lock()
	g.mu.closed = true
	g.mu.Unlock()
	g.cancel()
	g.calls.Wait()
}

// begin counts a call in, unless the gateway is closed.
func (g *Gateway) begin() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.mu.closed {
		return false
	}
	g.calls.Add(1)
	return true
}

func (g *Gateway) lookup(name string) *method {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.mu.methods[name]
}

// ServeHTTP implements http.Handler for the paths under Prefixes.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.writeCORS(w, r)
	if r.Method == http.MethodOptions {
		// A CORS preflight; etcd answers every OPTIONS request with 200.
		w.WriteHeader(http.StatusOK)
		return
	}
	rt, ok := routes[canonicalPath(r.URL.Path)]
	if !ok {
		writeError(w, status.Error(codes.NotFound, http.StatusText(http.StatusNotFound)))
		return
	}
	if r.Method != http.MethodPost {
		writeError(w, status.Error(codes.Unimplemented, http.StatusText(http.StatusMethodNotAllowed)))
		return
	}
	m := g.lookup(rt.method)
	if m == nil {
		// As gRPC answers a method no service registered.
		writeError(w, status.Errorf(codes.Unimplemented, "unknown method %s", rt.method))
		return
	}
	if !g.begin() {
		writeError(w, status.Error(codes.Unavailable, "server is stopping"))
		return
	}
	defer g.calls.Done()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(g.ctx, cancel)()
	ctx = callContext(ctx, r)
	if m.unary != nil {
		g.serveUnary(ctx, w, r, m)
		return
	}
	g.serveStream(ctx, w, r, m)
}

// writeCORS adds etcd's CORS headers when the request's origin is allowed.
func (g *Gateway) writeCORS(w http.ResponseWriter, r *http.Request) {
	origin := "*"
	if !g.corsAll {
		origin = r.Header.Get("Origin")
		if origin == "" || !g.corsAllow[origin] {
			return
		}
		w.Header().Add("Vary", "Origin")
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE")
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Headers", "accept, content-type, authorization")
}

// metadataPrefix marks the HTTP headers that carry gRPC metadata, as in
// grpc-gateway: "Grpc-Metadata-Foo: bar" is metadata "foo: bar".
const metadataPrefix = "Grpc-Metadata-"

// tokenKey is the metadata key of an auth token (auth.TokenMetadataKey).
const tokenKey = "token"

// callContext gives a call the context a gRPC call would have: the
// request's metadata (the token from the Authorization header, as etcd's
// gateway passes it) and its peer (address, TLS state with the verified
// client certificate).
func callContext(ctx context.Context, r *http.Request) context.Context {
	md := metadata.MD{}
	for k, vs := range r.Header {
		if name, ok := strings.CutPrefix(k, metadataPrefix); ok && name != "" {
			md.Append(strings.ToLower(name), vs...)
		}
	}
	// etcd reads the "token" metadata first, then "authorization".
	if len(md.Get(tokenKey)) == 0 {
		if a := r.Header.Get("Authorization"); a != "" {
			md.Set(tokenKey, a)
		}
	}
	ctx = metadata.NewIncomingContext(ctx, md)
	p := &peer.Peer{Addr: remoteAddr(r.RemoteAddr)}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		p.LocalAddr = la
	}
	if r.TLS != nil {
		p.AuthInfo = credentials.TLSInfo{
			State:          *r.TLS,
			CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		}
	}
	return peer.NewContext(ctx, p)
}

// CallContext returns ctx with what a call through the gateway sees of the
// HTTP request r: its metadata (the Authorization header as the token) and
// its peer (address, TLS state). Other handlers of the client port (the
// web console's) use it to identify a request's user exactly as the
// gateway's calls are identified.
func CallContext(ctx context.Context, r *http.Request) context.Context {
	return callContext(ctx, r)
}

// WriteError answers with err as the gateway answers a failed call: the
// HTTP status of its gRPC code and the status as JSON.
func WriteError(w http.ResponseWriter, err error) { writeError(w, err) }

// remoteAddr is a client's address as net/http reports it.
type remoteAddr string

func (a remoteAddr) Network() string { return "tcp" }
func (a remoteAddr) String() string  { return string(a) }

// serveUnary answers a unary call: one JSON request in the body, one JSON
// response (or error) back.
func (g *Gateway) serveUnary(ctx context.Context, w http.ResponseWriter, r *http.Request, m *method) {
	raw, err := readFirstValue(r.Body, g.maxBody)
	if err != nil {
		writeError(w, err)
		return
	}
	dec := func(v any) error {
		return g.decode(raw, v)
	}
	resp, err := m.unary(m.impl, ctx, dec, g.unary)
	if err != nil {
		writeError(w, err)
		return
	}
	msg, ok := resp.(proto.Message)
	if !ok {
		writeError(w, status.Errorf(codes.Internal, "gateway: response of %s is %T, not a protobuf message", m.name, resp))
		return
	}
	b, err := marshal(msg)
	if err != nil {
		writeError(w, status.Errorf(codes.Internal, "gateway: marshal response: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// decode fills the request message v from raw (nil: an empty request) and
// checks its size as the gRPC server does.
func (g *Gateway) decode(raw []byte, v any) error {
	msg, ok := v.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "gateway: request is %T, not a protobuf message", v)
	}
	if len(raw) > 0 {
		if err := unmarshalOptions.Unmarshal(raw, msg); err != nil {
			return status.Error(codes.InvalidArgument, stableMessage(err))
		}
	}
	if n := proto.Size(msg); n > g.maxRecv {
		return status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", n, g.maxRecv)
	}
	return nil
}

// serveStream runs a streaming call: requests are the JSON values of the
// body (one for a server-streaming method), responses go out as
// newline-delimited {"result": ...} objects, flushed one by one, and an
// error ends the stream with {"error": ...}.
func (g *Gateway) serveStream(ctx context.Context, w http.ResponseWriter, r *http.Request, m *method) {
	rc := http.NewResponseController(w)
	if m.stream.ClientStreams {
		// HTTP/1 would otherwise read the rest of the body before the
		// first response is written; HTTP/2 needs nothing.
		_ = rc.EnableFullDuplex()
	}
	ss := newServerStream(ctx, g, w, rc, r.Body, m.stream.ClientStreams)
	info := &grpc.StreamServerInfo{FullMethod: m.name, IsClientStream: m.stream.ClientStreams, IsServerStream: m.stream.ServerStreams}
	var err error
	if g.stream != nil {
		err = g.stream(m.impl, ss, info, m.stream.Handler)
	} else {
		err = m.stream.Handler(m.impl, ss)
	}
	ss.finish(err)
}

// readFirstValue reads the first JSON value of a request body (nil when
// the body is empty), as etcd's gateway does; the rest is ignored.
func readFirstValue(body io.Reader, limit int64) ([]byte, error) {
	d := newDecoder(body, limit)
	raw, err := d.next()
	if errors.Is(err, io.EOF) {
		return nil, nil
	}
	return raw, err
}

// chainUnary chains interceptors as grpc.ChainUnaryInterceptor does.
func chainUnary(ints []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	if len(ints) == 0 {
		return nil
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		var next func(i int) grpc.UnaryHandler
		next = func(i int) grpc.UnaryHandler {
			if i == len(ints) {
				return handler
			}
			return func(ctx context.Context, req any) (any, error) {
				return ints[i](ctx, req, info, next(i+1))
			}
		}
		return next(0)(ctx, req)
	}
}

// chainStream chains interceptors as grpc.ChainStreamInterceptor does.
func chainStream(ints []grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	if len(ints) == 0 {
		return nil
	}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		var next func(i int) grpc.StreamHandler
		next = func(i int) grpc.StreamHandler {
			if i == len(ints) {
				return handler
			}
			return func(srv any, ss grpc.ServerStream) error {
				return ints[i](srv, ss, info, next(i+1))
			}
		}
		return next(0)(srv, ss)
	}
}

// stableMessage returns the text of a protojson error. protojson writes a
// no-break space instead of a space after "proto:" in some builds (so that
// nobody depends on its messages); the gateway's answers use a space, as
// etcd's do.
func stableMessage(err error) string {
	return strings.ReplaceAll(err.Error(), "\u00a0", " ")
}

// statusOf returns the gRPC status a gRPC server would send for err.
func statusOf(err error) *status.Status {
	if st, ok := status.FromError(err); ok {
		return st
	}
	return status.FromContextError(err)
}
