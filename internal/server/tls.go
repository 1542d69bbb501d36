package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/synod-io/synod/internal/peerauth"
	"github.com/synod-io/synod/internal/tlsconfig"
	"github.com/synod-io/synod/internal/transport"
)

// loadTLS loads the client and peer TLS files, if configured, so that bad
// files fail the start; the sources reload them when they change.
func (s *Server) loadTLS() error {
	if s.cfg.ClientTLS.Enabled() {
		src, err := tlsconfig.New("client", s.cfg.ClientTLS, s.cfg.Logger)
		if err != nil {
			return fmt.Errorf("load client tls: %w", err)
		}
		s.clientTLS = src
	}
	if s.cfg.PeerTLS.Enabled() {
		src, err := tlsconfig.New("peer", s.cfg.PeerTLS, s.cfg.Logger)
		if err != nil {
			return fmt.Errorf("load peer tls: %w", err)
		}
		s.peerTLS = src
	}
	return nil
}

// urlScheme is the scheme of this node's client or peer URLs.
func urlScheme(src *tlsconfig.Source) string {
	if src != nil {
		return "https://"
	}
	return "http://"
}

// peerServerOptions are the options of the peer gRPC server. Every
// connection must prove it comes from a member before any peer service
// (Raft, snapshots, forwarding, member lists) sees it: with peer TLS by a
// certificate signed by the peer CA, else by the peer secret handshake.
func (s *Server) peerServerOptions() ([]grpc.ServerOption, error) {
	opts := transport.ServerOptions()
	if s.peerTLS != nil {
		return append(opts, grpc.Creds(credentials.NewTLS(s.peerTLS.ServerConfig(tls.RequireAndVerifyClientCert)))), nil
	}
	creds, err := s.peerCreds(s.id.ClusterID, s.peerSecret)
	if err != nil {
		return nil, err
	}
	return append(opts, grpc.Creds(creds)), nil
}

// peerCreds returns the credentials of connections to peers: peer TLS, or
// the peer secret handshake as a member of cluster clusterID (0: a node that
// does not know its cluster yet).
func (s *Server) peerCreds(clusterID uint64, secret []byte) (credentials.TransportCredentials, error) {
	if s.peerTLS != nil {
		return s.peerTLS.ClientCredentials(), nil
	}
	logger := s.logger
	if logger == nil {
		logger = s.cfg.Logger
	}
	creds, err := peerauth.Credentials(peerauth.Config{Secret: secret, ClusterID: clusterID, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("peer credentials: %w", err)
	}
	return creds, nil
}

// joinTLS returns the TLS configuration for dialing the client endpoints of
// the cluster to join (nil: plaintext). The node presents its client-API
// certificate, which needs client-auth usage when the cluster requires
// client certificates.
func (s *Server) joinTLS() (*tls.Config, error) {
	if s.clientTLS == nil {
		return nil, nil
	}
	cfg, err := s.clientTLS.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("client tls for join: %w", err)
	}
	return cfg, nil
}

// warnPlaintext warns when a listener that other machines can reach serves
// without TLS.
func warnPlaintext(logger *slog.Logger, what string, addr net.Addr, src *tlsconfig.Source, flags string) {
	if src != nil || isLoopback(addr) {
		return
	}
	risk := "anyone who can reach it can read and write all data"
	if what == "peer" {
		risk = "members prove their peer secret to each other, but their traffic is not encrypted: anyone on the network path can read it"
	}
	logger.Warn(fmt.Sprintf("the %s listener is not loopback-only and has no TLS: %s; configure %s", what, risk, flags),
		"addr", addr.String())
}

func isLoopback(addr net.Addr) bool {
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
