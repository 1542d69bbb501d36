package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tlsDir runs `synod cert` into a new directory and returns it.
func tlsDir(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if r := synod(t, "", "cert", "--dir", dir); r.code != 0 {
		t.Fatalf("synod cert --dir %s: got exit %d (stderr %q), want 0", dir, r.code, r.stderr)
	}
	return dir
}

// certFlags are etcdctl's (and synod's) client TLS flags for a cert dir.
func certFlags(dir string) []string {
	return []string{"--cacert", filepath.Join(dir, "ca.crt"), "--cert", filepath.Join(dir, "client.crt"), "--key", filepath.Join(dir, "client.key")}
}

// copyOver replaces dst's files by src's, each by rename, as a certificate
// tool would rotate them.
func copyOver(t *testing.T, src, dst string) {
	t.Helper()
	for _, f := range []string{"ca.crt", "peer-ca.crt", "server.crt", "server.key", "peer.crt", "peer.key"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dst, "."+f+".new")
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dst, f)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTLSClusterWithEtcdctl starts three nodes with client mTLS and peer
// TLS from `synod cert`, and drives them with etcdctl --cacert --cert --key;
// then rotates every certificate and CA under the running nodes.
func TestTLSClusterWithEtcdctl(t *testing.T) {
	t.Parallel()
	etcdctlPath(t) // fail at once without etcdctl
	certs := tlsDir(t, "certs")
	ports := freePorts(t, 6)
	dir := t.TempDir()
	var spec, eps, urls []string
	for i := range 3 {
		spec = append(spec, fmt.Sprintf("n%d=https://127.0.0.1:%d", i+1, ports[3+i]))
		eps = append(eps, fmt.Sprintf("127.0.0.1:%d", ports[i]))
		urls = append(urls, fmt.Sprintf("https://127.0.0.1:%d", ports[i]))
	}
	for i := range 3 {
		startProc(t, fmt.Sprintf("n%d", i+1), "start", "--name", fmt.Sprintf("n%d", i+1),
			"--data-dir", filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			"--client-addr", eps[i], "--peer-addr", fmt.Sprintf("127.0.0.1:%d", ports[3+i]),
			"--initial-cluster", strings.Join(spec, ","), "--tick-interval", "20ms",
			"--cert-file", filepath.Join(certs, "server.crt"), "--key-file", filepath.Join(certs, "server.key"),
			"--trusted-ca-file", filepath.Join(certs, "ca.crt"), "--client-cert-auth",
			"--peer-cert-file", filepath.Join(certs, "peer.crt"), "--peer-key-file", filepath.Join(certs, "peer.key"),
			"--peer-trusted-ca-file", filepath.Join(certs, "peer-ca.crt"))
	}
	endpoints := "--endpoints=" + strings.Join(urls, ",")
	ctl := func(dir string, args ...string) result {
		return etcdctl(t, "", append(append([]string{endpoints, "--dial-timeout=2s", "--command-timeout=3s"}, certFlags(dir)...), args...)...)
	}
	poll(t, 30*time.Second, "etcdctl put over mutual TLS", func() (bool, string) {
		r := ctl(certs, "put", "greeting", "hello")
		return r.code == 0 && r.stdout == "OK\n", fmt.Sprintf("%+v", r)
	})
	want(t, "etcdctl get over mutual TLS", ctl(certs, "get", "greeting"), "greeting\nhello\n")
	poll(t, 20*time.Second, "member list with https client URLs", func() (bool, string) {
		r := ctl(certs, "member", "list")
		return r.code == 0 && strings.Count(r.stdout, "https://127.0.0.1") == 6, fmt.Sprintf("%+v", r)
	})

	// synod's own client commands take the same flags.
	r := synod(t, "", append([]string{"get", "greeting", "--endpoints", strings.Join(eps, ",")}, certFlags(certs)...)...)
	want(t, "synod get over mutual TLS", r, "greeting\nhello\n")

	// No client certificate, or certificates of another CA: refused.
	other := tlsDir(t, "other")
	noCert := etcdctl(t, "", endpoints, "--dial-timeout=2s", "--command-timeout=3s", "--cacert", filepath.Join(certs, "ca.crt"), "get", "greeting")
	if noCert.code == 0 || strings.Contains(noCert.stdout, "hello") {
		t.Errorf("etcdctl without a client certificate: got exit 0 and %q, want refused", noCert.stdout)
	}
	if r := ctl(other, "get", "greeting"); r.code == 0 || strings.Contains(r.stdout, "hello") {
		t.Errorf("etcdctl with certificates of another CA: got exit 0 and %q, want refused", r.stdout)
	}

	// Rotate every certificate and the CA under the running nodes: new
	// connections must use the new ones, and the cluster keeps working.
	copyOver(t, other, certs)
	poll(t, 20*time.Second, "etcdctl with the rotated CA and client certificate", func() (bool, string) {
		r := ctl(other, "put", "rotated", "yes")
		return r.code == 0 && r.stdout == "OK\n", fmt.Sprintf("%+v", r)
	})
	// The client certificate of the old CA (copyOver left it) is refused.
	if r := ctl(certs, "get", "rotated"); r.code == 0 {
		t.Errorf("etcdctl with the old CA's client certificate after rotation: got exit 0 and %q, want refused", r.stdout)
	}
	for _, u := range urls {
		r := etcdctl(t, "", append(append([]string{"--endpoints=" + u, "--dial-timeout=2s", "--command-timeout=3s"}, certFlags(other)...),
			"get", "rotated", "--consistency=s")...)
		if r.code != 0 {
			t.Errorf("etcdctl get through %s after rotation: got exit %d (stderr %q), want 0", u, r.code, r.stderr)
		}
	}
}

// TestStartWarnsWithoutTLSOnNonLoopback checks the warning of a node that
// serves plaintext on an address other machines can reach.
func TestStartWarnsWithoutTLSOnNonLoopback(t *testing.T) {
	t.Parallel()
	ports := freePorts(t, 2)
	p := startProc(t, "n1", "start", "--name", "n1", "--data-dir", filepath.Join(t.TempDir(), "n1"),
		"--client-addr", fmt.Sprintf("0.0.0.0:%d", ports[0]), "--peer-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]))
	poll(t, 20*time.Second, "plaintext warning", func() (bool, string) {
		return strings.Contains(p.stderr.String(), "the client listener is not loopback-only and has no TLS"), p.stderr.String()
	})
	if strings.Contains(p.stderr.String(), "the peer listener is not loopback-only") {
		t.Errorf("stderr: got a warning for the loopback peer listener, want none:\n%s", p.stderr.String())
	}
}
