package portmux

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// Config configures a Mux.
type Config struct {
	// TLS, when set, is the TLS configuration of the port: the Mux
	// terminates TLS on every connection, offering ALPN "h2" and
	// "http/1.1" (it sets NextProtos on the configuration, and on those
	// GetConfigForClient returns). Nil: the port is plaintext.
	TLS *tls.Config
	// HTTP serves the connections of HTTP clients; its Handler sees
	// Request.TLS set over TLS, for HTTP/2 as for HTTP/1. The Mux calls its
	// Serve and closes it.
	HTTP *http.Server
	// FirstBytesTimeout bounds the TLS handshake and the wait for a new
	// connection's first bytes (default 20 s).
	FirstBytesTimeout time.Duration
	Logger            *slog.Logger
}

// Mux shares one listener between a gRPC server and an HTTP server.
type Mux struct {
	l          net.Listener
	tls        *tls.Config
	http       *http.Server
	firstBytes time.Duration
	logger     *slog.Logger
	grpcL      *chanListener
	httpL      *chanListener

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // connection goroutines and the HTTP server

	mu struct {
		sync.Mutex
		// conns are the connections being sniffed or served over HTTP,
		// which Close closes (the gRPC server closes its own).
		conns  map[net.Conn]struct{}
		closed bool
	}
}

// New returns a Mux on l; Serve starts it.
func New(l net.Listener, cfg Config) *Mux {
	m := &Mux{
		l:          l,
		http:       cfg.HTTP,
		firstBytes: cfg.FirstBytesTimeout,
		logger:     cfg.Logger,
		grpcL:      newChanListener(l.Addr()),
		httpL:      newChanListener(l.Addr()),
	}
	if m.firstBytes <= 0 {
		m.firstBytes = 20 * time.Second
	}
	if m.logger == nil {
		m.logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TLS != nil {
		m.tls = withALPN(cfg.TLS)
	}
	m.mu.conns = map[net.Conn]struct{}{}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	// HTTP/2 connections reach the HTTP server as HTTP/2 "with prior
	// knowledge" (they start with the client preface, which the Mux
	// replays), also over TLS, since the Mux terminated TLS; it passes the
	// TLS state on (see tlsConnContext).
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	m.http.Protocols = &protos
	inner, handler := m.http.ConnContext, m.http.Handler
	m.http.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if inner != nil {
			ctx = inner(ctx, c)
		}
		if h2, ok := c.(*h2TLSConn); ok {
			ctx = context.WithValue(ctx, tlsStateKey{}, &h2.state)
		}
		return ctx
	}
	m.http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			if st, ok := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok {
				r2 := *r
				r2.TLS = st
				r = &r2
			}
		}
		handler.ServeHTTP(w, r)
	})
	return m
}

type tlsStateKey struct{}

// withALPN returns c offering HTTP/2 and HTTP/1.1, HTTP/2 preferred.
func withALPN(c *tls.Config) *tls.Config {
	protos := []string{"h2", "http/1.1"}
	c = c.Clone()
	c.NextProtos = protos
	if get := c.GetConfigForClient; get != nil {
		c.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			cc, err := get(hi)
			if err != nil || cc == nil {
				return cc, err
			}
			cc = cc.Clone()
			cc.NextProtos = protos
			return cc, nil
		}
	}
	return c
}

// GRPC returns the listener of the gRPC server's connections: gRPC's
// server must use Credentials, not its own TLS.
func (m *Mux) GRPC() net.Listener { return m.grpcL }

// Credentials returns the transport credentials the gRPC server must use:
// nil on a plaintext port; over TLS, credentials that report the TLS state
// of the handshake the Mux made (with the verified client certificate) as a
// gRPC TLS server does.
func (m *Mux) Credentials() credentials.TransportCredentials {
	if m.tls == nil {
		return nil
	}
	return doneTLS{}
}

// Serve accepts connections until Close; it returns nil after Close.
func (m *Mux) Serve() error {
	if !m.spawn(nil, func() {
		if err := m.http.Serve(m.httpL); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			m.logger.Error("client http server stopped", "err", err)
		}
	}) {
		return nil
	}
	var delay time.Duration
	for {
		c, err := m.l.Accept()
		if err != nil {
			if m.ctx.Err() != nil {
				return nil
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				// Out of file descriptors and the like: wait, as net/http
				// and gRPC do.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
				case <-m.ctx.Done():
					return nil
				}
				continue
			}
			return fmt.Errorf("accept client connection: %w", err)
		}
		delay = 0
		if !m.spawn(c, func() { m.dispatch(c) }) {
			_ = c.Close()
			return nil
		}
	}
}

// spawn runs fn on a goroutine that Close waits for, tracking c (if not
// nil) as a connection Close closes; it returns false once the Mux is
// closed.
func (m *Mux) spawn(c net.Conn, fn func()) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.closed {
		return false
	}
	if c != nil {
		m.mu.conns[c] = struct{}{}
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		fn()
	}()
	return true
}

// Close stops accepting, closes the connections being sniffed and those of
// HTTP clients, and waits for the Mux's goroutines. The gRPC server's
// connections are its own to close.
func (m *Mux) Close() error {
	m.mu.Lock()
	m.mu.closed = true
	conns := make([]net.Conn, 0, len(m.mu.conns))
	for c := range m.mu.conns {
		conns = append(conns, c)
	}
	m.mu.Unlock()
	m.cancel()
	err := m.l.Close()
	m.grpcL.Close()
	_ = m.http.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	m.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (m *Mux) untrack(c net.Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.mu.conns, c)
}

// dispatch finds out what raw speaks and hands it to the gRPC or the HTTP
// server.
func (m *Mux) dispatch(raw net.Conn) {
	c, to, err := m.sniff(raw)
	if err != nil {
		m.logger.Debug("client connection dropped before its first request", "remote", raw.RemoteAddr().String(), "err", err)
		_ = raw.Close()
		m.untrack(raw)
		return
	}
	switch to {
	case toGRPC:
		m.untrack(raw)
		m.grpcL.deliver(c)
	default:
		m.httpL.deliver(c)
	}
}

// chanListener is a net.Listener whose connections are handed to it.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// deliver hands c to the listener's server, or closes it once the listener
// is closed.
func (l *chanListener) deliver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		_ = c.Close()
	}
}

// doneTLS are the gRPC server's credentials on a port where the Mux
// terminated TLS: the handshake is done, and they report its state.
type doneTLS struct{}

func (doneTLS) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tc, ok := c.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return nil, nil, errors.New("portmux: connection without tls")
	}
	return c, credentials.TLSInfo{
		State:          tc.ConnectionState(),
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
	}, nil
}

func (doneTLS) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("portmux: server credentials cannot dial")
}

func (doneTLS) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (d doneTLS) Clone() credentials.TransportCredentials { return d }

func (doneTLS) OverrideServerName(string) error { return nil }
