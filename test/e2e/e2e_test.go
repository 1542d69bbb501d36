package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/synod-io/synod/internal/testbin"
)

// synodBin is the synod binary built by TestMain; tests get it from synodPath.
var synodBin string

var consulted struct {
	once sync.Once
	err  error
}

// synodPath returns the path of the synod binary. The first call also consults
// the module's sources (testbin.ConsultSources), from inside a test, where
// go test records what a test reads.
func synodPath(t *testing.T) string {
	t.Helper()
	consulted.once.Do(func() { consulted.err = testbin.ConsultSources(filepath.Join("..", "..")) })
	if consulted.err != nil {
		t.Fatalf("consult sources: %v", consulted.err)
	}
	return synodBin
}

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "synod-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	synodBin = filepath.Join(dir, "synod")
	build := exec.Command("go", "build", "-o", synodBin, "github.com/synod-io/synod/cmd/synod")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build synod:", err)
		return 1
	}
	return m.Run()
}

// etcdctlPath returns the path of etcdctl; the e2e tests need it and fail
// without it.
func etcdctlPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("etcdctl")
	if err != nil {
		t.Fatalf("etcdctl not found: run `apt-get install -y etcd-client` (CI does this in .ci/run)")
	}
	return p
}

// freePorts returns n distinct ports that were free a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a child process that runs in the background.
type proc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{}
	err            error // set when done is closed
}

// startProc starts synod with args; it is killed when the test ends. With
// SYNOD_TEST_PRESPLIT=1, synod start and synod demo get the flags of a
// pre-split store (testbin.PresplitArgs), which apply when they bootstrap
// a cluster.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	if len(args) > 0 && (args[0] == "start" || args[0] == "demo") {
		args = append(slices.Clip(args), testbin.PresplitArgs()...)
	}
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(synodPath(t), args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stdout:\n%s\n%s stderr:\n%s", name, p.stdout.String(), name, lastLines(p.stderr.String(), 40))
		}
	})
	return p
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s", p.name, timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("%s: %v", p.name, p.err)
	}
	return 0
}

// result is the outcome of a command run to completion.
type result struct {
	code           int
	stdout, stderr string
}

func runCmd(t *testing.T, stdin string, env []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %s %s: %v", name, strings.Join(args, " "), err)
	}
	return r
}

// synod runs the synod binary to completion.
func synod(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runCmd(t, stdin, nil, synodPath(t), args...)
}

// etcdctl runs Debian's etcdctl (API v3) to completion.
func etcdctl(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runCmd(t, stdin, []string{"ETCDCTL_API=3"}, etcdctlPath(t), args...)
}

// want checks that a command succeeded with stdout want.
func want(t *testing.T, what string, r result, wantOut string) {
	t.Helper()
	if r.code != 0 {
		t.Errorf("%s: exit %d, stderr %q", what, r.code, r.stderr)
		return
	}
	if r.stdout != wantOut {
		t.Errorf("%s: got\n%q\nwant\n%q", what, r.stdout, wantOut)
	}
}

// poll retries f until it returns true, or fails the test at the deadline.
func poll(t *testing.T, timeout time.Duration, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := f()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not done after %s: %s", what, timeout, state)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronization
	}
}

// newPeerSecret makes a peer secret file as an operator would, with
// `synod peer-secret new`, and returns its path.
func newPeerSecret(t *testing.T) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "peer-secret.hex")
	if r := synod(t, "", "peer-secret", "new", file); r.code != 0 {
		t.Fatalf("synod peer-secret new: %+v", r)
	}
	return file
}

// etcdctlRevision runs an etcdctl write with -w json and returns its
// revision.
func etcdctlRevision(t *testing.T, args ...string) int64 {
	t.Helper()
	r := etcdctl(t, "", append(args, "-w", "json")...)
	var resp struct {
		Header struct {
			Revision int64 `json:"revision"`
		} `json:"header"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &resp) != nil || resp.Header.Revision == 0 {
		t.Fatalf("etcdctl %s -w json: exit %d, stdout %q, stderr %q", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return resp.Header.Revision
}

func TestDemoWithEtcdctl(t *testing.T) {
	t.Parallel()
	etcdctlPath(t) // fail at once without etcdctl
	ports := freePorts(t, 6)
	var clientPorts, peerPorts, eps []string
	for i := range 3 {
		clientPorts = append(clientPorts, strconv.Itoa(ports[i]))
		peerPorts = append(peerPorts, strconv.Itoa(ports[3+i]))
		eps = append(eps, "127.0.0.1:"+strconv.Itoa(ports[i]))
	}
	endpoints := strings.Join(eps, ",")
	demo := startProc(t, "demo", "demo",
		"--client-ports", strings.Join(clientPorts, ","), "--peer-ports", strings.Join(peerPorts, ","))
	poll(t, 30*time.Second, "demo ready", func() (bool, string) {
		if demo.exited() {
			t.Fatalf("demo exited early: stdout %q, stderr %q", demo.stdout.String(), demo.stderr.String())
		}
		return strings.Contains(demo.stdout.String(), "\nready: "), demo.stdout.String()
	})
	out := demo.stdout.String()
	m := regexp.MustCompile(`data in (\S+) \(removed on exit\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("demo output names no data dir:\n%s", out)
	}
	dataDir := m[1]
	t.Cleanup(func() { os.RemoveAll(dataDir) }) // in case the demo is killed
	for i := range 3 {
		row := fmt.Sprintf("n%d   http://%s   http://127.0.0.1:%s", i+1, eps[i], peerPorts[i])
		if !regexp.MustCompile(`(?m)^` + strings.ReplaceAll(regexp.QuoteMeta(row), "   ", `\s+`) + `\s+` + regexp.QuoteMeta(filepath.Join(dataDir, fmt.Sprintf("n%d", i+1))) + `$`).MatchString(out) {
			t.Errorf("demo table lacks a row for n%d (%s):\n%s", i+1, row, out)
		}
	}
	if !strings.Contains(out, "synod put hello world --endpoints "+endpoints+"\n") ||
		!strings.Contains(out, "ETCDCTL_API=3 etcdctl --endpoints "+endpoints+" put hello world\n") {
		t.Errorf("demo output lacks the example commands:\n%s", out)
	}
	ep := "--endpoints=" + endpoints

	// put and get
	want(t, "etcdctl put", etcdctl(t, "", ep, "put", "foo", "bar"), "OK\n")
	want(t, "etcdctl get", etcdctl(t, "", ep, "get", "foo"), "foo\nbar\n")
	want(t, "etcdctl get missing", etcdctl(t, "", ep, "get", "missing"), "")
	r1 := etcdctlRevision(t, ep, "put", "k", "v1")
	r2 := etcdctlRevision(t, ep, "put", "k", "v2")
	want(t, "etcdctl get --rev", etcdctl(t, "", ep, "get", "k", "--rev="+strconv.FormatInt(r1, 10)), "k\nv1\n")
	want(t, "etcdctl get latest", etcdctl(t, "", ep, "get", "k"), "k\nv2\n")
	want(t, "etcdctl put --prev-kv", etcdctl(t, "", ep, "put", "k", "v3", "--prev-kv"), "OK\nk\nv2\n")
	for _, kv := range [][2]string{{"a1", "3"}, {"a2", "1"}, {"a3", "2"}, {"b1", "x"}} {
		want(t, "etcdctl put "+kv[0], etcdctl(t, "", ep, "put", kv[0], kv[1]), "OK\n")
	}
	want(t, "etcdctl get --prefix", etcdctl(t, "", ep, "get", "a", "--prefix"), "a1\n3\na2\n1\na3\n2\n")
	want(t, "etcdctl get range", etcdctl(t, "", ep, "get", "a1", "a3"), "a1\n3\na2\n1\n")
	want(t, "etcdctl get --limit", etcdctl(t, "", ep, "get", "a", "--prefix", "--limit=2"), "a1\n3\na2\n1\n")
	want(t, "etcdctl get --sort-by=VALUE", etcdctl(t, "", ep, "get", "a", "--prefix", "--sort-by=VALUE"), "a2\n1\na3\n2\na1\n3\n")
	want(t, "etcdctl get --sort-by=MODIFY --order=DESCEND", etcdctl(t, "", ep, "get", "a", "--prefix", "--sort-by=MODIFY", "--order=DESCEND", "--limit=2"), "a3\n2\na2\n1\n")
	want(t, "etcdctl get --order=DESCEND", etcdctl(t, "", ep, "get", "a", "--prefix", "--order=DESCEND"), "a3\n2\na2\n1\na1\n3\n")
	want(t, "etcdctl get --keys-only", etcdctl(t, "", ep, "get", "a", "--prefix", "--keys-only"), "a1\n\na2\n\na3\n\n")
	want(t, "etcdctl get --print-value-only", etcdctl(t, "", ep, "get", "a", "--prefix", "--print-value-only"), "3\n1\n2\n")
	want(t, "etcdctl get --from-key", etcdctl(t, "", ep, "get", "b", "--from-key", "--limit=2"), "b1\nx\nfoo\nbar\n")

	// del
	want(t, "etcdctl del", etcdctl(t, "", ep, "del", "a1"), "1\n")
	want(t, "etcdctl del missing", etcdctl(t, "", ep, "del", "a1"), "0\n")
	want(t, "etcdctl del --prefix --prev-kv", etcdctl(t, "", ep, "del", "a", "--prefix", "--prev-kv"), "2\na2\n1\na3\n2\n")
	want(t, "etcdctl get deleted", etcdctl(t, "", ep, "get", "a", "--prefix"), "")

	// txn, both branches
	want(t, "etcdctl txn success",
		etcdctl(t, "value(\"foo\") = \"bar\"\nmod(\"k\") > \"0\"\n\nput t yes\nget foo\n\nput t no\n\n", ep, "txn"),
		"SUCCESS\n\nOK\n\nfoo\nbar\n")
	want(t, "etcdctl get after txn success", etcdctl(t, "", ep, "get", "t"), "t\nyes\n")
	want(t, "etcdctl txn failure",
		etcdctl(t, "value(\"foo\") = \"nope\"\n\nput t yes\n\nput t no\ndel b1\nget t\n\n", ep, "txn"),
		"FAILURE\n\nOK\n\n1\n\nt\nno\n")
	want(t, "etcdctl txn create = 0",
		etcdctl(t, "create(\"fresh\") = \"0\"\nversion(\"k\") = \"3\"\n\nput fresh 1\n\n\n", ep, "txn"),
		"SUCCESS\n\nOK\n")
	want(t, "etcdctl txn create = 0 again",
		etcdctl(t, "create(\"fresh\") = \"0\"\n\nput fresh 2\n\nget fresh\n\n", ep, "txn"),
		"FAILURE\n\nfresh\n1\n")

	// compaction, as seen by etcdctl
	want(t, "etcdctl compact", etcdctl(t, "", ep, "compact", strconv.FormatInt(r2, 10)), fmt.Sprintf("compacted revision %d\n", r2))
	if r := etcdctl(t, "", ep, "get", "k", "--rev="+strconv.FormatInt(r1, 10)); r.code == 0 || !strings.Contains(r.stderr, "required revision has been compacted") {
		t.Errorf("etcdctl get below the compaction: exit %d, stderr %q", r.code, r.stderr)
	}

	// endpoint status --cluster: one line per member, one leader.
	r := etcdctl(t, "", ep, "endpoint", "status", "--cluster")
	if r.code != 0 {
		t.Fatalf("etcdctl endpoint status --cluster: exit %d, stderr %q", r.code, r.stderr)
	}
	statusLine := regexp.MustCompile(`^http://127\.0\.0\.1:(\d+), ([0-9a-f]+), 3\.6\.0, [0-9.]+ [kMG]?B, (true|false), false, (\d+), (\d+), (\d+), $`)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	leaders := 0
	ids := map[string]string{} // client port -> member ID
	for _, line := range lines {
		m := statusLine.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("etcdctl endpoint status line %q does not match %v", line, statusLine)
			continue
		}
		ids[m[1]] = m[2]
		if m[3] == "true" {
			leaders++
		}
	}
	if len(lines) != 3 || len(ids) != 3 || leaders != 1 {
		t.Errorf("etcdctl endpoint status --cluster: want 3 members and 1 leader, got\n%s", r.stdout)
	}

	// member list: id, started, name, peer URL, client URL, learner.
	r = etcdctl(t, "", ep, "member", "list")
	if r.code != 0 {
		t.Fatalf("etcdctl member list: exit %d, stderr %q", r.code, r.stderr)
	}
	lines = strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 3 {
		t.Errorf("etcdctl member list: want 3 lines, got\n%s", r.stdout)
	}
	for i := range 3 {
		wantLine := fmt.Sprintf("%s, started, n%d, http://127.0.0.1:%s, http://127.0.0.1:%s, false",
			ids[clientPorts[i]], i+1, peerPorts[i], clientPorts[i])
		if !strings.Contains(r.stdout, wantLine+"\n") {
			t.Errorf("etcdctl member list lacks %q:\n%s", wantLine, r.stdout)
		}
	}

	// The synod client commands against the same cluster, and across.
	want(t, "synod put", synod(t, "", "put", "hello", "world", ep), "OK\n")
	want(t, "synod get", synod(t, "", "get", "hello", ep), "hello\nworld\n")
	want(t, "etcdctl get of a synod put", etcdctl(t, "", ep, "get", "hello"), "hello\nworld\n")
	want(t, "synod get of an etcdctl put", synod(t, "", "get", "foo", ep), "foo\nbar\n")
	want(t, "synod get --prefix", synod(t, "", "get", "f", "--prefix", ep), "foo\nbar\nfresh\n1\n")
	want(t, "synod txn", synod(t, "value(\"hello\") = \"world\"\n\nget hello --print-value-only\n", "txn", ep), "SUCCESS\n\nworld\n")
	r = synod(t, "", "members", ep)
	if r.code != 0 || strings.Count(r.stdout, "\n") != 4 || !strings.Contains(r.stdout, ids[clientPorts[0]]) {
		t.Errorf("synod members: exit %d, stdout\n%s", r.code, r.stdout)
	}

	checkWatchAndLease(t, ep)

	// Ctrl-C stops the demo cleanly and removes its data.
	if err := demo.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := demo.wait(t, 20*time.Second); code != 0 {
		t.Errorf("demo exited with %d after SIGINT, want 0; stderr %q", code, demo.stderr.String())
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("demo data dir %s still exists after exit (%v)", dataDir, err)
	}
}

func TestStartBadFlags(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--heartbeat-ticks", "10", "--election-ticks", "10"}, "Error: --heartbeat-ticks (10) must be less than --election-ticks (10)"},
		{[]string{"--max-request-bytes", "-1"}, "Error: --max-request-bytes must be positive, got -1"},
		{[]string{"--initial-cluster", "n1:2380"}, `Error: --initial-cluster: initial cluster entry "n1:2380": want name=host:port`},
		{[]string{"--name", "n9", "--initial-cluster", "n1=127.0.0.1:2380"}, `Error: --initial-cluster has no member named "n9" (--name)`},
		{[]string{"--tick-interval", "soon"}, `Error: invalid argument "soon" for "--tick-interval" flag`},
		{[]string{"--no-such-flag"}, "Error: unknown flag: --no-such-flag"},
		{[]string{"extra-arg"}, `Error: synod start takes no arguments, got "extra-arg"`},
	}
	for _, tt := range tests {
		r := synod(t, "", append([]string{"start", "--data-dir", dir}, tt.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("synod start %s: exit %d, stderr %q; want non-zero and %q", strings.Join(tt.args, " "), r.code, r.stderr, tt.want)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("synod start with bad flags created its data dir (%v)", err)
	}
}

func TestStartClusterKillRestart(t *testing.T) {
	t.Parallel()
	ports := freePorts(t, 6)
	dir := t.TempDir()
	secret := newPeerSecret(t)
	var spec, eps []string
	for i := range 3 {
		spec = append(spec, fmt.Sprintf("n%d=127.0.0.1:%d", i+1, ports[3+i]))
		eps = append(eps, fmt.Sprintf("127.0.0.1:%d", ports[i]))
	}
	args := func(i int) []string {
		return []string{"start", "--name", fmt.Sprintf("n%d", i+1),
			"--data-dir", filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			"--client-addr", eps[i], "--peer-addr", fmt.Sprintf("127.0.0.1:%d", ports[3+i]),
			"--initial-cluster", strings.Join(spec, ","), "--peer-secret-file", secret,
			"--tick-interval", "20ms", "--log-level", "debug"}
	}
	nodes := make([]*proc, 3)
	for i := range 3 {
		nodes[i] = startProc(t, fmt.Sprintf("n%d", i+1), args(i)...)
	}
	at := func(i int) string { return "--endpoints=" + eps[i] }
	// getUntil polls a get through one node until it shows want.
	getUntil := func(i int, want string, extra ...string) {
		t.Helper()
		poll(t, 20*time.Second, fmt.Sprintf("get through n%d", i+1), func() (bool, string) {
			r := synod(t, "", append([]string{"get", "durable", at(i), "--command-timeout", "2s"}, extra...)...)
			return r.code == 0 && r.stdout == want, fmt.Sprintf("%+v", r)
		})
	}

	// Write through n1 once the cluster has a leader.
	poll(t, 20*time.Second, "first write", func() (bool, string) {
		r := synod(t, "", "put", "durable", "yes", at(0), "--command-timeout", "2s")
		return r.code == 0 && r.stdout == "OK\n", fmt.Sprintf("%+v", r)
	})
	getUntil(1, "durable\nyes\n")

	// SIGKILL n1: the other two still serve the key and take writes.
	if err := nodes[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	nodes[0].wait(t, 10*time.Second)
	getUntil(1, "durable\nyes\n")
	poll(t, 20*time.Second, "write without n1", func() (bool, string) {
		r := synod(t, "", "put", "durable", "still", at(2), "--command-timeout", "2s")
		return r.code == 0, fmt.Sprintf("%+v", r)
	})

	// Restart n1 from its data dir: it catches up and serves the key.
	nodes[0] = startProc(t, "n1 (restarted)", args(0)...)
	getUntil(0, "durable\nstill\n")
	getUntil(0, "durable\nstill\n", "--consistency", "s")
	// Every member shows up in status --cluster once it has published its
	// client URL again.
	poll(t, 20*time.Second, "status --cluster after restart", func() (bool, string) {
		r := synod(t, "", "status", "--cluster", at(0))
		return r.code == 0 && strings.Count(r.stdout, "\n") == 4, fmt.Sprintf("%+v", r)
	})

	// SIGTERM stops a node cleanly.
	for i, n := range nodes {
		if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := n.wait(t, 20*time.Second); code != 0 {
			t.Errorf("n%d exited with %d after SIGTERM, want 0", i+1, code)
		}
	}
}

// checkWatchAndLease drives etcdctl's watch and lease commands, and synod's,
// against the demo: a watcher sees puts, the deletion of a revoked lease's
// key, and the deletion of an expired lease's keys.
func checkWatchAndLease(t *testing.T, ep string) {
	t.Helper()
	var out syncBuffer
	watcher := exec.Command(etcdctlPath(t), ep, "watch", "wl/", "--prefix")
	watcher.Env = append(os.Environ(), "ETCDCTL_API=3")
	watcher.Stdout = &out
	if err := watcher.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = watcher.Process.Kill()
		_ = watcher.Wait()
	}()
	// The watch is in place once it reports a put made after it started.
	poll(t, 10*time.Second, "etcdctl watch running", func() (bool, string) {
		etcdctl(t, "", ep, "put", "wl/probe", "p")
		return strings.Contains(out.String(), "wl/probe"), out.String()
	})

	grant := etcdctl(t, "", ep, "lease", "grant", "2")
	m := regexp.MustCompile(`^lease ([0-9a-f]+) granted with TTL\(2s\)\n$`).FindStringSubmatch(grant.stdout)
	if grant.code != 0 || m == nil {
		t.Fatalf("etcdctl lease grant: exit %d, stdout %q, stderr %q", grant.code, grant.stdout, grant.stderr)
	}
	short := m[1]
	want(t, "etcdctl put --lease", etcdctl(t, "", ep, "put", "wl/session", "up", "--lease="+short), "OK\n")
	r := etcdctl(t, "", ep, "lease", "timetolive", short, "--keys")
	if r.code != 0 || !strings.Contains(r.stdout, "granted with TTL(2s)") || !strings.Contains(r.stdout, "attached keys([wl/session])") {
		t.Errorf("etcdctl lease timetolive --keys: exit %d, stdout %q", r.code, r.stdout)
	}
	want(t, "etcdctl lease keep-alive --once", etcdctl(t, "", ep, "lease", "keep-alive", "--once", short),
		"lease "+short+" keepalived with TTL(2)\n")

	sg := synod(t, "", "lease", "grant", "60", ep)
	lm := regexp.MustCompile(`^lease ([0-9a-f]{16}) granted with TTL\(60s\)\n$`).FindStringSubmatch(sg.stdout)
	if sg.code != 0 || lm == nil {
		t.Fatalf("synod lease grant: exit %d, stdout %q, stderr %q", sg.code, sg.stdout, sg.stderr)
	}
	long := lm[1]
	want(t, "synod put --lease", synod(t, "", "put", "wl/owned", "x", "--lease", long, ep), "OK\n")
	want(t, "etcdctl lease revoke", etcdctl(t, "", ep, "lease", "revoke", long), "lease "+long+" revoked\n")
	r = etcdctl(t, "", ep, "put", "wl/owned", "again", "--lease="+long)
	if r.code == 0 || !strings.Contains(r.stderr, "requested lease not found") {
		t.Errorf("put with a revoked lease: exit %d, stderr %q, want lease not found", r.code, r.stderr)
	}

	// The short lease expires: its key goes, and the watcher sees it go.
	poll(t, 20*time.Second, "expired lease's key deleted", func() (bool, string) {
		return etcdctl(t, "", ep, "get", "wl/session").stdout == "", "wl/session still there"
	})
	want(t, "etcdctl lease timetolive after expiry", etcdctl(t, "", ep, "lease", "timetolive", short),
		"lease "+short+" already expired\n")
	poll(t, 10*time.Second, "watcher saw the deletions", func() (bool, string) {
		s := out.String()
		return strings.Contains(s, "DELETE\nwl/owned\n") && strings.Contains(s, "DELETE\nwl/session\n"), s
	})
	s := out.String()
	if i, j := strings.Index(s, "PUT\nwl/session\nup\n"), strings.Index(s, "DELETE\nwl/session\n"); i < 0 || j < i {
		t.Errorf("watch output has the put and delete of wl/session out of order:\n%s", s)
	}

	// synod watch replays history from a revision.
	rev := etcdctlRevision(t, ep, "put", "wl/replay", "1")
	want(t, "synod watch --rev", synod(t, "", "watch", "wl/replay", "--rev", strconv.FormatInt(rev, 10), "--max-events", "1", ep),
		"PUT\nwl/replay\n1\n")
}

// TestMembershipAndMaintenanceWithEtcdctl drives Synod's Cluster and
// Maintenance services with Debian's etcdctl, against real processes: hash
// comparison, backup, alarms, leader transfer, and growing and shrinking
// the cluster both the etcd way (member add, then start with
// --initial-cluster-state existing) and Synod's way (--join).
func TestMembershipAndMaintenanceWithEtcdctl(t *testing.T) {
	t.Parallel()
	etcdctlPath(t)
	ports := freePorts(t, 10)
	dir := t.TempDir()
	secret := newPeerSecret(t)
	var spec, eps []string
	for i := range 3 {
		spec = append(spec, fmt.Sprintf("n%d=127.0.0.1:%d", i+1, ports[3+i]))
		eps = append(eps, fmt.Sprintf("127.0.0.1:%d", ports[i]))
	}
	for i := range 3 {
		startProc(t, fmt.Sprintf("n%d", i+1), "start", "--name", fmt.Sprintf("n%d", i+1),
			"--data-dir", filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			"--client-addr", eps[i], "--peer-addr", fmt.Sprintf("127.0.0.1:%d", ports[3+i]),
			"--initial-cluster", strings.Join(spec, ","), "--peer-secret-file", secret, "--tick-interval", "20ms")
	}
	all := "--endpoints=" + strings.Join(eps, ",")
	poll(t, 20*time.Second, "cluster serving", func() (bool, string) {
		r := etcdctl(t, "", all, "put", "k", "v")
		return r.code == 0, r.stderr
	})
	for i := range 20 {
		etcdctl(t, "", all, "put", fmt.Sprintf("k%d", i), "v")
	}
	memberIDs := func() map[string]string { // name -> hex ID
		r := etcdctl(t, "", all, "member", "list")
		ids := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			f := strings.Split(line, ", ")
			if len(f) >= 3 {
				ids[f[2]] = f[0]
			}
		}
		return ids
	}
	leaderID := func() string {
		r := etcdctl(t, "", all, "endpoint", "status", "--cluster")
		for _, line := range strings.Split(r.stdout, "\n") {
			if f := strings.Split(line, ", "); len(f) > 4 && f[4] == "true" {
				return f[1]
			}
		}
		return ""
	}

	// endpoint hashkv: the same hash on every member.
	poll(t, 10*time.Second, "equal hashes", func() (bool, string) {
		r := etcdctl(t, "", all, "endpoint", "hashkv", "--cluster")
		var hashes []string
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			if f := strings.Split(line, ", "); len(f) == 2 {
				hashes = append(hashes, f[1])
			}
		}
		return r.code == 0 && len(hashes) == 3 && hashes[0] == hashes[1] && hashes[1] == hashes[2], r.stdout + r.stderr
	})
	// snapshot save, checked by synod.
	file := filepath.Join(dir, "backup.db")
	if r := etcdctl(t, "", "--endpoints="+eps[1], "snapshot", "save", file); r.code != 0 || !strings.Contains(r.stdout, "Snapshot saved at "+file) {
		t.Fatalf("etcdctl snapshot save: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := synod(t, "", "snapshot", "status", file); r.code != 0 || !strings.Contains(r.stdout, "pairs ") {
		t.Fatalf("synod snapshot status: %+v", r)
	}
	// alarm list: none.
	want(t, "etcdctl alarm list", etcdctl(t, "", all, "alarm", "list"), "")

	// move-leader to a follower.
	ids := memberIDs()
	var target string
	for _, id := range ids {
		if id != leaderID() {
			target = id
			break
		}
	}
	if r := etcdctl(t, "", all, "move-leader", target); r.code != 0 || !strings.Contains(r.stdout, "Leadership transferred") {
		t.Fatalf("etcdctl move-leader: %+v", r)
	}
	poll(t, 10*time.Second, "new leader", func() (bool, string) { return leaderID() == target, leaderID() })

	// The etcd way: member add, then start with the printed cluster and
	// the cluster's peer secret, fetched from the running cluster.
	r := etcdctl(t, "", all, "member", "add", "n4", fmt.Sprintf("--peer-urls=http://127.0.0.1:%d", ports[7]))
	m := regexp.MustCompile(`ETCD_INITIAL_CLUSTER="([^"]+)"`).FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Fatalf("etcdctl member add: %+v", r)
	}
	fetched := filepath.Join(t.TempDir(), "fetched.hex")
	if r := synod(t, "", "peer-secret", "get", fetched, all); r.code != 0 {
		t.Fatalf("synod peer-secret get: %+v", r)
	}
	n4 := startProc(t, "n4", "start", "--name", "n4", "--data-dir", filepath.Join(dir, "n4"),
		"--client-addr", fmt.Sprintf("127.0.0.1:%d", ports[6]), "--peer-addr", fmt.Sprintf("127.0.0.1:%d", ports[7]),
		"--initial-cluster", m[1], "--initial-cluster-state", "existing", "--peer-secret-file", fetched, "--tick-interval", "20ms")
	poll(t, 20*time.Second, "n4 started and serving", func() (bool, string) {
		r := etcdctl(t, "", fmt.Sprintf("--endpoints=127.0.0.1:%d", ports[6]), "get", "k7")
		return r.code == 0 && r.stdout == "k7\nv\n", r.stdout + r.stderr
	})

	// Synod's way: --join adds a learner that is promoted once caught up.
	startProc(t, "n5", "start", "--name", "n5", "--data-dir", filepath.Join(dir, "n5"),
		"--client-addr", fmt.Sprintf("127.0.0.1:%d", ports[8]), "--peer-addr", fmt.Sprintf("127.0.0.1:%d", ports[9]),
		"--join", eps[0], "--tick-interval", "20ms")
	poll(t, 30*time.Second, "n5 promoted", func() (bool, string) {
		r := etcdctl(t, "", all, "member", "list")
		return strings.Contains(r.stdout, ", started, n5, ") && !strings.Contains(r.stdout, "true"), r.stdout
	})
	if r := synod(t, "", "members", all); r.code != 0 || strings.Count(r.stdout, "healthy") != 5 {
		t.Errorf("synod members with 5 nodes: %+v", r)
	}

	// Shrink: remove n4; its process stops and says why.
	if r := etcdctl(t, "", all, "member", "remove", memberIDs()["n4"]); r.code != 0 {
		t.Fatalf("etcdctl member remove n4: %+v", r)
	}
	if code := n4.wait(t, 20*time.Second); code == 0 || !strings.Contains(n4.stderr.String(), "was removed from the cluster") {
		t.Errorf("removed n4: exit %d, stderr %q, want a failure saying it was removed", code, lastLines(n4.stderr.String(), 5))
	}
	poll(t, 10*time.Second, "member list without n4", func() (bool, string) {
		r := etcdctl(t, "", all, "member", "list")
		return strings.Count(strings.TrimSpace(r.stdout), "\n") == 3 && !strings.Contains(r.stdout, "n4"), r.stdout
	})
}
