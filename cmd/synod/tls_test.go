package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestTLSBadFlags(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	start := func(args ...string) []string {
		return append([]string{"start", "--data-dir", dir}, args...)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{start("--cert-file", "s.crt"), "client TLS needs both --cert-file and --key-file"},
		{start("--client-cert-auth"), "--client-cert-auth needs --cert-file, --key-file and --trusted-ca-file"},
		{start("--cert-file", "s.crt", "--key-file", "s.key", "--client-cert-auth"), "--client-cert-auth needs"},
		{start("--peer-cert-file", "p.crt", "--peer-key-file", "p.key"), "peer TLS needs --peer-cert-file, --peer-key-file and --peer-trusted-ca-file"},
		{start("--peer-cert", "p.crt"), "peer TLS needs"}, // the alias
		{start("--peer-cert-file", "p.crt", "--peer-key-file", "p.key", "--peer-trusted-ca-file", "ca.crt", "--peer-client-cert-auth=false"),
			"--peer-client-cert-auth=false is not supported"},
		{[]string{"get", "a", "--cert", "c.crt"}, "--cert and --key go together"},
	} {
		code, _, stderr := execute(t.Context(), "", tt.args...)
		if code != exitUsage || !strings.Contains(stderr, "Error: "+tt.want) {
			t.Errorf("synod %s: got exit %d and stderr %q, want exit %d and %q", strings.Join(tt.args, " "), code, stderr, exitUsage, tt.want)
		}
	}
}

func TestStartWithMissingCertificateFails(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := execute(t.Context(), "", "start", "--data-dir", filepath.Join(dir, "data"),
		"--client-addr", "127.0.0.1:0", "--peer-addr", "127.0.0.1:0",
		"--cert-file", filepath.Join(dir, "none.crt"), "--key-file", filepath.Join(dir, "none.key"))
	if code != exitError || !strings.Contains(stderr, "load client cert") {
		t.Errorf("start with a missing certificate: got exit %d and stderr %q, want exit %d and %q", code, stderr, exitError, "load client cert")
	}
}

func TestCertCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	code, stdout, stderr := execute(t.Context(), "", "cert", "--dir", dir, "--hosts", "node1.example.com,10.0.0.5")
	if code != 0 {
		t.Fatalf("synod cert: got exit %d (stderr %q), want 0", code, stderr)
	}
	for _, f := range []string{"ca.crt", "ca.key", "peer-ca.crt", "peer-ca.key", "server.crt", "server.key", "peer.crt", "peer.key", "client.crt", "client.key"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("synod cert: %s: got %v, want the file", f, err)
		}
		if strings.HasSuffix(f, ".key") && fi.Mode().Perm() != 0o600 {
			t.Errorf("synod cert: %s mode: got %v, want 0600", f, fi.Mode().Perm())
		}
	}
	if want := "--cacert " + filepath.Join(dir, "ca.crt"); !strings.Contains(stdout, want) {
		t.Errorf("synod cert output: got %q, want it to contain %q", stdout, want)
	}
	code, _, stderr = execute(t.Context(), "", "cert", "--dir", dir)
	if code != exitError || !strings.Contains(stderr, "already holds a CA") {
		t.Errorf("synod cert over an existing CA: got exit %d and stderr %q, want exit %d and %q", code, stderr, exitError, "already holds a CA")
	}
	if code, _, stderr = execute(t.Context(), "", "cert", "--dir", dir, "--force"); code != 0 {
		t.Errorf("synod cert --force: got exit %d (stderr %q), want 0", code, stderr)
	}
}

// TestDemoTLS runs `synod demo --tls` and talks to it with the client flags
// it prints; without a client certificate the demo refuses the client.
func TestDemoTLS(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"demo", "--tls", "--client-ports", "0,0,0", "--peer-ports", "0,0,0", "--tick-interval", "10ms"},
			strings.NewReader(""), &stdout, &stderr)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stdout.String(), "Press Ctrl-C to stop.") {
		select {
		case code := <-done:
			t.Fatalf("demo --tls: got exit %d (stdout %q, stderr %q), want it running", code, stdout.String(), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo --tls not ready after 20s: stdout %q, stderr %q", stdout.String(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	out := stdout.String()
	m := regexp.MustCompile(`synod put hello world --endpoints (\S+) --cacert (\S+) --cert (\S+) --key (\S+)\n`).FindStringSubmatch(out)
	if m == nil || !regexp.MustCompile(`(?m)^n1\s+https://127\.0\.0\.1:\d+\s+https://`).MatchString(out) {
		t.Fatalf("demo --tls output: got\n%s\nwant https URLs and the example with --cacert, --cert and --key", out)
	}
	tlsFlags := []string{"--endpoints", m[1], "--cacert", m[2], "--cert", m[3], "--key", m[4]}
	if code, got, errOut := execute(t.Context(), "", append([]string{"put", "hello", "world"}, tlsFlags...)...); code != 0 || got != "OK\n" {
		t.Errorf("put with the demo's TLS flags: got exit %d, stdout %q, stderr %q; want 0 and OK", code, got, errOut)
	}
	if code, got, _ := execute(t.Context(), "", append([]string{"get", "hello"}, tlsFlags...)...); code != 0 || got != "hello\nworld\n" {
		t.Errorf("get with the demo's TLS flags: got exit %d, stdout %q; want 0 and hello world", code, got)
	}
	noCert := []string{"get", "hello", "--endpoints", m[1], "--cacert", m[2], "--dial-timeout", "500ms"}
	if code, got, _ := execute(t.Context(), "", noCert...); code == 0 {
		t.Errorf("get without a client certificate: got exit 0 and %q, want a failure", got)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("demo --tls after cancel: got exit %d, want 0 (stderr %q)", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("demo --tls did not stop within 20s")
	}
}
