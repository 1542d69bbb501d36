package tlsconfig_test

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/synod-io/synod/internal/certgen"
	"github.com/synod-io/synod/internal/tlsconfig"
)

// TestGRPCPeerInfoHasVerifiedClientCertificate checks what authentication
// by certificate relies on: a handler finds the verified client certificate
// in the gRPC peer's AuthInfo. The client dials with ClientCredentials, and
// a rotated client certificate is presented by the next connection.
func TestGRPCPeerInfoHasVerifiedClientCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "ca")
	caFile := filepath.Join(dir, "ca.crt")
	replace(t, caFile, ca.CertPEM)
	scert, skey := issue(t, ca, "server", certgen.ServerUsage, dir, "server")
	src, err := tlsconfig.New("client", tlsconfig.Files{CertFile: scert, KeyFile: skey, TrustedCAFile: caFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 1)
	record := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		cn := "no verified certificate"
		if p, ok := peer.FromContext(ctx); ok {
			if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 {
				cn = info.State.VerifiedChains[0][0].Subject.CommonName
			}
		}
		seen <- cn
		return h(ctx, req)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(src.ServerConfig(tls.RequireAndVerifyClientCert))), grpc.UnaryInterceptor(record))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})

	ccert, ckey := issue(t, ca, "alice", certgen.ClientUsage, dir, "client")
	client, err := tlsconfig.New("client", tlsconfig.Files{CertFile: ccert, KeyFile: ckey, TrustedCAFile: caFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	check := func(want string) {
		t.Helper()
		conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(client.ClientCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("health check over mutual TLS: got %v, want success", err)
		}
		if got := <-seen; got != want {
			t.Fatalf("client certificate in the peer info: got %q, want %q", got, want)
		}
	}
	check("alice")
	issue(t, ca, "bob", certgen.ClientUsage, dir, "client")
	check("bob")
}
