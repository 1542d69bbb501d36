package server

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/grpc"

	"github.com/synod-io/synod/internal/console"
	"github.com/synod-io/synod/internal/gateway"
	"github.com/synod-io/synod/internal/portmux"
)

// openClientPort sets up the client port: one listener for gRPC clients
// and for the HTTP clients of the JSON gateway and the web console
// (package portmux), over the
// client TLS when configured (then clients must present a certificate with
// ClientCertAuth, on either protocol).
func (s *Server) openClientPort() {
	var tlsCfg *tls.Config
	if s.clientTLS != nil {
		auth := tls.NoClientCert
		if s.cfg.ClientCertAuth {
			auth = tls.RequireAndVerifyClientCert
		}
		tlsCfg = s.clientTLS.ServerConfig(auth)
	}
	s.gateway = gateway.New(gateway.Config{
		Unary:          s.clientUnary,
		Stream:         s.clientStream,
		MaxRecvMsgSize: s.cfg.maxRecvMsgSize(),
		CORS:           s.cfg.CORS,
		Logger:         s.logger,
	})
	mux := http.NewServeMux()
	for _, p := range gateway.Prefixes {
		mux.Handle(p, s.gateway)
	}
	// The web console, and the root pointing a browser at it.
	mux.Handle(console.Prefix, console.New(consoleBackend{s}, s.logger))
	mux.Handle("GET /{$}", http.RedirectHandler(console.Prefix, http.StatusFound))
	s.clientMux = portmux.New(s.clientLis, portmux.Config{
		TLS: tlsCfg,
		HTTP: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: time.Minute,
			IdleTimeout:       5 * time.Minute,
			// Clients' mistakes (bad requests, dropped connections) are
			// theirs to see, not the node's log's.
			ErrorLog: slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
		},
		Logger: s.logger,
	})
}

// clientCredsOption gives the client gRPC server the credentials of the
// client port: over TLS, the port's multiplexer made the handshake.
func (s *Server) clientCredsOption() grpc.ServerOption {
	if c := s.clientMux.Credentials(); c != nil {
		return grpc.Creds(c)
	}
	return grpc.EmptyServerOption{}
}

// serveClientPort starts serving the client port.
func (s *Server) serveClientPort() {
	s.goBackground(func(context.Context) { _ = s.clientSrv.Serve(s.clientMux.GRPC()) })
	s.goBackground(func(context.Context) {
		if err := s.clientMux.Serve(); err != nil {
			s.logger.Error("client port stopped", "err", err)
		}
	})
}

// stopClientAPI stops serving clients, gRPC and HTTP: gRPC calls get a
// grace period, then every call in progress is cancelled.
func (s *Server) stopClientAPI() {
	if s.clientSrv != nil {
		stopGRPC(s.clientSrv)
	}
	if s.clientMux != nil {
		_ = s.clientMux.Close()
	}
	if s.gateway != nil {
		s.gateway.Close()
	}
}
