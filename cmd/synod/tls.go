package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/synod-io/synod/internal/certgen"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/tlsconfig"
)

// startTLSOptions are the TLS flags of `synod start`, named as etcd's.
type startTLSOptions struct {
	client         tlsconfig.Files
	clientCertAuth bool
	peer           tlsconfig.Files
	// peerCertAuth is etcd's --peer-client-cert-auth, accepted for
	// compatibility: with peer TLS, members always verify each other.
	peerCertAuth bool
}

func (o *startTLSOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.client.CertFile, "cert-file", "", "certificate of the client API (PEM): serve clients over TLS, with https:// client URLs")
	fs.StringVar(&o.client.KeyFile, "key-file", "", "key of --cert-file (PEM)")
	fs.StringVar(&o.client.TrustedCAFile, "trusted-ca-file", "", "CA bundle (PEM) that client certificates must chain to (with --client-cert-auth)")
	fs.BoolVar(&o.clientCertAuth, "client-cert-auth", false, "require clients to present a certificate signed by --trusted-ca-file (mutual TLS)")
	fs.StringVar(&o.peer.CertFile, "peer-cert-file", "", "certificate of this member for node-to-node traffic (PEM; server and client use)")
	fs.StringVar(&o.peer.KeyFile, "peer-key-file", "", "key of --peer-cert-file (PEM)")
	fs.StringVar(&o.peer.TrustedCAFile, "peer-trusted-ca-file", "", "CA bundle (PEM) that the other members' certificates must chain to")
	fs.BoolVar(&o.peerCertAuth, "peer-client-cert-auth", true, "require the other members to present a certificate signed by --peer-trusted-ca-file (always on with peer TLS)")
	// The names of the Synod issue, as aliases.
	for alias, target := range map[string]*string{
		"client-cert": &o.client.CertFile, "client-key": &o.client.KeyFile, "client-trusted-ca": &o.client.TrustedCAFile,
		"peer-cert": &o.peer.CertFile, "peer-key": &o.peer.KeyFile, "peer-trusted-ca": &o.peer.TrustedCAFile,
	} {
		fs.StringVar(target, alias, "", "alias")
		_ = fs.MarkHidden(alias)
	}
}

// apply checks the TLS flags and sets them in cfg.
func (o *startTLSOptions) apply(cfg *server.Config) error {
	if !o.peerCertAuth && o.peer.Enabled() {
		return usageErrorf("--peer-client-cert-auth=false is not supported: with peer TLS, members always verify each other's certificates")
	}
	if o.client.Enabled() && (o.client.CertFile == "" || o.client.KeyFile == "") {
		return usageErrorf("client TLS needs both --cert-file and --key-file")
	}
	if o.clientCertAuth && (o.client.CertFile == "" || o.client.TrustedCAFile == "") {
		return usageErrorf("--client-cert-auth needs --cert-file, --key-file and --trusted-ca-file")
	}
	if o.peer.Enabled() && (o.peer.CertFile == "" || o.peer.KeyFile == "" || o.peer.TrustedCAFile == "") {
		return usageErrorf("peer TLS needs --peer-cert-file, --peer-key-file and --peer-trusted-ca-file")
	}
	cfg.ClientTLS, cfg.ClientCertAuth, cfg.PeerTLS = o.client, o.clientCertAuth, o.peer
	return nil
}

// clientTLSConfig returns the TLS configuration of the client commands
// (nil: plaintext, unless an endpoint is https://).
func (o *clientOptions) clientTLSConfig() (*tls.Config, error) {
	files := tlsconfig.Files{CertFile: o.certFile, KeyFile: o.keyFile, TrustedCAFile: o.caFile}
	if !files.Enabled() {
		return nil, nil
	}
	src, err := tlsconfig.New("client", files, nil)
	if err != nil {
		return nil, err
	}
	return src.ClientConfig()
}

// validateTLS checks the client TLS flags.
func (o *clientOptions) validateTLS() error {
	if (o.certFile == "") != (o.keyFile == "") {
		return usageErrorf("--cert and --key go together")
	}
	return nil
}

func (a *app) certCmd() *cobra.Command {
	var (
		dir      string
		hosts    []string
		clientCN string
		force    bool
	)
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Generate a throwaway CA and certificates to try TLS",
		Long: `Generate a throwaway CA and, signed by it, certificates for the client API
(server.crt), for node-to-node traffic (peer.crt) and for a client
(client.crt), with ECDSA P-256 keys, valid for a year, covering 127.0.0.1,
localhost and ::1 plus --hosts. For development only: the CA key is kept,
unencrypted, next to the certificates.`,
		Args: argsBetween(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force {
				if _, err := os.Stat(filepath.Join(dir, "ca.crt")); err == nil {
					return fmt.Errorf("%s already holds a CA; use --force to replace it", dir)
				} else if !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("check cert dir: %w", err)
				}
			}
			p, err := certgen.WriteDir(dir, hosts, clientCN)
			if err != nil {
				return fmt.Errorf("generate certificates: %w", err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Wrote a throwaway CA and certificates to %s.\n\n", dir)
			fmt.Fprintf(out, "Start nodes with:\n  synod start %s ...\n\n", strings.Join(startTLSFlags(p), " "))
			fmt.Fprintf(out, "Talk to them with (client certificate CN %q):\n  etcdctl %s --endpoints https://127.0.0.1:2379 get foo\n  synod %s --endpoints https://127.0.0.1:2379 get foo\n",
				clientCN, etcdctlTLSFlags(p), etcdctlTLSFlags(p))
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&dir, "dir", "synod-certs", "directory to write the certificates and keys into")
	fs.StringSliceVar(&hosts, "hosts", nil, "more IP addresses and DNS names the server and peer certificates cover, comma-separated")
	fs.StringVar(&clientCN, "client-cn", "root", "common name of the client certificate (the user it authenticates as, once auth is on)")
	fs.BoolVar(&force, "force", false, "replace the certificates of an existing directory")
	return cmd
}

// startTLSFlags are the flags of `synod start` for the certificates of p:
// TLS with client certificates required, and peer TLS.
func startTLSFlags(p certgen.Paths) []string {
	return []string{
		"--cert-file", p.ServerCert, "--key-file", p.ServerKey, "--trusted-ca-file", p.CA, "--client-cert-auth",
		"--peer-cert-file", p.PeerCert, "--peer-key-file", p.PeerKey, "--peer-trusted-ca-file", p.PeerCA,
	}
}

// etcdctlTLSFlags are the client flags (etcdctl's, also synod's) for the
// certificates of p.
func etcdctlTLSFlags(p certgen.Paths) string {
	return fmt.Sprintf("--cacert %s --cert %s --key %s", p.CA, p.ClientCert, p.ClientKey)
}

// demoTLSFiles returns the TLS files of a demo node (none without --tls).
func demoTLSFiles(on bool, cert, key, ca string) tlsconfig.Files {
	if !on {
		return tlsconfig.Files{}
	}
	return tlsconfig.Files{CertFile: cert, KeyFile: key, TrustedCAFile: ca}
}

func demoScheme(tls bool) string {
	if tls {
		return "https://"
	}
	return "http://"
}

// httpsEndpoints lists host:port endpoints as https URLs, comma-separated
// (etcdctl needs the scheme to use TLS).
func httpsEndpoints(eps []string) string {
	urls := make([]string, len(eps))
	for i, ep := range eps {
		urls[i] = "https://" + ep
	}
	return strings.Join(urls, ",")
}
