package certgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority that can sign certificates.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// CertPEM is Cert, PEM-encoded.
	CertPEM []byte
}

// Usage says what a certificate may be used for.
type Usage int

// Usages of a certificate (as extended key usages).
const (
	ServerUsage Usage = 1 << iota // TLS server authentication
	ClientUsage                   // TLS client authentication
)

// Spec describes a certificate to issue.
type Spec struct {
	CommonName string
	// Hosts are the subject alternative names: IP addresses or DNS names.
	Hosts []string
	Usage Usage
	// NotBefore and NotAfter bound the validity (default: from an hour ago
	// for Validity).
	NotBefore, NotAfter time.Time
}

// Validity is how long certificates are valid by default.
const Validity = 365 * 24 * time.Hour

// DefaultHosts are the names every certificate made by WriteDir covers.
var DefaultHosts = []string{"127.0.0.1", "localhost", "::1"}

// NewCA makes a self-signed CA valid from notBefore to notAfter (zero
// values: an hour ago, and Validity later).
func NewCA(commonName string, notBefore, notAfter time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ca key: %w", err)
	}
	notBefore, notAfter = validity(notBefore, notAfter)
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"synod throwaway ca"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse ca certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der)}, nil
}

// Issue makes a certificate signed by the CA and returns it and its key,
// PEM-encoded.
func (ca *CA) Issue(spec Spec) (certPEM, keyPEM []byte, err error) {
	if spec.Usage == 0 {
		return nil, nil, errors.New("certificate usage is required")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	notBefore, notAfter := validity(spec.NotBefore, spec.NotAfter)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: spec.CommonName},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if spec.Usage&ServerUsage != 0 {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if spec.Usage&ClientUsage != 0 {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	for _, h := range spec.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate %q: %w", spec.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER), nil
}

// Paths are the files WriteDir writes.
type Paths struct {
	CA, CAKey             string // the client API's CA: server and client certificates
	PeerCA, PeerCAKey     string // the peers' own CA: peer certificates only
	ServerCert, ServerKey string
	PeerCert, PeerKey     string
	ClientCert, ClientKey string
}

// WriteDir makes two new CAs: one for the client API, which signs a server
// certificate (server and client use) and a client certificate with common
// name clientCN (client use), and one for the peers, which signs a peer
// certificate (node-to-node; server and client use). All cover DefaultHosts
// and hosts. Peers trust only the peer CA, so a client certificate cannot
// open the peer port (a node accepts any certificate its peer CA signed). It
// writes them into dir (created if needed; existing files are replaced) as
// ca.crt, ca.key, server.crt, server.key, client.crt, client.key,
// peer-ca.crt, peer-ca.key, peer.crt and peer.key. Keys have mode 0600.
func WriteDir(dir string, hosts []string, clientCN string) (Paths, error) {
	p := Paths{
		CA: filepath.Join(dir, "ca.crt"), CAKey: filepath.Join(dir, "ca.key"),
		PeerCA: filepath.Join(dir, "peer-ca.crt"), PeerCAKey: filepath.Join(dir, "peer-ca.key"),
		ServerCert: filepath.Join(dir, "server.crt"), ServerKey: filepath.Join(dir, "server.key"),
		PeerCert: filepath.Join(dir, "peer.crt"), PeerKey: filepath.Join(dir, "peer.key"),
		ClientCert: filepath.Join(dir, "client.crt"), ClientKey: filepath.Join(dir, "client.key"),
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Paths{}, fmt.Errorf("create cert dir: %w", err)
	}
	ca, err := writeCA("synod throwaway ca", p.CA, p.CAKey)
	if err != nil {
		return Paths{}, err
	}
	peerCA, err := writeCA("synod throwaway peer ca", p.PeerCA, p.PeerCAKey)
	if err != nil {
		return Paths{}, err
	}
	all := append(append([]string(nil), DefaultHosts...), hosts...)
	for _, c := range []struct {
		ca        *CA
		spec      Spec
		cert, key string
	}{
		{ca, Spec{CommonName: "synod server", Hosts: all, Usage: ServerUsage | ClientUsage}, p.ServerCert, p.ServerKey},
		{peerCA, Spec{CommonName: "synod peer", Hosts: all, Usage: ServerUsage | ClientUsage}, p.PeerCert, p.PeerKey},
		{ca, Spec{CommonName: clientCN, Hosts: all, Usage: ClientUsage}, p.ClientCert, p.ClientKey},
	} {
		certPEM, keyPEM, err := c.ca.Issue(c.spec)
		if err != nil {
			return Paths{}, err
		}
		if err := writeFile(c.cert, certPEM, 0o644); err != nil {
			return Paths{}, err
		}
		if err := writeFile(c.key, keyPEM, 0o600); err != nil {
			return Paths{}, err
		}
	}
	return p, nil
}

// writeCA makes a CA and writes its certificate and key.
func writeCA(commonName, certFile, keyFile string) (*CA, error) {
	ca, err := NewCA(commonName, time.Time{}, time.Time{})
	if err != nil {
		return nil, err
	}
	key, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, fmt.Errorf("encode ca key: %w", err)
	}
	if err := writeFile(certFile, ca.CertPEM, 0o644); err != nil {
		return nil, err
	}
	if err := writeFile(keyFile, pemBlock("PRIVATE KEY", key), 0o600); err != nil {
		return nil, err
	}
	return ca, nil
}

// writeFile replaces path atomically (a reloading server never reads half a
// file).
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func validity(notBefore, notAfter time.Time) (time.Time, time.Time) {
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = notBefore.Add(Validity)
	}
	return notBefore, notAfter
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
