package tlsconfig_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/synod-io/synod/internal/certgen"
	"github.com/synod-io/synod/internal/tlsconfig"
)

func newCA(t *testing.T, cn string) *certgen.CA {
	t.Helper()
	ca, err := certgen.NewCA(cn, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// replace writes a file by rename, as certificate tools do.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func issue(t *testing.T, ca *certgen.CA, cn string, usage certgen.Usage, dir, name string) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(certgen.Spec{CommonName: cn, Hosts: []string{"127.0.0.1"}, Usage: usage})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	replace(t, certFile, certPEM)
	replace(t, keyFile, keyPEM)
	return certFile, keyFile
}

// serve accepts TLS connections with cfg until the test ends; each gets the
// common name of the client's certificate ("-" without one) and is closed.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tc.Handshake(); err == nil {
				cn := "-"
				if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
					cn = certs[0].Subject.CommonName
				}
				_, _ = io.WriteString(tc, cn)
			}
			tc.Close()
		}
	}()
	return l.Addr().String()
}

// exchange dials addr, and returns the server certificate's common name and
// what the server said (the client certificate's common name).
func exchange(addr string, cfg *tls.Config) (serverCN, clientCN string, err error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c) // a refused client certificate shows here (TLS 1.3)
	if err != nil {
		return "", "", err
	}
	if len(b) == 0 {
		return "", "", errors.New("server closed the connection without answering")
	}
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, string(b), nil
}

func pool(cas ...*certgen.CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Cert)
	}
	return p
}

func TestServerCertificateReloads(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "ca")
	certFile, keyFile := issue(t, ca, "first", certgen.ServerUsage, dir, "server")
	src, err := tlsconfig.New("client", tlsconfig.Files{CertFile: certFile, KeyFile: keyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, src.ServerConfig(tls.NoClientCert))
	client := &tls.Config{RootCAs: pool(ca)}

	if cn, _, err := exchange(addr, client); err != nil || cn != "first" {
		t.Fatalf("server certificate: got %q (err %v), want %q", cn, err, "first")
	}
	issue(t, ca, "second", certgen.ServerUsage, dir, "server")
	if cn, _, err := exchange(addr, client); err != nil || cn != "second" {
		t.Fatalf("server certificate after replacing the files: got %q (err %v), want %q", cn, err, "second")
	}

	// A replacement that does not load keeps the last good certificate.
	replace(t, certFile, []byte("not a certificate"))
	if cn, _, err := exchange(addr, client); err != nil || cn != "second" {
		t.Fatalf("server certificate after a broken replacement: got %q (err %v), want %q", cn, err, "second")
	}
	issue(t, ca, "third", certgen.ServerUsage, dir, "server")
	if cn, _, err := exchange(addr, client); err != nil || cn != "third" {
		t.Fatalf("server certificate after a repaired replacement: got %q (err %v), want %q", cn, err, "third")
	}
}

func TestServerCertificateRewrittenInPlaceReloads(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "ca")
	certFile, keyFile := issue(t, ca, "first", certgen.ServerUsage, dir, "server")
	src, err := tlsconfig.New("client", tlsconfig.Files{CertFile: certFile, KeyFile: keyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, src.ServerConfig(tls.NoClientCert))
	client := &tls.Config{RootCAs: pool(ca)}
	if cn, _, err := exchange(addr, client); err != nil || cn != "first" {
		t.Fatalf("server certificate: got %q (err %v), want %q", cn, err, "first")
	}
	certPEM, keyPEM, err := ca.Issue(certgen.Spec{CommonName: "second", Hosts: []string{"127.0.0.1"}, Usage: certgen.ServerUsage})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{certFile, certPEM}, {keyFile, keyPEM}} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		// Two writes within one clock tick of the file system with equal
		// sizes would look unchanged; make the time differ for certain.
		later := time.Now().Add(time.Minute)
		if err := os.Chtimes(f.path, later, later); err != nil {
			t.Fatal(err)
		}
	}
	if cn, _, err := exchange(addr, client); err != nil || cn != "second" {
		t.Fatalf("server certificate after rewriting the files: got %q (err %v), want %q", cn, err, "second")
	}
}

func TestTrustedCAReloads(t *testing.T) {
	dir := t.TempDir()
	ca1, ca2 := newCA(t, "ca1"), newCA(t, "ca2")
	certFile, keyFile := issue(t, ca1, "server", certgen.ServerUsage, dir, "server")
	caFile := filepath.Join(dir, "ca.crt")
	replace(t, caFile, ca1.CertPEM)
	src, err := tlsconfig.New("client", tlsconfig.Files{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: caFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, src.ServerConfig(tls.RequireAndVerifyClientCert))

	// A client whose certificate comes from ca2 is refused while only ca1
	// is trusted, and accepted once the CA file holds both.
	ccert, ckey := issue(t, ca2, "alice", certgen.ClientUsage, dir, "alice")
	pair, err := tls.LoadX509KeyPair(ccert, ckey)
	if err != nil {
		t.Fatal(err)
	}
	client := &tls.Config{RootCAs: pool(ca1), Certificates: []tls.Certificate{pair}}
	if _, cn, err := exchange(addr, client); err == nil {
		t.Fatalf("client certificate of an untrusted CA: got accepted as %q, want refused", cn)
	}
	replace(t, caFile, append(append([]byte(nil), ca1.CertPEM...), ca2.CertPEM...))
	if _, cn, err := exchange(addr, client); err != nil || cn != "alice" {
		t.Fatalf("client certificate after trusting its CA: got %q (err %v), want %q", cn, err, "alice")
	}
}

func TestClientSideReloads(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "ca")
	scert, skey := issue(t, ca, "server", certgen.ServerUsage, dir, "server")
	caFile := filepath.Join(dir, "ca.crt")
	replace(t, caFile, ca.CertPEM)
	server, err := tlsconfig.New("peer", tlsconfig.Files{CertFile: scert, KeyFile: skey, TrustedCAFile: caFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, server.ServerConfig(tls.RequireAndVerifyClientCert))

	ccert, ckey := issue(t, ca, "peer-1", certgen.ClientUsage, dir, "client")
	client, err := tlsconfig.New("peer", tlsconfig.Files{CertFile: ccert, KeyFile: ckey, TrustedCAFile: caFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	check := func(want string) {
		t.Helper()
		cfg, err := client.ClientConfig()
		if err != nil {
			t.Fatal(err)
		}
		if _, cn, err := exchange(addr, cfg); err != nil || cn != want {
			t.Fatalf("client certificate seen by the server: got %q (err %v), want %q", cn, err, want)
		}
	}
	check("peer-1")
	issue(t, ca, "peer-2", certgen.ClientUsage, dir, "client")
	check("peer-2")
}

func TestNewRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "ca")
	certFile, keyFile := issue(t, ca, "server", certgen.ServerUsage, dir, "server")
	garbage := filepath.Join(dir, "garbage")
	replace(t, garbage, []byte("garbage"))
	for _, tc := range []struct {
		name  string
		files tlsconfig.Files
	}{
		{"cert without key", tlsconfig.Files{CertFile: certFile}},
		{"missing cert file", tlsconfig.Files{CertFile: filepath.Join(dir, "nope"), KeyFile: keyFile}},
		{"key of another cert", tlsconfig.Files{CertFile: certFile, KeyFile: garbage}},
		{"ca file without certificates", tlsconfig.Files{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: garbage}},
	} {
		if _, err := tlsconfig.New("client", tc.files, nil); err == nil {
			t.Errorf("%s: got no error, want one", tc.name)
		}
	}
}
