package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/internal/certgen"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
	"github.com/synod-io/synod/internal/tlsconfig"
)

// pki is a test CA with its certificate in a file.
type pki struct {
	t      *testing.T
	dir    string
	ca     *certgen.CA
	caFile string
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	ca, err := certgen.NewCA(name, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{t: t, dir: filepath.Join(t.TempDir(), name), ca: ca}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p.caFile = filepath.Join(p.dir, "ca.crt")
	p.write("ca.crt", ca.CertPEM)
	return p
}

func (p *pki) write(name string, data []byte) string {
	p.t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// issue writes a certificate valid now for 127.0.0.1 and returns its files.
func (p *pki) issue(cn string, usage certgen.Usage) tlsconfig.Files {
	return p.issueValid(cn, usage, time.Time{}, time.Time{})
}

func (p *pki) issueValid(cn string, usage certgen.Usage, notBefore, notAfter time.Time) tlsconfig.Files {
	p.t.Helper()
	certPEM, keyPEM, err := p.ca.Issue(certgen.Spec{CommonName: cn, Hosts: []string{"127.0.0.1", "localhost"}, Usage: usage, NotBefore: notBefore, NotAfter: notAfter})
	if err != nil {
		p.t.Fatal(err)
	}
	return tlsconfig.Files{CertFile: p.write(cn+".crt", certPEM), KeyFile: p.write(cn+".key", keyPEM), TrustedCAFile: p.caFile}
}

func (p *pki) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.Cert)
	return pool
}

func keyPair(t *testing.T, f tlsconfig.Files) []tls.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return []tls.Certificate{pair}
}

// tryPut puts a key over a fresh connection with cfg; a refused handshake
// fails at once (no wait for ready).
func tryPut(addr string, cfg *tls.Config) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pb.NewKVClient(conn).Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	return err
}

func TestClientTLS(t *testing.T) {
	t.Parallel()
	good, other := newPKI(t, "good"), newPKI(t, "other")
	serverFiles := good.issue("server", certgen.ServerUsage)
	for _, mtls := range []bool{false, true} {
		name := "tls"
		if mtls {
			name = "mtls"
		}
		t.Run(name, func(t *testing.T) {
			c := testcluster.New(t, testcluster.Options{Nodes: 1, Configure: func(_ int, cfg *server.Config) {
				cfg.ClientTLS, cfg.ClientCertAuth = serverFiles, mtls
			}})
			c.WaitLeader()
			addr := c.Node(0).ClientAddr
			alice := keyPair(t, good.issue("alice", certgen.ClientUsage))
			expired := keyPair(t, good.issueValid("expired", certgen.ClientUsage, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)))
			stranger := keyPair(t, other.issue("stranger", certgen.ClientUsage))
			for _, tc := range []struct {
				name string
				cfg  *tls.Config
				ok   bool
			}{
				{"good certificate", &tls.Config{RootCAs: good.pool(), Certificates: alice}, true},
				{"no certificate", &tls.Config{RootCAs: good.pool()}, !mtls},
				{"certificate of another CA", &tls.Config{RootCAs: good.pool(), Certificates: stranger}, !mtls},
				{"expired certificate", &tls.Config{RootCAs: good.pool(), Certificates: expired}, !mtls},
				{"server not trusted (wrong CA)", &tls.Config{RootCAs: other.pool(), Certificates: alice}, false},
			} {
				err := tryPut(addr, tc.cfg)
				switch {
				case tc.ok && err != nil:
					t.Errorf("%s: got %v, want the put to succeed", tc.name, err)
				case !tc.ok && !handshakeFailed(err):
					t.Errorf("%s: got %v, want the TLS handshake refused", tc.name, err)
				}
			}

			// A plaintext client gets nowhere either.
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx := testcluster.Context(t, 10*time.Second)
			if _, err := pb.NewKVClient(conn).Range(ctx, &pb.RangeRequest{Key: []byte("k")}); !handshakeFailed(err) {
				t.Errorf("plaintext client: got %v, want the connection refused", err)
			}
		})
	}
}

// TestClusterOverTLS runs a three-node cluster with client mTLS and peer
// TLS, adds a fourth node with --join over TLS, and checks that data flows
// everywhere and client URLs are https.
func TestClusterOverTLS(t *testing.T) {
	busyParallel(t)
	ca := newPKI(t, "ca")
	serverFiles := ca.issue("server", certgen.ServerUsage|certgen.ClientUsage)
	peerFiles := ca.issue("peer", certgen.ServerUsage|certgen.ClientUsage)
	client := ca.issue("root", certgen.ClientUsage)
	c := testcluster.New(t, testcluster.Options{
		Configure: func(_ int, cfg *server.Config) {
			cfg.ClientTLS, cfg.ClientCertAuth, cfg.PeerTLS = serverFiles, true, peerFiles
		},
		ClientTLS: &tls.Config{RootCAs: ca.pool(), Certificates: keyPair(t, client)},
	})
	c.WaitLeader()
	cli := c.Client()
	put(t, cli, "greeting", "hello")

	n4, err := c.AddNode()
	if err != nil {
		t.Fatal(err)
	}
	put(t, cli, "after-join", "yes")
	cli4 := c.Client(n4)
	waitFor(t, 20*time.Second, "the joined node to be a voter with the data", func() (bool, string) {
		pub := n4.Server().Published()
		voter := false
		for _, v := range pub.Voters {
			voter = voter || v == n4.Server().MemberID()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := cli4.Get(ctx, "after-join", clientv3.WithSerializable())
		got := 0
		if err == nil {
			got = len(resp.Kvs)
		}
		return voter && got == 1, fmt.Sprintf("voter %v, %d keys (err %v)", voter, got, err)
	})

	waitFor(t, 10*time.Second, "four members with https client URLs", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ml, err := cli.MemberList(ctx)
		if err != nil {
			return false, err.Error()
		}
		var urls []string
		for _, m := range ml.Members {
			urls = append(urls, m.ClientURLs...)
		}
		ok := len(ml.Members) == 4 && len(urls) == 4
		for _, u := range urls {
			ok = ok && strings.HasPrefix(u, "https://")
		}
		return ok, strings.Join(urls, ",")
	})
	for _, n := range c.Nodes() {
		resp, err := c.Client(n).Get(testcluster.Context(t, 5*time.Second), "greeting")
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "hello" {
			t.Fatalf("get greeting from %s: got %v (err %v), want hello", n.Name, resp, err)
		}
	}
}

// TestPeerWithBadCertificateIsShutOut starts a cluster whose third member
// has a peer certificate of another CA, then has a fourth node join with no
// valid peer certificate: neither ever hears from the leader nor gets any
// data, while the two good members work on.
func TestPeerWithBadCertificateIsShutOut(t *testing.T) {
	t.Parallel()
	ca, rogue := newPKI(t, "ca"), newPKI(t, "rogue")
	serverFiles := ca.issue("server", certgen.ServerUsage|certgen.ClientUsage)
	peerFiles := ca.issue("peer", certgen.ServerUsage|certgen.ClientUsage)
	roguePeer := rogue.issue("peer", certgen.ServerUsage|certgen.ClientUsage)
	// The rogue trusts the real CA: it can check the others' certificates,
	// but its own is not trusted by them.
	roguePeer.TrustedCAFile = ca.caFile
	c := testcluster.New(t, testcluster.Options{
		Configure: func(i int, cfg *server.Config) {
			cfg.ClientTLS, cfg.ClientCertAuth, cfg.PeerTLS = serverFiles, true, peerFiles
			if i >= 2 {
				cfg.PeerTLS = roguePeer
			}
		},
		ClientTLS: &tls.Config{RootCAs: ca.pool(), Certificates: keyPair(t, ca.issue("root", certgen.ClientUsage))},
	})
	good := c.Nodes()[:2]
	bad := c.Node(2)
	waitFor(t, 15*time.Second, "a leader among the good members", func() (bool, string) {
		l0, l1 := good[0].Server().Published().Lead, good[1].Server().Published().Lead
		return l0 != 0 && l0 == l1, fmt.Sprintf("leaders %x and %x", l0, l1)
	})
	cli := c.Client(good...)
	put(t, cli, "k", "v")

	badStart := bad.Server().Published().KV.Revision
	put(t, cli, "k2", "v2")
	// Watch the shut-out member for 10 election timeouts of the good ones'
	// traffic: it must never learn the leader nor get data.
	observe(func() {
		if pub := bad.Server().Published(); pub.Lead != 0 || pub.KV.Revision != badStart {
			t.Fatalf("member with a bad peer certificate: got leader %x and revision %d, want no leader and revision %d", pub.Lead, pub.KV.Revision, badStart)
		}
	})

	// A node joining (through the client API, which it may use) with the
	// rogue peer certificate asks the members' peer services for the data
	// ranges before it is added: the handshake fails, so does the join,
	// and the cluster has no new member. The bad member is stopped first:
	// its client API would answer the join with "no leader".
	bad.Stop()
	if _, err := c.AddNode(); err == nil || !strings.Contains(err.Error(), "data ranges") {
		t.Fatalf("add a node with a rogue peer certificate: got %v, want a failure to ask for the data ranges", err)
	}
	put(t, cli, "k3", "v3")
	ml, err := cli.MemberList(testcluster.Context(t, 10*time.Second))
	if err != nil || len(ml.Members) != 3 {
		t.Fatalf("members after the refused join: got %v %v, want the 3 first", ml, err)
	}
	if rev := good[1].Server().Published().KV.Revision; rev < 4 {
		t.Fatalf("revision of a good member: got %d, want at least 4", rev)
	}
}

// observe runs check every 10ms for ten election timeouts of the test
// clusters (10 ticks of 10ms each): long enough for a connected member to
// hear from the leader many times over.
func observe(check func()) {
	end := time.Now().Add(10 * 10 * 10 * time.Millisecond)
	for time.Now().Before(end) {
		check()
		time.Sleep(10 * time.Millisecond) // the observation interval, not synchronization
	}
	check()
}

// handshakeFailed reports whether err is a connection that never came up
// (not an answer of the server, which would be an etcd error).
func handshakeFailed(err error) bool {
	if status.Code(err) != codes.Unavailable {
		return false
	}
	return !strings.HasPrefix(status.Convert(err).Message(), "etcdserver:")
}
