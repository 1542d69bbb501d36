package portmux

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/synod-io/synod/internal/certgen"
)

// testPort is a Mux with a gRPC server (the health service, recording the
// AuthInfo of its calls) and an HTTP handler (answering its protocol and
// whether it saw TLS).
type testPort struct {
	addr     string
	mux      *Mux
	accepted *countingListener

	mu       sync.Mutex
	grpcAuth []credentials.AuthInfo
}

func startPort(t *testing.T, tlsCfg *tls.Config, firstBytes time.Duration) *testPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &testPort{addr: l.Addr().String(), accepted: &countingListener{Listener: l}}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		tlsSeen := "plain"
		if r.TLS != nil {
			tlsSeen = "tls"
			if len(r.TLS.VerifiedChains) > 0 {
				tlsSeen += " cn=" + r.TLS.VerifiedChains[0][0].Subject.CommonName
			}
		}
		_, _ = io.WriteString(w, r.Proto+" "+tlsSeen+" "+string(body))
	})
	p.mux = New(p.accepted, Config{TLS: tlsCfg, HTTP: &http.Server{Handler: handler}, FirstBytesTimeout: firstBytes})
	var opts []grpc.ServerOption
	if c := p.mux.Credentials(); c != nil {
		opts = append(opts, grpc.Creds(c))
	}
	opts = append(opts, grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		pr, _ := peer.FromContext(ctx)
		p.mu.Lock()
		p.grpcAuth = append(p.grpcAuth, pr.AuthInfo)
		p.mu.Unlock()
		return h(ctx, req)
	}))
	gs := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = gs.Serve(p.mux.GRPC()) }()
	go func() {
		defer wg.Done()
		if err := p.mux.Serve(); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		gs.Stop()
		if err := p.mux.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		wg.Wait()
	})
	return p
}

// countingListener counts the connections it accepted.
type countingListener struct {
	net.Listener
	mu sync.Mutex
	n  int
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.n++
		l.mu.Unlock()
	}
	return c, err
}

func (l *countingListener) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

func checkGRPC(t *testing.T, addr string, creds credentials.TransportCredentials) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("grpc health check: got %v, %v, want SERVING", resp, err)
	}
}

func checkHTTP(t *testing.T, what string, c *http.Client, url, want string) {
	t.Helper()
	resp, err := c.Post(url, "application/json", strings.NewReader("hello"))
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if got := string(b); got != want {
		t.Errorf("%s: got %q, want %q", what, got, want)
	}
}

// TestPlaintextPort serves gRPC, HTTP/1.1 and HTTP/2 with prior knowledge
// on one plaintext port, at once.
func TestPlaintextPort(t *testing.T) {
	p := startPort(t, nil, 0)
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	h2Client := &http.Client{Transport: &http.Transport{Protocols: &h2c}, Timeout: 10 * time.Second}
	h1Client := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(3)
		go func() { defer wg.Done(); checkGRPC(t, p.addr, insecure.NewCredentials()) }()
		go func() {
			defer wg.Done()
			checkHTTP(t, "http/1.1", h1Client, "http://"+p.addr+"/", "HTTP/1.1 plain hello")
		}()
		go func() { defer wg.Done(); checkHTTP(t, "h2c", h2Client, "http://"+p.addr+"/", "HTTP/2.0 plain hello") }()
	}
	wg.Wait()
}

type testPKI struct {
	pool       *x509.CertPool
	server     *tls.Config
	clientCert []tls.Certificate
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	ca, err := certgen.NewCA("portmux-test", time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	pair := func(cn string, usage certgen.Usage) tls.Certificate {
		certPEM, keyPEM, err := ca.Issue(certgen.Spec{CommonName: cn, Hosts: []string{"127.0.0.1"}, Usage: usage})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
		if err := os.WriteFile(cf, certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(kf, keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := tls.LoadX509KeyPair(cf, kf)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	srv := pair("server", certgen.ServerUsage)
	// As the node's configuration: the certificate from GetConfigForClient.
	server := &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return &tls.Config{Certificates: []tls.Certificate{srv}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}, nil
	}}
	return testPKI{pool: pool, server: server, clientCert: []tls.Certificate{pair("alice", certgen.ClientUsage)}}
}

// TestTLSPort serves gRPC, HTTP/2 (negotiated by ALPN) and HTTP/1.1 on one
// TLS port with client certificates: each server sees the TLS state with
// the verified certificate.
func TestTLSPort(t *testing.T) {
	pki := newTestPKI(t)
	p := startPort(t, pki.server, 0)
	clientTLS := &tls.Config{RootCAs: pki.pool, Certificates: pki.clientCert}
	h2Client := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS.Clone(), ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	h1TLS := clientTLS.Clone()
	h1TLS.NextProtos = []string{"http/1.1"}
	h1Client := &http.Client{Transport: &http.Transport{TLSClientConfig: h1TLS, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(3)
		go func() { defer wg.Done(); checkGRPC(t, p.addr, credentials.NewTLS(clientTLS.Clone())) }()
		go func() {
			defer wg.Done()
			checkHTTP(t, "http/1.1", h1Client, "https://"+p.addr+"/", "HTTP/1.1 tls cn=alice hello")
		}()
		go func() {
			defer wg.Done()
			checkHTTP(t, "http/2", h2Client, "https://"+p.addr+"/", "HTTP/2.0 tls cn=alice hello")
		}()
	}
	wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ai := range p.grpcAuth {
		ti, ok := ai.(credentials.TLSInfo)
		if !ok || len(ti.State.VerifiedChains) == 0 || ti.State.VerifiedChains[0][0].Subject.CommonName != "alice" {
			t.Errorf("grpc call's AuthInfo: got %#v, want TLSInfo with alice's verified certificate", ai)
		}
	}
	if len(p.grpcAuth) != 4 {
		t.Errorf("grpc calls seen: got %d, want 4", len(p.grpcAuth))
	}
}

// TestIdleGRPCConnection checks that a gRPC connection may wait longer
// than FirstBytesTimeout before its first call: gRPC clients connect ahead.
func TestIdleGRPCConnection(t *testing.T) {
	p := startPort(t, nil, 50*time.Millisecond)
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for s := conn.GetState(); s.String() != "READY"; s = conn.GetState() {
		if !conn.WaitForStateChange(ctx, s) {
			t.Fatalf("connection never ready (%v)", s)
		}
	}
	time.Sleep(200 * time.Millisecond) // idle past FirstBytesTimeout: the subject of the test
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("first call after idling: %v", err)
	}
	if n := p.accepted.count(); n != 1 {
		t.Errorf("connections: got %d, want 1 (the client's first, kept while idle)", n)
	}
}

// rawH2 is an HTTP/2 client written frame by frame.
type rawH2 struct {
	t  *testing.T
	c  net.Conn
	fr *http2.Framer
}

func dialRawH2(t *testing.T, addr string) *rawH2 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return &rawH2{t: t, c: c, fr: fr}
}

func (h *rawH2) headers(contentType string) {
	h.t.Helper()
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/"}, {"content-type", contentType}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: buf.Bytes(), EndHeaders: true, EndStream: true}); err != nil {
		h.t.Fatal(err)
	}
}

// TestHTTP2ClientSeesOneServer speaks HTTP/2 to the port frame by frame, as
// clients may: it pings before its request, and acknowledges the Mux's
// SETTINGS only after the request. The Mux must answer the ping and hide
// that acknowledgement from the HTTP/2 server, which would otherwise close
// the connection for acknowledging SETTINGS it never sent; the request is
// answered, and the connection is not torn down.
func TestHTTP2ClientSeesOneServer(t *testing.T) {
	p := startPort(t, nil, 0)
	h := dialRawH2(t, p.addr)
	// A ping before any request is answered at once (an idle gRPC client's
	// keepalive must not time out while the Mux waits for its first call).
	if err := h.fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8}); err != nil {
		t.Fatal(err)
	}
	unacked := 0
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("read frame before the request: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			unacked++ // the Mux's
		}
		if pf, ok := f.(*http2.PingFrame); ok && pf.IsAck() && pf.Data == [8]byte{1, 2, 3, 4, 5, 6, 7, 8} {
			break
		}
	}
	h.headers("application/json")
	// The Mux's SETTINGS, acknowledged only after the request.
	for ; unacked > 0; unacked-- {
		if err := h.fr.WriteSettingsAck(); err != nil {
			t.Fatal(err)
		}
	}
	gotAnswer := false
	for !gotAnswer {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("read frame: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			// The HTTP/2 server's.
			if !f.IsAck() {
				if err := h.fr.WriteSettingsAck(); err != nil {
					t.Fatal(err)
				}
			}
		case *http2.MetaHeadersFrame:
			if s := f.PseudoValue("status"); s != "200" {
				t.Fatalf("answer: got status %s, want 200", s)
			}
		case *http2.DataFrame:
			if got := string(f.Data()); got != "HTTP/2.0 plain " {
				t.Errorf("answer body: got %q, want %q", got, "HTTP/2.0 plain ")
			}
			gotAnswer = f.StreamEnded()
		case *http2.GoAwayFrame:
			t.Fatalf("server went away: %v %s", f.ErrCode, f.DebugData())
		}
	}
	// The connection lives on: a ping now is the HTTP/2 server's to answer.
	if err := h.fr.WritePing(false, [8]byte{9}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("read frame after the answer: %v", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			t.Fatalf("server went away after the answer: %v %s", g.ErrCode, g.DebugData())
		}
		if pf, ok := f.(*http2.PingFrame); ok && pf.IsAck() && pf.Data == [8]byte{9} {
			break
		}
	}
}

// TestCloseEndsPendingConnections closes the Mux while a client is
// connected but has not sent its first request: Close returns and the
// client's connection is closed.
func TestCloseEndsPendingConnections(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := New(l, Config{HTTP: &http.Server{}})
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	h := dialRawH2(t, l.Addr().String())
	// The Mux answers the preface with its SETTINGS: the connection is in.
	if f, err := h.fr.ReadFrame(); err != nil {
		t.Fatal(err)
	} else if _, ok := f.(*http2.SettingsFrame); !ok {
		t.Fatalf("first frame: got %T, want SETTINGS", f)
	}
	done := make(chan error, 1)
	go func() { done <- m.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := <-served; err != nil {
		t.Errorf("serve: got %v, want nil after Close", err)
	}
	if _, err := h.fr.ReadFrame(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("client read after Close: got %v, want the connection closed", err)
	}
}

// benchmarkGRPC measures unary gRPC calls on one connection, 16 at a time,
// to addr.
func benchmarkGRPC(b *testing.B, addr string) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	ctx := context.Background()
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(8) // 16 callers on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGRPCDirect and BenchmarkGRPCThroughMux compare gRPC calls on a
// gRPC server's own listener and through a Mux: after a connection's first
// request the Mux only forwards reads through a wrapper.
func BenchmarkGRPCDirect(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go func() { _ = gs.Serve(l) }()
	defer gs.Stop()
	benchmarkGRPC(b, l.Addr().String())
}

func BenchmarkGRPCThroughMux(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	m := New(l, Config{HTTP: &http.Server{}})
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go func() { _ = gs.Serve(m.GRPC()) }()
	go func() { _ = m.Serve() }()
	defer func() {
		gs.Stop()
		_ = m.Close()
	}()
	benchmarkGRPC(b, l.Addr().String())
}
