package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func curlPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl not found: run `apt-get install -y curl`")
	}
	return p
}

// curl runs curl -sS with args to completion.
func curl(t *testing.T, args ...string) result {
	t.Helper()
	return runCmd(t, "", nil, curlPath(t), append([]string{"-sS"}, args...)...)
}

// jsonField returns a field of a JSON document by its dotted path.
func jsonField(t *testing.T, doc, path string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(doc), &v); err != nil {
		t.Fatalf("%q is not JSON: %v", doc, err)
	}
	for _, f := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[f]
	}
	return v
}

// curlStream starts curl -N on a streaming path and returns its output
// lines; curl is killed when the test ends.
func curlStream(t *testing.T, args ...string) <-chan string {
	t.Helper()
	cmd := exec.Command(curlPath(t), append([]string{"-sS", "-N"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return lines
}

func streamLine(t *testing.T, what string, lines <-chan string) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatalf("%s: curl's stream ended", what)
		}
		return l
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: no line after 20 s", what)
	}
	return ""
}

// TestGatewayWithCurl drives the JSON gateway of `synod start` with curl, on
// the client port that etcdctl uses at the same time: put and range as in
// etcd's documentation, a watch that streams etcdctl's put as a line, HTTP/2
// with prior knowledge, CORS, and then the same over TLS with a client
// certificate, where curl negotiates HTTP/2.
func TestGatewayWithCurl(t *testing.T) {
	t.Parallel()
	etcdctlPath(t)
	curlPath(t)
	ports := freePorts(t, 2)
	ep := fmt.Sprintf("127.0.0.1:%d", ports[0])
	startProc(t, "n1", "start", "--name", "n1", "--data-dir", filepath.Join(t.TempDir(), "n1"),
		"--client-addr", ep, "--peer-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--tick-interval", "20ms", "--cors", "https://console.example")
	base := "http://" + ep
	poll(t, 20*time.Second, "gateway ready", func() (bool, string) {
		r := curl(t, "-X", "POST", base+"/v3/kv/put", "-d", `{"key": "Zm9v", "value": "YmFy"}`)
		return r.code == 0 && strings.Contains(r.stdout, `"revision":"`), fmt.Sprintf("%+v", r)
	})
	want(t, "etcdctl get of curl's put", etcdctl(t, "", "--endpoints="+ep, "get", "foo"), "foo\nbar\n")
	r := curl(t, "-X", "POST", base+"/v3/kv/range", "-d", `{"key": "Zm9v"}`)
	if v := jsonField(t, r.stdout, "count"); v != "1" {
		t.Errorf("range: got count %v in %s, want \"1\"", v, r.stdout)
	}
	r = curl(t, "--http2-prior-knowledge", "-X", "POST", base+"/v3/kv/range", "-d", `{"key": "Zm9v"}`, "-w", "\n%{http_version}")
	if !strings.HasSuffix(r.stdout, "\n2") || !strings.Contains(r.stdout, `"value":"YmFy"`) {
		t.Errorf("range over HTTP/2 with prior knowledge: got %q", r.stdout)
	}
	r = curl(t, "-i", "-X", "POST", base+"/v3/kv/range", "-H", "Origin: https://console.example", "-d", `{"key": "Zm9v"}`)
	if !strings.Contains(r.stdout, "Access-Control-Allow-Origin: https://console.example") {
		t.Errorf("CORS: got %q, want the origin allowed", r.stdout)
	}

	lines := curlStream(t, "-X", "POST", base+"/v3/watch", "-d", `{"create_request": {"key": "Zm9v"}}`)
	if l := streamLine(t, "watch", lines); jsonField(t, l, "result.created") != true {
		t.Fatalf("watch: got %s, want a created response", l)
	}
	want(t, "etcdctl put under watch", etcdctl(t, "", "--endpoints="+ep, "put", "foo", "baz"), "OK\n")
	if l := streamLine(t, "watch", lines); !strings.Contains(l, `"value":"YmF6"`) {
		t.Errorf("watch: got %s, want etcdctl's put", l)
	}

	// Over TLS with client certificates: curl negotiates HTTP/2 by ALPN.
	certs := tlsDir(t, "certs")
	tports := freePorts(t, 2)
	tep := fmt.Sprintf("127.0.0.1:%d", tports[0])
	startProc(t, "tls", "start", "--name", "tls", "--data-dir", filepath.Join(t.TempDir(), "tls"),
		"--client-addr", tep, "--peer-addr", fmt.Sprintf("127.0.0.1:%d", tports[1]), "--tick-interval", "20ms",
		"--cert-file", filepath.Join(certs, "server.crt"), "--key-file", filepath.Join(certs, "server.key"),
		"--trusted-ca-file", filepath.Join(certs, "ca.crt"), "--client-cert-auth")
	tls := append(certFlags(certs), "-X", "POST", "https://"+tep+"/v3/kv/put", "-d", `{"key": "Zm9v", "value": "YmFy"}`, "-w", "\n%{http_version}")
	poll(t, 20*time.Second, "gateway over TLS", func() (bool, string) {
		r := curl(t, tls...)
		return r.code == 0 && strings.HasSuffix(r.stdout, "\n2") && strings.Contains(r.stdout, `"revision":"`), fmt.Sprintf("%+v", r)
	})
	r = curl(t, "--cacert", filepath.Join(certs, "ca.crt"), "-X", "POST", "https://"+tep+"/v3/kv/range", "-d", `{"key": "Zm9v"}`)
	if r.code == 0 {
		t.Errorf("curl without a client certificate: got exit 0 and %q, want refused", r.stdout)
	}
	want(t, "etcdctl over TLS on the same port", etcdctl(t, "", append([]string{"--endpoints=" + tep}, append(certFlags(certs), "get", "foo")...)...), "foo\nbar\n")
}
