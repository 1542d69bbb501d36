package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/internal/certgen"
	"github.com/synod-io/synod/internal/tlsconfig"
	"github.com/synod-io/synod/internal/transport"
)

// TestPeerServicesRefuseBadCertificates checks that, with peer TLS, every
// peer service (member list, Raft stream) refuses connections without a
// certificate of the peer CA, and serves one with it.
func TestPeerServicesRefuseBadCertificates(t *testing.T) {
	t.Parallel()
	good, err := certgen.WriteDir(filepath.Join(t.TempDir(), "good"), nil, "root")
	if err != nil {
		t.Fatal(err)
	}
	other, err := certgen.WriteDir(filepath.Join(t.TempDir(), "other"), nil, "root")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Open(Config{
		Name: "n1", DataDir: "/n1", FS: vfs.NewMem(),
		ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0",
		TickInterval: 10 * time.Millisecond,
		PeerTLS:      tlsconfig.Files{CertFile: good.PeerCert, KeyFile: good.PeerKey, TrustedCAFile: good.PeerCA},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	caPEM, err := os.ReadFile(good.PeerCA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	pair := func(cert, key string) []tls.Certificate {
		p, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{p}
	}
	for _, tc := range []struct {
		name  string
		creds []grpc.DialOption // nil: the transport's plaintext
		ok    bool
	}{
		{"plaintext", nil, false},
		{"tls without a certificate", []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots}))}, false},
		{"certificate of another CA", []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: pair(other.PeerCert, other.PeerKey)}))}, false},
		{"client certificate of another CA", []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: pair(other.ClientCert, other.ClientKey)}))}, false},
		// The client API's certificates (another CA than the peers') must
		// not open the peer port.
		{"client certificate of the cluster", []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: pair(good.ClientCert, good.ClientKey)}))}, false},
		{"server certificate of the cluster", []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: pair(good.ServerCert, good.ServerKey)}))}, false},
		{"peer certificate", []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: pair(good.PeerCert, good.PeerKey)}))}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := transport.Dial(srv.PeerAddr(), tc.creds)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp := &pb.MemberListResponse{}
			err = conn.Invoke(ctx, clusterMembersMethod, &pb.MemberListRequest{}, resp)
			if tc.ok {
				if err != nil || len(resp.Members) != 1 {
					t.Fatalf("member list over the peer service: got %d members (err %v), want 1", len(resp.Members), err)
				}
			} else if code := status.Code(err); code != codes.Unavailable {
				t.Fatalf("member list over the peer service: got code %v (err %v, %d members), want %v", code, err, len(resp.Members), codes.Unavailable)
			}
			stream, err := conn.NewStream(ctx, &grpc.StreamDesc{StreamName: "Raft", ClientStreams: true}, "/synod.transport.v1.Peer/Raft")
			if tc.ok {
				if err != nil {
					t.Fatalf("raft stream: got %v, want it open", err)
				}
				_ = stream.CloseSend()
			} else if code := status.Code(err); code != codes.Unavailable {
				t.Fatalf("raft stream: got code %v (err %v), want %v", code, err, codes.Unavailable)
			}
		})
	}
}
