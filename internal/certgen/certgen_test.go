package certgen_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/synod-io/synod/internal/certgen"
)

func TestWriteDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	p, err := certgen.WriteDir(dir, []string{"node1.example.com", "10.0.0.5"}, "root")
	if err != nil {
		t.Fatal(err)
	}
	pool := func(file string) *x509.CertPool {
		t.Helper()
		caPEM, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(caPEM) {
			t.Fatalf("%s: got no certificate, want one", file)
		}
		return roots
	}
	clientRoots, peerRoots := pool(p.CA), pool(p.PeerCA)
	for _, c := range []struct {
		cert, key string
		cn        string
		usages    []x509.ExtKeyUsage
		hosts     bool
		roots     *x509.CertPool // the CA that signed it
		others    *x509.CertPool // the CA that must not accept it
	}{
		{p.ServerCert, p.ServerKey, "synod server", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, true, clientRoots, peerRoots},
		{p.PeerCert, p.PeerKey, "synod peer", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, true, peerRoots, clientRoots},
		// A client certificate must not open the peer port.
		{p.ClientCert, p.ClientKey, "root", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, false, clientRoots, peerRoots},
	} {
		roots := c.roots
		pair, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			t.Fatalf("%s: %v", c.cert, err)
		}
		leaf := pair.Leaf
		if leaf.Subject.CommonName != c.cn {
			t.Errorf("%s common name: got %q, want %q", c.cert, leaf.Subject.CommonName, c.cn)
		}
		if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
			t.Errorf("%s key: got %T, want ECDSA P-256", c.cert, leaf.PublicKey)
		}
		for _, u := range c.usages {
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
				t.Errorf("%s verify for usage %v: got %v, want it valid", c.cert, u, err)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.others, KeyUsages: []x509.ExtKeyUsage{u}}); err == nil {
				t.Errorf("%s verify for usage %v against the other CA: got valid, want refused", c.cert, u)
			}
		}
		if c.hosts {
			for _, h := range []string{"127.0.0.1", "localhost", "::1", "node1.example.com", "10.0.0.5"} {
				if err := leaf.VerifyHostname(h); err != nil {
					t.Errorf("%s host %s: got %v, want covered", c.cert, h, err)
				}
			}
			if !slices.ContainsFunc(leaf.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.ParseIP("10.0.0.5")) }) {
				t.Errorf("%s IP SANs: got %v, want 10.0.0.5 among them", c.cert, leaf.IPAddresses)
			}
		}
		fi, err := os.Stat(c.key)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode: got %v, want 0600", c.key, fi.Mode().Perm())
		}
	}
}
