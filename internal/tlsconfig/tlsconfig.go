package tlsconfig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// Files names the PEM files of one side (client or peer) of a node's TLS.
type Files struct {
	// CertFile and KeyFile hold the certificate (with its chain) and its
	// private key.
	CertFile string
	KeyFile  string
	// TrustedCAFile holds the CA certificates that certificates presented
	// by the other side must chain to. Empty: the system roots when acting
	// as a client; no client verification when serving.
	TrustedCAFile string
}

// Enabled reports whether any file is named.
func (f Files) Enabled() bool {
	return f.CertFile != "" || f.KeyFile != "" || f.TrustedCAFile != ""
}

// stamp identifies one version of a file cheaply: a file replaced by
// rename has a new inode; one rewritten in place a new time or size.
type stamp struct {
	modTime time.Time
	size    int64
	inode   uint64
}

func statFile(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	return stamp{modTime: fi.ModTime(), size: fi.Size(), inode: inode(fi)}, nil
}

// Source serves the current TLS material of a set of files, reloading them
// when they change. It is safe for concurrent use and owns no goroutine.
type Source struct {
	files  Files
	what   string
	logger *slog.Logger

	mu       sync.Mutex
	certSt   [2]stamp // of CertFile and KeyFile at the last load
	cert     *tls.Certificate
	caSt     stamp
	pool     *x509.CertPool
	lastWarn string // the last reload failure reported, to report each once
}

// New loads the files once, so that a bad configuration fails at start, and
// returns a Source that reloads them on change. what names the files in
// errors and logs ("client", "peer"). A certificate needs its key and the
// other way round.
func New(what string, f Files, logger *slog.Logger) (*Source, error) {
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, fmt.Errorf("%s tls: a certificate file needs a key file and the other way round", what)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Source{files: f, what: what, logger: logger}
	if f.CertFile != "" {
		if _, err := s.certificate(); err != nil {
			return nil, err
		}
	}
	if f.TrustedCAFile != "" {
		if _, err := s.caPool(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// HasCertificate reports whether the source has a certificate to present.
func (s *Source) HasCertificate() bool { return s.files.CertFile != "" }

// certificate returns the current key pair, reloading it if either file
// changed. When the changed files do not load, the previous pair is kept
// (and the error reported once); the load is tried again next time.
func (s *Source) certificate() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files.CertFile == "" {
		return nil, fmt.Errorf("%s tls: no certificate configured", s.what)
	}
	cst, cerr := statFile(s.files.CertFile)
	kst, kerr := statFile(s.files.KeyFile)
	if err := errors.Join(cerr, kerr); err != nil {
		return s.keepCert(fmt.Errorf("load %s cert: %w", s.what, err))
	}
	if s.cert != nil && s.certSt == [2]stamp{cst, kst} {
		return s.cert, nil
	}
	pair, err := tls.LoadX509KeyPair(s.files.CertFile, s.files.KeyFile)
	if err != nil {
		return s.keepCert(fmt.Errorf("load %s cert: %w", s.what, err))
	}
	first := s.cert == nil
	s.cert, s.certSt, s.lastWarn = &pair, [2]stamp{cst, kst}, ""
	if !first {
		s.logger.Info("reloaded tls certificate", "which", s.what, "cert-file", s.files.CertFile,
			"not-after", pair.Leaf.NotAfter)
	}
	return s.cert, nil
}

func (s *Source) keepCert(err error) (*tls.Certificate, error) {
	if s.cert == nil {
		return nil, err
	}
	s.warnOnce(err)
	return s.cert, nil
}

// caPool returns the current trusted CA pool (nil without a CA file),
// reloading it if the file changed.
func (s *Source) caPool() (*x509.CertPool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files.TrustedCAFile == "" {
		return nil, nil
	}
	st, err := statFile(s.files.TrustedCAFile)
	if err != nil {
		return s.keepPool(fmt.Errorf("load %s trusted ca: %w", s.what, err))
	}
	if s.pool != nil && s.caSt == st {
		return s.pool, nil
	}
	pem, err := os.ReadFile(s.files.TrustedCAFile)
	if err != nil {
		return s.keepPool(fmt.Errorf("load %s trusted ca: %w", s.what, err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return s.keepPool(fmt.Errorf("load %s trusted ca: no certificate in %s", s.what, s.files.TrustedCAFile))
	}
	first := s.pool == nil
	s.pool, s.caSt, s.lastWarn = pool, st, ""
	if !first {
		s.logger.Info("reloaded tls trusted ca", "which", s.what, "ca-file", s.files.TrustedCAFile)
	}
	return s.pool, nil
}

func (s *Source) keepPool(err error) (*x509.CertPool, error) {
	if s.pool == nil {
		return nil, err
	}
	s.warnOnce(err)
	return s.pool, nil
}

func (s *Source) warnOnce(err error) {
	if msg := err.Error(); msg != s.lastWarn {
		s.lastWarn = msg
		s.logger.Warn("tls files changed but do not load; keeping the previous ones", "which", s.what, "err", err)
	}
}

// ServerConfig returns the configuration of a listener serving the source's
// certificate. clientAuth says what is asked of the other side; when it
// verifies certificates, they must chain to the trusted CA file. Every
// handshake gets the current certificate and CA pool.
func (s *Source) ServerConfig(clientAuth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, err := s.certificate()
			if err != nil {
				return nil, err
			}
			pool, err := s.caPool()
			if err != nil {
				return nil, err
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{*cert},
				ClientAuth:   clientAuth,
				ClientCAs:    pool,
			}, nil
		},
	}
}

// ClientConfig returns a configuration for dialing with the source's
// current material: the trusted CA pool (system roots without one) and, if
// configured, the certificate to present. It is a snapshot: use
// ClientCredentials for connections that outlive a rotation.
func (s *Source) ClientConfig() (*tls.Config, error) {
	pool, err := s.caPool()
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if s.HasCertificate() {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.certificate()
		}
	}
	return cfg, nil
}

// ClientCredentials returns gRPC transport credentials that dial with the
// source's material as it is at each handshake: a rotated certificate or
// CA is used by the next connection without a restart.
func (s *Source) ClientCredentials() credentials.TransportCredentials {
	return &clientCreds{s: s}
}

type clientCreds struct {
	s          *Source
	serverName string
}

func (c *clientCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cfg, err := c.s.ClientConfig()
	if err != nil {
		return nil, nil, err
	}
	cfg.ServerName = c.serverName
	return credentials.NewTLS(cfg).ClientHandshake(ctx, authority, raw)
}

func (c *clientCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("tlsconfig: client credentials cannot serve")
}

func (c *clientCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.2"}
}

func (c *clientCreds) Clone() credentials.TransportCredentials {
	cp := *c
	return &cp
}

// OverrideServerName implements credentials.TransportCredentials.
//
// Deprecated: as gRPC's own; use grpc.WithAuthority.
func (c *clientCreds) OverrideServerName(name string) error {
	c.serverName = name
	return nil
}
