package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// consoleGet sends GET path to a node's client port with the given token
// (none if empty) and decodes the JSON answer into v.
func consoleGet(t *testing.T, n *testcluster.Node, path, token string, v any) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+n.ClientAddr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	client := &http.Client{Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: got %q, not JSON: %v", path, b, err)
		}
	}
	return resp.StatusCode, resp.Header
}

type overviewMember struct {
	ID           string   `json:"id"`
	Name         string   `json:"name"`
	Role         string   `json:"role"`
	Healthy      bool     `json:"healthy"`
	Answered     bool     `json:"answered"`
	SynodVersion string   `json:"synod_version"`
	Errors       []string `json:"errors"`
	RaftIndex    uint64   `json:"raft_index"`
	Lag          int64    `json:"lag"`
}

type overview struct {
	Leader  string           `json:"leader"`
	Members []overviewMember `json:"members"`
	Ranges  []struct {
		System bool     `json:"system"`
		Voters []string `json:"voters"`
	} `json:"ranges"`
	Health struct {
		Healthy, Total int
	} `json:"health"`
}

// TestConsoleOverview checks the web console's cluster overview: the node
// serving it asks every other member for its status over the peer
// connection, so the page shows each member's role, health, Raft indexes
// and version; a member that is down is shown as such without holding up
// the answer.
func TestConsoleOverview(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.Version = "1.2.3-n" + strconv.Itoa(i+1)
	}})
	leader := c.WaitLeader()
	n := c.Node(0)
	var ov overview
	// Every member publishes its client URL shortly after the start.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, _ := consoleGet(t, n, "/ui/api/overview", "", &ov); st != http.StatusOK {
			t.Fatalf("overview: got status %d, want 200", st)
		}
		if ov.Health.Healthy == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	if len(ov.Members) != 3 || ov.Health.Healthy != 3 || ov.Health.Total != 3 {
		t.Fatalf("got %d members, %d of %d healthy, want 3 of 3: %+v", len(ov.Members), ov.Health.Healthy, ov.Health.Total, ov)
	}
	leaderID := strconv.FormatUint(leader.Server().MemberID(), 16)
	if ov.Leader != leaderID {
		t.Errorf("got leader %s, want %s", ov.Leader, leaderID)
	}
	for i, m := range ov.Members {
		node := c.Node(i) // sorted by name: n1, n2, n3
		wantRole := "follower"
		if node == leader {
			wantRole = "leader"
		}
		if m.Name != node.Name || m.ID != strconv.FormatUint(node.Server().MemberID(), 16) || m.Role != wantRole ||
			!m.Answered || m.SynodVersion != "1.2.3-"+node.Name || m.RaftIndex == 0 || m.Lag < 0 {
			t.Errorf("member %d: got %+v, want %s, role %s, answered, version 1.2.3-%s, a Raft index and lag", i, m, node.Name, wantRole, node.Name)
		}
	}
	if len(ov.Ranges) != 2 || !ov.Ranges[0].System || ov.Ranges[1].System || len(ov.Ranges[0].Voters) != 3 || len(ov.Ranges[1].Voters) != 3 {
		t.Errorf("got ranges %+v, want the system range and a data range, each with 3 voters", ov.Ranges)
	}

	down := c.Node(2)
	if down == leader {
		down = c.Node(1)
	}
	down.Stop()
	start := time.Now()
	if st, _ := consoleGet(t, n, "/ui/api/overview", "", &ov); st != http.StatusOK {
		t.Fatalf("overview with a member down: got status %d, want 200", st)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("overview with a member down took %s, want at most 3s", took)
	}
	if ov.Health.Healthy != 2 {
		t.Errorf("with %s down: got %d healthy members, want 2", down.Name, ov.Health.Healthy)
	}
	for _, m := range ov.Members {
		if m.Name == down.Name && (m.Answered || m.Role != "unknown" || len(m.Errors) == 0) {
			t.Errorf("stopped member: got %+v, want not answered, role unknown, an error", m)
		}
	}
}

type consoleSession struct {
	AuthEnabled bool   `json:"auth_enabled"`
	User        string `json:"user"`
	Root        bool   `json:"root"`
	Read        []struct {
		Start []byte  `json:"start"`
		End   *[]byte `json:"end"`
	} `json:"read"`
	Write []json.RawMessage `json:"write"`
}

// TestConsoleAuth checks who may read the console's own endpoints, and
// what the session endpoint tells the console of a user's permissions.
func TestConsoleAuth(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 1, Configure: fastBcrypt})
	n := c.WaitLeader()
	cli := c.Client()
	ctx := testcluster.Context(t, time.Minute)

	var sess consoleSession
	if st, _ := consoleGet(t, n, "/ui/api/session", "", &sess); st != 200 || sess.AuthEnabled || !sess.Root {
		t.Fatalf("session with auth disabled: got %d %+v, want 200, root", st, sess)
	}
	if _, err := cli.RoleAdd(ctx, "reader"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.RoleGrantPermission(ctx, "reader", "app/", clientv3.GetPrefixRangeEnd("app/"), clientv3.PermissionType(clientv3.PermRead)); err != nil {
		t.Fatal(err)
	}
	// Two queues, of which reader may read one.
	qc := queuepb.NewQueueClient(cli.ActiveConnection())
	for _, q := range []string{"emails", "payroll"} {
		if _, err := qc.Push(ctx, &queuepb.PushRequest{Queue: q, Jobs: []*queuepb.JobSpec{{Payload: []byte("job")}}}); err != nil {
			t.Fatal(err)
		}
	}
	var queues struct{ Queues []string }
	if st, _ := consoleGet(t, n, "/ui/api/queues", "", &queues); st != 200 || strings.Join(queues.Queues, ",") != "emails,payroll" {
		t.Errorf("queues with auth disabled: got %d %q, want 200, emails and payroll", st, queues.Queues)
	}
	if _, err := cli.RoleGrantPermission(ctx, "reader", "synod/queues/emails", "", clientv3.PermissionType(clientv3.PermRead)); err != nil {
		t.Fatal(err)
	}
	for _, u := range []struct{ name, role string }{{"root", "root"}, {"reader", "reader"}} {
		if _, err := cli.UserAdd(ctx, u.name, u.name+"pw"); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.UserGrantRole(ctx, u.name, u.role); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	g := newGWClient(t, n)
	token := func(user string) string {
		st, body := g.post("/v3/auth/authenticate", `{"name":"`+user+`","password":"`+user+`pw"}`)
		if st != 200 {
			t.Fatalf("authenticate %s: got %d %s", user, st, body)
		}
		return field(t, body, "token")
	}
	readerTok, rootTok := token("reader"), token("root")

	for _, tc := range []struct {
		what, path, token string
		want              int
	}{
		{"session without a login", "/ui/api/session", "", 200},
		{"session with a bad token", "/ui/api/session", "bogus", 401},
		{"metrics without a login", "/ui/api/metrics", "", 400},
		{"metrics with a bad token", "/ui/api/metrics", "bogus", 401},
		{"metrics of a user", "/ui/api/metrics", readerTok, 200},
		{"queues without a login", "/ui/api/queues", "", 400},
		{"queues with a bad token", "/ui/api/queues", "bogus", 401},
		{"overview without a login (as MemberList and Status)", "/ui/api/overview", "", 200},
		{"unknown endpoint", "/ui/api/nothing", rootTok, 404},
	} {
		if st, _ := consoleGet(t, n, tc.path, tc.token, nil); st != tc.want {
			t.Errorf("%s: got status %d, want %d", tc.what, st, tc.want)
		}
	}

	sess = consoleSession{}
	consoleGet(t, n, "/ui/api/session", "", &sess)
	if !sess.AuthEnabled || sess.User != "" {
		t.Errorf("session without a login: got %+v, want auth enabled, no user", sess)
	}
	sess = consoleSession{}
	consoleGet(t, n, "/ui/api/session", readerTok, &sess)
	if sess.User != "reader" || sess.Root || len(sess.Read) != 2 || string(sess.Read[0].Start) != "app/" ||
		sess.Read[0].End == nil || string(*sess.Read[0].End) != "app0" ||
		string(sess.Read[1].Start) != "synod/queues/emails" || sess.Read[1].End == nil || string(*sess.Read[1].End) != "synod/queues/emails\x00" ||
		len(sess.Write) != 0 {
		t.Errorf("reader's session: got %+v, want reader, not root, read [app/, app0) and synod/queues/emails, no write", sess)
	}
	sess = consoleSession{}
	consoleGet(t, n, "/ui/api/session", rootTok, &sess)
	if sess.User != "root" || !sess.Root {
		t.Errorf("root's session: got %+v, want root", sess)
	}
	// The queues a user may read (read on synod/queues/<name>), as the
	// queue service decides Stats and List; every queue for root.
	for _, tc := range []struct{ user, token, want string }{{"reader", readerTok, "emails"}, {"root", rootTok, "emails,payroll"}} {
		queues.Queues = nil
		if st, _ := consoleGet(t, n, "/ui/api/queues", tc.token, &queues); st != 200 || strings.Join(queues.Queues, ",") != tc.want {
			t.Errorf("queues of %s: got %d %q, want 200, %s", tc.user, st, queues.Queues, tc.want)
		}
	}
}

// TestConsoleServing checks how the console's files and endpoints are
// served: embedded files with a Content-Security-Policy that allows no
// inline script nor framing, revalidation by ETag, GET only, and the root
// path pointing a browser at the console.
func TestConsoleServing(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 1})
	n := c.WaitLeader()
	st, h := consoleGet(t, n, "/", "", nil)
	if st != http.StatusFound || h.Get("Location") != "/ui/" {
		t.Errorf("GET /: got %d to %q, want 302 to /ui/", st, h.Get("Location"))
	}
	for _, p := range []string{"/ui/", "/ui/js/app.js", "/ui/css/console.css", "/ui/api/session"} {
		st, h := consoleGet(t, n, p, "", nil)
		if st != 200 {
			t.Errorf("GET %s: got status %d, want 200", p, st)
			continue
		}
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"script-src 'self'", "frame-ancestors 'none'", "default-src 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: Content-Security-Policy %q lacks %q", p, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("GET %s: Content-Security-Policy %q allows inline or eval", p, csp)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: got X-Content-Type-Options %q, want nosniff", p, h.Get("X-Content-Type-Options"))
		}
	}
	if _, h := consoleGet(t, n, "/ui/js/app.js", "", nil); h.Get("Content-Type") != "text/javascript; charset=utf-8" || h.Get("ETag") == "" {
		t.Errorf("app.js: got Content-Type %q, ETag %q, want text/javascript and an ETag", h.Get("Content-Type"), h.Get("ETag"))
	} else {
		req, _ := http.NewRequest(http.MethodGet, "http://"+n.ClientAddr+"/ui/js/app.js", nil)
		req.Header.Set("If-None-Match", h.Get("ETag"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified {
			t.Errorf("app.js with its ETag: got %d, want 304", resp.StatusCode)
		}
	}
	if st, _ := consoleGet(t, n, "/ui/nothing.js", "", nil); st != http.StatusNotFound {
		t.Errorf("a file that is not there: got %d, want 404", st)
	}
	resp, err := http.Post("http://"+n.ClientAddr+"/ui/api/overview", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST to the overview: got %d, want 405", resp.StatusCode)
	}
}

// TestConsoleMetrics checks that the console's charts see the node's KV
// traffic, gRPC and gateway alike.
func TestConsoleMetrics(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 1})
	n := c.WaitLeader()
	cli := c.Client()
	ctx := testcluster.Context(t, time.Minute)
	type sample struct {
		Reads    float64  `json:"reads"`
		Writes   float64  `json:"writes"`
		WriteP50 *float64 `json:"write_p50"`
	}
	var m struct {
		IntervalMs int64    `json:"interval_ms"`
		Samples    []sample `json:"samples"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		if _, err := cli.Put(ctx, "k", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		if st, _ := consoleGet(t, n, "/ui/api/metrics", "", &m); st != 200 {
			t.Fatalf("metrics: got status %d, want 200", st)
		}
		var writes, reads bool
		for _, s := range m.Samples {
			writes = writes || (s.Writes > 0 && s.WriteP50 != nil && *s.WriteP50 > 0)
			reads = reads || s.Reads > 0
		}
		if writes && reads {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sample with writes and reads after 10s of traffic: got %+v", m)
		}
	}
	if m.IntervalMs != 1000 {
		t.Errorf("got interval %d ms, want 1000", m.IntervalMs)
	}
}
