package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/synod-io/synod/api/synodpb"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/synod-io/synod/internal/peerauth"
	"github.com/synod-io/synod/internal/server"
)

// testCluster is a three-node cluster in this process.
type testCluster struct {
	srvs      []*server.Server
	endpoints []string
	secret    []byte // the peer secret the nodes were started with
}

// startCluster starts three nodes on 127.0.0.1:0 listeners with a short
// tick, and waits until they agree on a leader and every member has
// published its client URL.
func startCluster(t *testing.T) *testCluster {
	t.Helper()
	var peers, clients []net.Listener
	var spec []string
	for i := range 3 {
		pl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		peers, clients = append(peers, pl), append(clients, cl)
		spec = append(spec, fmt.Sprintf("n%d=%s", i+1, pl.Addr()))
	}
	secret, err := peerauth.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{secret: secret}
	var nodes []*demoNode
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		s, err := server.Open(server.Config{
			Name: name, DataDir: t.TempDir(),
			PeerListener: peers[i], ClientListener: clients[i],
			InitialCluster: strings.Join(spec, ","), TickInterval: 10 * time.Millisecond,
			PeerSecret: secret,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		c.srvs = append(c.srvs, s)
		c.endpoints = append(c.endpoints, s.ClientAddr())
		nodes = append(nodes, &demoNode{name: name, srv: s})
	}
	if _, err := waitDemoReady(t.Context(), nodes, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return c
}

// run runs synod with args against the cluster.
func (c *testCluster) run(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	args = append([]string{"--endpoints=" + strings.Join(c.endpoints, ",")}, args...)
	return execute(t.Context(), stdin, args...)
}

// want runs synod with args and checks that it succeeds with stdout want.
func (c *testCluster) want(t *testing.T, stdin, want string, args ...string) {
	t.Helper()
	code, stdout, stderr := c.run(t, stdin, args...)
	if code != 0 {
		t.Fatalf("synod %s: exit %d, stderr %q", strings.Join(args, " "), code, stderr)
	}
	if stdout != want {
		t.Errorf("synod %s: got\n%q\nwant\n%q", strings.Join(args, " "), stdout, want)
	}
}

// wantError runs synod with args and checks that it fails with exit code 1
// and the error message want.
func (c *testCluster) wantError(t *testing.T, stdin, want string, args ...string) {
	t.Helper()
	code, stdout, stderr := c.run(t, stdin, args...)
	if code != exitError || stderr != "Error: "+want+"\n" {
		t.Errorf("synod %s: exit %d, stderr %q; want exit %d, stderr %q (stdout %q)",
			strings.Join(args, " "), code, stderr, exitError, "Error: "+want+"\n", stdout)
	}
}

// revision runs a command with -w json and returns the header revision.
func (c *testCluster) revision(t *testing.T, args ...string) int64 {
	t.Helper()
	code, stdout, stderr := c.run(t, "", append(args, "-w", "json")...)
	if code != 0 {
		t.Fatalf("synod %s: exit %d, stderr %q", strings.Join(args, " "), code, stderr)
	}
	var resp struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	if err := json.Unmarshal([]byte(stdout), &resp); err != nil {
		t.Fatalf("synod %s: bad json %q: %v", strings.Join(args, " "), stdout, err)
	}
	rev, err := strconv.ParseInt(resp.Header.Revision, 10, 64)
	if err != nil {
		t.Fatalf("synod %s: bad revision in %q", strings.Join(args, " "), stdout)
	}
	return rev
}

// eventually retries check until it holds or the deadline passes.
func eventually(t *testing.T, what string, check func() (ok bool, got string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, got := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after 10s", what, got)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronization
	}
}

func TestClientCommands(t *testing.T) {
	c := startCluster(t)
	s := func(v int64) string { return strconv.FormatInt(v, 10) }

	// put
	c.want(t, "", "OK\n", "put", "foo", "bar")
	c.want(t, "", "OK\nfoo\nbar\n", "put", "foo", "baz", "--prev-kv")
	c.want(t, "", "foo\nbaz\n", "get", "foo")
	c.want(t, "", "OK\n", "put", "--", "dash", "-v")
	c.want(t, "", "dash\n-v\n", "get", "dash")
	c.want(t, "", "OK\n", "put", "sp ace", "a b  c")
	c.want(t, "", "sp ace\na b  c\n", "get", "sp ace")
	c.want(t, "", "OK\n", "put", "empty", "")
	c.want(t, "", "empty\n\n", "get", "empty")
	c.want(t, "", "OK\n", "put", "empty", "--ignore-value")
	c.want(t, "", "", "get", "missing")
	c.wantError(t, "", "etcdserver: key is not provided", "put", "", "v")
	c.wantError(t, "", "etcdserver: requested lease not found", "put", "k", "v", "--lease", "1234abcd")

	// get: revisions
	r1 := c.revision(t, "put", "k", "v1")
	r2 := c.revision(t, "put", "k", "v2")
	if r2 <= r1 {
		t.Errorf("revision after second put = %d, want above %d", r2, r1)
	}
	c.want(t, "", "k\nv1\n", "get", "k", "--rev", s(r1))
	c.want(t, "", "k\nv2\n", "get", "k", "--rev", s(r2))
	c.want(t, "", "k\nv2\n", "get", "k")
	c.wantError(t, "", "etcdserver: mvcc: required revision is a future revision", "get", "k", "--rev", s(r2+1000))

	// get: ranges, prefixes, limits, sorting
	ra1 := c.revision(t, "put", "a1", "3")
	ra2 := c.revision(t, "put", "a2", "1")
	c.revision(t, "put", "a3", "2")
	c.want(t, "", "OK\n", "put", "b1", "x")
	c.want(t, "", "a1\n3\na2\n1\na3\n2\n", "get", "a", "--prefix")
	c.want(t, "", "a1\n3\na2\n1\n", "get", "a1", "a3")
	c.want(t, "", "a1\n3\na2\n1\n", "get", "a", "--prefix", "--limit", "2")
	c.want(t, "", "a2\n1\na3\n2\na1\n3\n", "get", "a", "--prefix", "--sort-by", "VALUE")
	c.want(t, "", "a1\n3\na3\n2\na2\n1\n", "get", "a", "--prefix", "--sort-by", "value", "--order", "DESCEND")
	c.want(t, "", "a3\n2\na2\n1\na1\n3\n", "get", "a", "--prefix", "--order", "DESCEND")
	c.want(t, "", "a3\n2\n", "get", "a", "--prefix", "--sort-by", "MODIFY", "--order", "DESCEND", "--limit", "1")
	c.want(t, "", "a1\n3\n", "get", "a", "--prefix", "--sort-by", "CREATE", "--limit", "1")
	c.want(t, "", "a1\n\na2\n\na3\n\n", "get", "a", "--prefix", "--keys-only")
	c.want(t, "", "3\n", "get", "a", "--prefix", "--count-only")
	c.want(t, "", "3\n1\n2\n", "get", "a", "--prefix", "--print-value-only")
	c.want(t, "", "a2\n1\na3\n2\n", "get", "a", "--prefix", "--min-mod-rev", s(ra2))
	c.want(t, "", "a1\n3\n", "get", "a", "--prefix", "--max-create-rev", s(ra1))
	c.want(t, "", "a2\n1\n", "get", "a", "--prefix", "--min-create-rev", s(ra2), "--max-mod-rev", s(ra2))
	c.want(t, "", "b1\nx\ndash\n-v\n", "get", "b", "--from-key", "--limit", "2")
	eventually(t, "serializable get", func() (bool, string) {
		_, out, _ := c.run(t, "", "get", "a1", "--consistency", "s")
		return out == "a1\n3\n", fmt.Sprintf("%q", out)
	})

	// get: JSON
	code, stdout, stderr := c.run(t, "", "get", "a1", "-w", "json")
	var rr pb.RangeResponse
	if code != 0 {
		t.Fatalf("get -w json: exit %d, stderr %q", code, stderr)
	}
	if err := protojson.Unmarshal([]byte(stdout), &rr); err != nil {
		t.Fatalf("get -w json: %q: %v", stdout, err)
	}
	if len(rr.Kvs) != 1 || string(rr.Kvs[0].Key) != "a1" || string(rr.Kvs[0].Value) != "3" || rr.Kvs[0].ModRevision != ra1 || rr.Count != 1 {
		t.Errorf("get -w json = %v, want a1=3 at revision %d", &rr, ra1)
	}

	// txn
	c.want(t, "value(\"foo\") = \"baz\"\n\nput t yes\nget foo\n\nput t no\n",
		"SUCCESS\n\nOK\n\nfoo\nbaz\n", "txn")
	c.want(t, "", "t\nyes\n", "get", "t")
	c.want(t, "value(\"foo\") = \"nope\"\n\nput t yes\n\nput t no\nget t\ndel a --prefix --prev-kv\n",
		"FAILURE\n\nOK\n\nt\nno\n\n3\na1\n3\na2\n1\na3\n2\n", "txn")
	c.want(t, "create(\"missing\") = \"0\"\nversion(\"foo\") = \"2\"\nmod(\"k\") = \""+s(r2)+"\"\nlease(\"k\") = \"0\"\n\nget k --count-only\nget k --print-value-only\n\n",
		"SUCCESS\n\n1\n\nv2\n", "txn")
	c.want(t, "mod(\"k\") > \""+s(r2)+"\"\n\n\nput 'quoted key' \"tab\\there\"\n\n",
		"FAILURE\n\nOK\n", "txn")
	c.want(t, "", "quoted key\ntab\there\n", "get", "quoted key")
	c.want(t, "\n\n\n", "SUCCESS\n", "txn")
	c.want(t, "value(\"foo\") = \"baz\"\n\nput t yes\n\nput t no\n\nignored\n",
		"compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\nSUCCESS\n\nOK\n", "txn", "-i")
	c.wantError(t, "\nput \"\" v\n", "etcdserver: key is not provided", "txn")
	code, stdout, _ = c.run(t, "value(\"foo\") = \"baz\"\n\nget foo\n", "txn", "-w", "json")
	var tr pb.TxnResponse
	if err := protojson.Unmarshal([]byte(stdout), &tr); code != 0 || err != nil || !tr.Succeeded || len(tr.Responses) != 1 {
		t.Errorf("txn -w json: exit %d, %q", code, stdout)
	}

	// del
	c.want(t, "", "OK\n", "put", "d1", "1")
	c.want(t, "", "OK\n", "put", "d2", "2")
	c.want(t, "", "OK\n", "put", "d3", "3")
	c.want(t, "", "1\n", "del", "d1")
	c.want(t, "", "0\n", "del", "d1")
	c.want(t, "", "1\nd2\n2\n", "del", "d2", "d3", "--prev-kv")
	c.want(t, "", "2\n", "del", "d", "--prefix") // d3 and dash
	c.want(t, "", "0\n", "get", "d", "--prefix", "--count-only")

	// compact
	c.want(t, "", "compacted revision "+s(r2)+"\n", "compact", s(r2))
	c.wantError(t, "", "etcdserver: mvcc: required revision has been compacted", "get", "k", "--rev", s(r1))
	c.want(t, "", "k\nv2\n", "get", "k", "--rev", s(r2))
	c.wantError(t, "", "etcdserver: mvcc: required revision has been compacted", "compact", s(r1))
	rNow := c.revision(t, "put", "k", "v3")
	c.want(t, "", "compacted revision "+s(rNow)+"\n", "compact", s(rNow), "--physical")
	c.want(t, "", "k\nv3\n", "get", "k", "--rev", s(rNow))
	c.wantError(t, "", "etcdserver: mvcc: required revision is a future revision", "compact", s(rNow+100))

	// del --from-key removes everything from "t" on.
	c.want(t, "", "1\n", "del", "t", "--from-key")
}

// memberRow matches a row of `synod members`.
var memberRow = regexp.MustCompile(`^([0-9a-f]+)\s+(n\d)\s+(leader|follower)\s+(http://\S+)\s+(http://\S+)\s+(\d+)\s+(\d+)\s+(\S+ k?B)\s+(healthy)$`)

func TestMembersAndStatus(t *testing.T) {
	c := startCluster(t)

	code, stdout, stderr := c.run(t, "", "members")
	if code != 0 {
		t.Fatalf("members: exit %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != 4 || !regexp.MustCompile(`^ID\s+NAME\s+ROLE\s+PEER URLS\s+CLIENT URLS\s+RAFT INDEX\s+LAG\s+DB SIZE\s+HEALTH$`).MatchString(lines[0]) {
		t.Fatalf("members: got\n%s\nwant a header and 3 rows", stdout)
	}
	for _, line := range lines[1:] {
		m := memberRow.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("members row %q does not match %v", line, memberRow)
			continue
		}
		i, _ := strconv.Atoi(strings.TrimPrefix(m[2], "n"))
		i--
		srv := c.srvs[i]
		want := []string{fmt.Sprintf("%x", srv.MemberID()), fmt.Sprintf("n%d", i+1), "http://" + srv.PeerAddr(), "http://" + srv.ClientAddr()}
		if got := []string{m[1], m[2], m[4], m[5]}; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("members row %d = %q, want %q", i, got, want)
		}
	}

	code, stdout, _ = c.run(t, "", "members", "-w", "json")
	var ml pb.MemberListResponse
	if err := protojson.Unmarshal([]byte(stdout), &ml); code != 0 || err != nil || len(ml.Members) != 3 {
		t.Errorf("members -w json: exit %d, %q (%v)", code, stdout, err)
	}

	// status over the given endpoints, then over the member list.
	for _, args := range [][]string{{"status"}, {"status", "--cluster"}} {
		// Right after start a member may still take itself for the
		// leader of a term that has ended: wait until they agree.
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, stdout, _ = c.run(t, "", args...)
			if code == 0 && strings.Count(stdout, " leader ") == 1 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		code, stdout, stderr = c.run(t, "", args...)
		if code != 0 {
			t.Fatalf("%s: exit %d, stderr %q", args, code, stderr)
		}
		lines = strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
		if len(lines) != 4 || !strings.HasPrefix(lines[0], "ENDPOINT") || !strings.HasSuffix(lines[0], "ERRORS") {
			t.Fatalf("%s: got\n%s\nwant a header and 3 rows", args, stdout)
		}
		leaders := 0
		seen := map[int]bool{}
		for _, line := range lines[1:] {
			f := strings.Fields(line)
			// endpoint, id, role, version, size, unit, term, index, applied, lag, health, errors
			if len(f) != 12 {
				t.Errorf("%s row %q: want 12 fields", args, line)
				continue
			}
			i := slices.Index(c.endpoints, strings.TrimPrefix(f[0], "http://"))
			if i < 0 || seen[i] || (len(args) == 2) != strings.HasPrefix(f[0], "http://") {
				t.Errorf("%s row %q: unexpected endpoint", args, line)
				continue
			}
			seen[i] = true
			if f[1] != fmt.Sprintf("%x", c.srvs[i].MemberID()) || f[3] != server.APIVersion || f[10] != "healthy" || f[11] != "-" {
				t.Errorf("%s row %d = %q", args, i, line)
			}
			if f[2] == "leader" {
				leaders++
			}
		}
		if leaders != 1 {
			t.Errorf("%s: %d leaders, want 1:\n%s", args, leaders, stdout)
		}
	}

	code, stdout, _ = c.run(t, "", "status", "-w", "json")
	var rows []struct {
		Endpoint string          `json:"endpoint"`
		Status   json.RawMessage `json:"status"`
	}
	if err := json.Unmarshal([]byte(stdout), &rows); code != 0 || err != nil || len(rows) != 3 {
		t.Fatalf("status -w json: exit %d, %q (%v)", code, stdout, err)
	}
	var st pb.StatusResponse
	if err := protojson.Unmarshal(rows[0].Status, &st); err != nil || st.Version != server.APIVersion || st.Leader == 0 {
		t.Errorf("status -w json row 0 = %s (%v)", rows[0].Status, err)
	}

	// An endpoint that does not answer gets a row with its error and fails
	// the command.
	code, stdout, stderr = execute(t.Context(), "", "status", "--endpoints", c.endpoints[0]+",127.0.0.1:1", "--command-timeout", "1s")
	if code != exitError || stderr != "Error: 1 of 2 endpoints did not answer\n" {
		t.Errorf("status with a dead endpoint: exit %d, stderr %q", code, stderr)
	}
	if lines = strings.Split(strings.TrimSuffix(stdout, "\n"), "\n"); len(lines) != 3 ||
		!strings.HasPrefix(lines[2], "127.0.0.1:1 ") || !strings.Contains(lines[2], "deadline exceeded") {
		t.Errorf("status with a dead endpoint: got\n%s", stdout)
	}
}

// syncBuffer is a buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

func TestDemo(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"demo", "--client-ports", "0,0,0", "--peer-ports", "0,0,0", "--tick-interval", "10ms"},
			strings.NewReader(""), &stdout, &stderr)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stdout.String(), "Press Ctrl-C to stop.") {
		select {
		case code := <-done:
			t.Fatalf("demo exited with %d: stdout %q, stderr %q", code, stdout.String(), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo not ready after 20s: stdout %q, stderr %q", stdout.String(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	out := stdout.String()
	dataDir := regexp.MustCompile(`data in (\S+) \(removed on exit\)`).FindStringSubmatch(out)
	eps := regexp.MustCompile(`synod put hello world --endpoints (\S+)\n`).FindStringSubmatch(out)
	if dataDir == nil || eps == nil || !regexp.MustCompile(`(?m)^ready: n\d is the leader`).MatchString(out) {
		t.Fatalf("demo output lacks the data dir, ready line or example:\n%s", out)
	}
	table := 0
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if regexp.MustCompile(`^n\d\s+http://127\.0\.0\.1:\d+\s+http://127\.0\.0\.1:\d+\s+` + regexp.QuoteMeta(dataDir[1]) + `/n\d$`).MatchString(sc.Text()) {
			table++
		}
	}
	if table != 3 {
		t.Errorf("demo table has %d node rows, want 3:\n%s", table, out)
	}
	// The console's address, and the console there.
	console := regexp.MustCompile(`(?m)^Web console: (http://127\.0\.0\.1:\d+/ui/)$`).FindStringSubmatch(out)
	if console == nil || !strings.HasPrefix(eps[1], strings.TrimSuffix(strings.TrimPrefix(console[1], "http://"), "/ui/")+",") {
		t.Errorf("demo output lacks the console URL of n1 (%s):\n%s", eps[1], out)
	} else if resp, err := http.Get(console[1]); err != nil {
		t.Errorf("GET %s: %v", console[1], err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "<title>Synod console</title>") {
			t.Errorf("GET %s: got %d %q, want the console's page", console[1], resp.StatusCode, body)
		}
	}
	if code, got, errOut := execute(t.Context(), "", "put", "hello", "world", "--endpoints", eps[1]); code != 0 || got != "OK\n" {
		t.Errorf("put against the demo: exit %d, stdout %q, stderr %q", code, got, errOut)
	}
	if code, got, _ := execute(t.Context(), "", "get", "hello", "--endpoints", eps[1]); code != 0 || got != "hello\nworld\n" {
		t.Errorf("get against the demo: exit %d, stdout %q", code, got)
	}

	cancel() // as Ctrl-C does
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("demo exited with %d after cancel, want 0; stderr %q", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("demo did not stop within 20s")
	}
	if _, err := os.Stat(dataDir[1]); !os.IsNotExist(err) {
		t.Errorf("demo data dir %s still exists (%v)", dataDir[1], err)
	}
	if !strings.HasSuffix(stdout.String(), "stopped\n") {
		t.Errorf("demo output does not end with stopped:\n%s", stdout.String())
	}
}

func TestDemoPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	code, stdout, stderr := execute(t.Context(), "", "demo", "--client-ports", "0,"+strconv.Itoa(port)+",0", "--peer-ports", "0,0,0")
	want := fmt.Sprintf("Error: cannot use client port %d for n2 (is another synod or etcd running? choose other ports with --client-ports)", port)
	if code != exitError || !strings.HasPrefix(stderr, want) {
		t.Errorf("demo with port %d taken: exit %d, stderr %q; want exit 1 and %q", port, code, stderr, want)
	}
	if stdout != "" {
		t.Errorf("demo with a port taken printed %q", stdout)
	}
}

func TestStartInProcess(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	dir := filepath.Join(t.TempDir(), "solo")
	metricsAddr := freeAddr(t)
	go func() {
		done <- run(ctx, []string{"start", "--name", "solo", "--data-dir", dir,
			"--client-addr", "127.0.0.1:0", "--peer-addr", "127.0.0.1:0",
			"--metrics-addr", metricsAddr, "--enable-pprof",
			"--tick-interval", "10ms", "--log-format", "json"},
			strings.NewReader(""), &stdout, &stderr)
	}()
	// The JSON log says where the client API listens.
	var clientURL string
	deadline := time.Now().Add(20 * time.Second)
	for clientURL == "" {
		for _, line := range strings.Split(stderr.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "synod member started" {
				clientURL, _ = rec["client-url"].(string)
			}
		}
		select {
		case code := <-done:
			t.Fatalf("start exited with %d: %s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no start log after 20s: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	ep := "--endpoints=" + clientURL
	eventually(t, "put to a single-node cluster", func() (bool, string) {
		code, out, errOut := execute(t.Context(), "", "put", "k", "v", ep)
		return code == 0 && out == "OK\n", out + errOut
	})
	if code, out, _ := execute(t.Context(), "", "get", "k", ep); code != 0 || out != "k\nv\n" {
		t.Errorf("get from a single-node cluster: exit %d, stdout %q", code, out)
	}
	for _, path := range []string{"/metrics", "/debug/pprof/"} {
		resp, err := http.Get("http://" + metricsAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s with --enable-pprof: got %d, want 200", path, resp.StatusCode)
		}
	}

	cancel() // as SIGINT does
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("start exited with %d after cancel, want 0: %s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("start did not stop within 20s")
	}
	if !strings.Contains(stderr.String(), `"msg":"stopped"`) {
		t.Errorf("start did not log that it stopped:\n%s", stderr.String())
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("data dir: %v", err)
	}
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// rangeRow matches a row of `synod ranges`: ID, kind, start, end, keys,
// size, leader, replicas, generation, term, applied index, revision.
var rangeRow = regexp.MustCompile(`^(\d+)\s+(system|data)\s+(\S+)\s+(\S+)\s+(\S+)\s+([\d.]+ [kMG]?B)\s+(n\d)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\S+)$`)

func TestRanges(t *testing.T) {
	c := startCluster(t)
	c.want(t, "", "OK\n", "put", "k", "v")
	for _, args := range [][]string{{"ranges"}, {"range", "list"}} {
		waitRanges(t, c, args)
		code, stdout, stderr := c.run(t, "", args...)
		if code != 0 {
			t.Fatalf("%s: exit %d, stderr %q", args, code, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
		if len(lines) != 3 || !regexp.MustCompile(`^ID\s+KIND\s+START\s+END\s+KEYS\s+SIZE\s+LEADER\s+REPLICAS\s+GEN\s+TERM\s+APPLIED\s+REVISION$`).MatchString(lines[0]) {
			t.Fatalf("%s: got\n%s\nwant a header and 2 rows", args, stdout)
		}
		sys, data := rangeRow.FindStringSubmatch(lines[1]), rangeRow.FindStringSubmatch(lines[2])
		if sys == nil || data == nil {
			t.Fatalf("%s rows do not match %v:\n%s", args, rangeRow, stdout)
		}
		if got := []string{sys[1], sys[2], sys[3], sys[4], sys[5], sys[9], sys[12]}; strings.Join(got, " ") != "1 system - - - - -" {
			t.Errorf("system range row: got %q", got)
		}
		if got := []string{data[1], data[2], data[3], data[4], data[5], data[9]}; strings.Join(got, " ") != `2 data "" "" 1 1` {
			t.Errorf("data range row: got %q, want range 2 over every key with 1 key, generation 1", got)
		}
		if got, want := data[8], "n1:voter,n2:voter,n3:voter"; !sameSet(strings.Split(got, ","), strings.Split(want, ",")) {
			t.Errorf("data range replicas: got %q, want %q", got, want)
		}
		if rev, err := strconv.Atoi(data[12]); err != nil || rev < 1 {
			t.Errorf("data range revision: got %q, want the revision of the put", data[12])
		}
	}

	waitRanges(t, c, []string{"ranges"})
	code, stdout, _ := c.run(t, "", "ranges", "-w", "json")
	var rl synodpb.ListRangesResponse
	if err := protojson.Unmarshal([]byte(stdout), &rl); code != 0 || err != nil || len(rl.Ranges) != 2 || !rl.Ranges[0].System || rl.Ranges[1].Id != 2 || rl.MemberId == 0 {
		t.Fatalf("ranges -w json: exit %d, %q (%v)", code, stdout, err)
	}
	if r := rl.Ranges[1]; len(r.Replicas) != 3 || r.Replicas[0].Role != "voter" || r.Replicas[0].Node == "" || r.LeaderName == "" || r.Keys != 1 {
		t.Errorf("ranges -w json: data range %v, want 3 named voters, a leader's name and 1 key", r)
	}

	// range split: twice at the same key (the second changes nothing),
	// then the ranges list both sides, and the key stays readable.
	split := regexp.MustCompile(`^split at "m": range 2 \["", "m"\) and range (\d+) \["m", ""\)\n$`)
	code, first, stderr := c.run(t, "", "range", "split", "m")
	if code != 0 || !split.MatchString(first) {
		t.Fatalf("range split m: exit %d, %q %q, want %v", code, first, stderr, split)
	}
	if code, again, _ := c.run(t, "", "range", "split", "m"); code != 0 || again != first {
		t.Fatalf("range split m again: exit %d, %q, want %q", code, again, first)
	}
	if code, _, stderr := c.run(t, "", "range", "split"); code == 0 || !strings.Contains(stderr, "KEY [KEY...]") {
		t.Errorf("range split with no key: exit %d, stderr %q, want a usage error", code, stderr)
	}
	if code, _, stderr := c.run(t, "", "range", "split", "\x01synod/q"); code == 0 || !strings.Contains(stderr, "reserved") {
		t.Errorf("range split at a reserved key: exit %d, stderr %q, want it refused", code, stderr)
	}
	code, stdout, _ = c.run(t, "", "ranges", "-w", "json")
	if err := protojson.Unmarshal([]byte(stdout), &rl); code != 0 || err != nil || len(rl.Ranges) != 3 ||
		string(rl.Ranges[1].EndKey) != "m" || string(rl.Ranges[2].StartKey) != "m" || rl.Ranges[1].Generation != 2 {
		t.Fatalf("ranges -w json after the split: exit %d, %q (%v)", code, stdout, err)
	}
	c.want(t, "", "k\nv\n", "get", "k")
	c.want(t, "", "OK\n", "put", "x", "y")
	c.want(t, "", "k\nv\nx\ny\n", "get", "", "--from-key")
}

// waitRanges waits until every member, asked alone, answers `synod
// ranges` with the test's one put applied and a leader known.
func waitRanges(t *testing.T, c *testCluster, args []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, ep := range c.endpoints {
		for {
			code, stdout, _ := execute(t.Context(), "", append([]string{"--endpoints=" + ep}, append(args, "-w", "json")...)...)
			var rl synodpb.ListRangesResponse
			if code == 0 && protojson.Unmarshal([]byte(stdout), &rl) == nil && len(rl.Ranges) == 2 && rl.Ranges[1].Keys == 1 && rl.Ranges[1].LeaderName != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s on %s: not settled after 10s: %s", args, ep, stdout)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func sameSet(a, b []string) bool {
	return strings.Join(slices.Sorted(slices.Values(a)), ",") == strings.Join(slices.Sorted(slices.Values(b)), ",")
}
