package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/synod-io/synod/internal/certgen"
	"github.com/synod-io/synod/internal/gateway"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// gwClient sends JSON requests to a node's gateway, as curl does.
type gwClient struct {
	t      *testing.T
	base   string // http://host:port or https://host:port
	client *http.Client
	vars   map[string]string // $name -> value, for want documents
}

func newGWClient(t *testing.T, n *testcluster.Node) *gwClient {
	t.Helper()
	s := n.Server()
	return &gwClient{t: t, base: "http://" + n.ClientAddr, client: &http.Client{Timeout: 30 * time.Second}, vars: map[string]string{
		"$cid": strconv.FormatUint(s.ClusterID(), 10),
		"$mid": strconv.FormatUint(s.MemberID(), 10),
	}}
}

// term records the node's current Raft term as $term.
func (g *gwClient) term(n *testcluster.Node) {
	g.vars["$term"] = strconv.FormatUint(n.Server().Published().Term, 10)
}

// post sends body to path with the headers given as name, value pairs and
// returns the status and body.
func (g *gwClient) post(path, body string, headers ...string) (int, string) {
	g.t.Helper()
	req, err := http.NewRequest(http.MethodPost, g.base+path, strings.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := g.client.Do(req)
	if err != nil {
		g.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatalf("POST %s: read: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// expect checks an answer field by field: same status, and a JSON document
// equal to want, in which $names stand for the client's variables.
func (g *gwClient) expect(what string, gotStatus int, got string, wantStatus int, want string) {
	g.t.Helper()
	if gotStatus != wantStatus {
		g.t.Errorf("%s: got status %d (%s), want %d", what, gotStatus, got, wantStatus)
		return
	}
	g.match(what, got, want)
}

func (g *gwClient) match(what, got, want string) {
	g.t.Helper()
	for k, v := range g.vars {
		want = strings.ReplaceAll(want, k, v)
	}
	var gv, wv any
	if err := json.Unmarshal([]byte(got), &gv); err != nil {
		g.t.Errorf("%s: got %q, not JSON: %v", what, got, err)
		return
	}
	if err := json.Unmarshal([]byte(want), &wv); err != nil {
		g.t.Fatalf("%s: bad want %q: %v", what, want, err)
	}
	if !reflect.DeepEqual(gv, wv) {
		g.t.Errorf("%s:\ngot  %s\nwant %s", what, got, want)
	}
}

// field returns a top-level string field of a JSON document.
func field(t *testing.T, doc, name string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("%q: %v", doc, err)
	}
	s, ok := m[name].(string)
	if !ok {
		t.Fatalf("%q: no string field %s", doc, name)
	}
	return s
}

// stream opens a streaming call and returns its lines as they come.
func (g *gwClient) stream(ctx context.Context, path, body string, headers ...string) (*http.Response, <-chan string) {
	g.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.base+path, strings.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := (&http.Client{Transport: g.client.Transport}).Do(req)
	if err != nil {
		g.t.Fatalf("POST %s: %v", path, err)
	}
	g.t.Cleanup(func() { resp.Body.Close() })
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return resp, lines
}

func nextLine(t *testing.T, what string, lines <-chan string) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatalf("%s: the stream ended", what)
		}
		return l
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: no line after 20 s", what)
	}
	return ""
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestGatewayEtcdExamples sends the requests of etcd's gRPC gateway
// documentation (its curl examples) to a node's client port and checks
// the answers field by field: etcd's paths, snake_case names, 64-bit
// integers as strings, bytes in base64, zero fields left out, and etcd's
// errors. A watch sees, as a line, a put made by a gRPC client on the same
// port meanwhile.
func TestGatewayEtcdExamples(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 1})
	n := c.WaitLeader()
	g := newGWClient(t, n)
	g.term(n)
	hdr := func(rev int) string {
		return fmt.Sprintf(`{"cluster_id":"$cid","member_id":"$mid","revision":"%d","raft_term":"$term"}`, rev)
	}

	// curl -L http://localhost:2379/v3/kv/put -X POST -d '{"key": "Zm9v", "value": "YmFy"}'
	st, body := g.post("/v3/kv/put", `{"key": "Zm9v", "value": "YmFy"}`)
	g.expect("put", st, body, 200, `{"header":`+hdr(2)+`}`)
	// curl -L http://localhost:2379/v3/kv/range -X POST -d '{"key": "Zm9v"}'
	st, body = g.post("/v3/kv/range", `{"key": "Zm9v"}`)
	g.expect("range", st, body, 200, `{"header":`+hdr(2)+`,"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}`)
	// Range with a prefix: range_end is the prefix plus one.
	g.post("/v3/kv/put", `{"key":"`+b64("foo/a")+`","value":"`+b64("1")+`"}`)
	st, body = g.post("/v3/kv/range", `{"key":"`+b64("foo/")+`","range_end":"`+b64("foo0")+`","keys_only":true}`)
	g.expect("range with prefix", st, body, 200, `{"header":`+hdr(3)+`,"kvs":[{"key":"`+b64("foo/a")+`","create_revision":"3","mod_revision":"3","version":"1"}],"count":"1"}`)
	// A negative revision reads the current one.
	st, body = g.post("/v3/kv/range", `{"key":"Zm9v","revision":-1,"count_only":true}`)
	g.expect("range at revision -1", st, body, 200, `{"header":`+hdr(3)+`,"count":"1"}`)
	// curl -L http://localhost:2379/v3/kv/txn -X POST -d '{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"2"}],"success":[{"requestPut":{"key":"Zm9v","value":"YmFy"}}]}'
	st, body = g.post("/v3/kv/txn", `{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"2"}],"success":[{"requestPut":{"key":"Zm9v","value":"YmFy"}},{"requestRange":{"key":"Zm9v"}}]}`)
	// As etcd: a nested response's header holds only its revision.
	g.expect("txn", st, body, 200, `{"header":`+hdr(4)+`,"succeeded":true,"responses":[{"response_put":{"header":{"revision":"4"}}},`+
		`{"response_range":{"header":{"revision":"4"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"4","version":"2","value":"YmFy"}],"count":"1"}}]}`)
	st, body = g.post("/v3/kv/deleterange", `{"key":"`+b64("foo/a")+`","prev_kv":true}`)
	g.expect("delete", st, body, 200, `{"header":`+hdr(5)+`,"deleted":"1","prev_kvs":[{"key":"`+b64("foo/a")+`","create_revision":"3","mod_revision":"3","version":"1","value":"`+b64("1")+`"}]}`)

	// curl -N http://localhost:2379/v3/watch -X POST -d '{"create_request": {"key":"Zm9v"}}'
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, lines := g.stream(ctx, "/v3/watch", `{"create_request": {"key":"Zm9v","prev_kv":true}}`)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "application/json" {
		t.Fatalf("watch: got status %d, content type %q, want 200 application/json", resp.StatusCode, ct)
	}
	g.match("watch created", nextLine(t, "watch", lines), `{"result":{"header":`+hdr(5)+`,"created":true}}`)
	cli := c.Client(n) // gRPC, on the same port
	if _, err := cli.Put(testcluster.Context(t, 10*time.Second), "foo", "baz"); err != nil {
		t.Fatal(err)
	}
	g.match("watch event", nextLine(t, "watch", lines), `{"result":{"header":`+hdr(6)+`,"events":[{"kv":{"key":"Zm9v","create_revision":"2","mod_revision":"6","version":"3","value":"`+b64("baz")+`"},`+
		`"prev_kv":{"key":"Zm9v","create_revision":"2","mod_revision":"4","version":"2","value":"YmFy"}}]}}`)
	st, _ = g.post("/v3/kv/deleterange", `{"key":"Zm9v"}`)
	if st != 200 {
		t.Fatalf("delete: got status %d", st)
	}
	g.match("watch delete event", nextLine(t, "watch", lines), `{"result":{"header":`+hdr(7)+`,"events":[{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"7"},`+
		`"prev_kv":{"key":"Zm9v","create_revision":"2","mod_revision":"6","version":"3","value":"`+b64("baz")+`"}}]}}`)
	cancel()

	// curl -L http://localhost:2379/v3/lease/grant -X POST -d '{"TTL": 30, "ID": 0}'
	st, body = g.post("/v3/lease/grant", `{"TTL": 30, "ID": 0}`)
	if st != 200 {
		t.Fatalf("lease grant: got %d %s", st, body)
	}
	g.vars["$lease"] = field(t, body, "ID")
	g.expect("lease grant", st, body, 200, `{"header":`+hdr(7)+`,"ID":"$lease","TTL":"30"}`)
	// curl -L http://localhost:2379/v3/lease/keepalive -X POST -d '{"ID": ...}'
	resp, lines = g.stream(context.Background(), "/v3/lease/keepalive", `{"ID":"`+g.vars["$lease"]+`"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("keep-alive: got status %d", resp.StatusCode)
	}
	g.match("keep-alive", nextLine(t, "keep-alive", lines), `{"result":{"header":`+hdr(7)+`,"ID":"$lease","TTL":"30"}}`)
	if l, ok := <-lines; ok {
		t.Errorf("keep-alive: got %q after the answer, want the stream to end with the request body", l)
	}
	st, body = g.post("/v3/lease/timetolive", `{"ID":"`+g.vars["$lease"]+`","keys":true}`)
	if st != 200 || !strings.Contains(body, `"grantedTTL":"30"`) {
		t.Errorf("lease time to live: got %d %s, want grantedTTL 30", st, body)
	}
	// curl -L http://localhost:2379/v3/lease/revoke -X POST -d '{"ID": ...}'
	st, body = g.post("/v3/lease/revoke", `{"ID":"`+g.vars["$lease"]+`"}`)
	g.expect("lease revoke", st, body, 200, `{"header":`+hdr(7)+`}`)
	st, body = g.post("/v3/lease/revoke", `{"ID":"`+g.vars["$lease"]+`"}`)
	g.expect("lease revoke again", st, body, 404, `{"code":5,"message":"etcdserver: requested lease not found"}`)
	st, body = g.post("/v3/lease/timetolive", `{"ID":"`+g.vars["$lease"]+`"}`)
	g.expect("time to live of a revoked lease", st, body, 200, `{"header":`+hdr(7)+`,"ID":"$lease","TTL":"-1"}`)

	// Errors, as etcd's gateway gives them.
	st, body = g.post("/v3/kv/range", `{}`)
	g.expect("range without key", st, body, 400, `{"code":3,"message":"etcdserver: key is not provided"}`)
	st, body = g.post("/v3/kv/range", `{"key":"Zm9v","revision":100}`)
	g.expect("future revision", st, body, 400, `{"code":11,"message":"etcdserver: mvcc: required revision is a future revision"}`)
	st, body = g.post("/v3/kv/compaction", `{"revision":"5"}`)
	g.expect("compaction", st, body, 200, `{"header":`+hdr(7)+`}`)
	st, body = g.post("/v3/kv/range", `{"key":"Zm9v","revision":3}`)
	g.expect("compacted revision", st, body, 400, `{"code":11,"message":"etcdserver: mvcc: required revision has been compacted"}`)
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	_, lines = g.stream(ctx, "/v3/watch", `{"create_request":{"key":"Zm9v","start_revision":2}}`)
	g.match("watch from a compacted revision", nextLine(t, "compacted watch", lines), `{"result":{"header":`+hdr(7)+`,"created":true}}`)
	// As etcd, the cancellation's header has no revision.
	g.match("watch from a compacted revision", nextLine(t, "compacted watch", lines),
		`{"result":{"header":{"cluster_id":"$cid","member_id":"$mid","raft_term":"$term"},"canceled":true,"compact_revision":"5"}}`)
	cancel()
	st, body = g.post("/v3/kv/range", `{"key":`)
	g.expect("truncated JSON", st, body, 400, `{"code":3,"message":"unexpected EOF"}`)
	st, body = g.post("/v3/kv/range", `[1]`)
	g.expect("not an object", st, body, 400, `{"code":3,"message":"proto: syntax error (line 1:1): unexpected token ["}`)
	st, body = g.post("/v3/kv/nothing", `{}`)
	g.expect("unknown path", st, body, 404, `{"code":5,"message":"Not Found"}`)
	req, _ := http.NewRequest(http.MethodGet, g.base+"/v3/kv/range", nil)
	if resp, err := g.client.Do(req); err != nil {
		t.Fatal(err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		g.expect("GET", resp.StatusCode, string(b), 501, `{"code":12,"message":"Method Not Allowed"}`)
	}
	// The prefixes of etcd 3.3 and 3.2.
	for _, p := range []string{"/v3beta", "/v3alpha"} {
		st, body = g.post(p+"/kv/range", `{"key":"Zm9v"}`)
		g.expect(p, st, body, 200, `{"header":`+hdr(7)+`}`)
	}
}

// TestGatewayServices reaches the other services through the gateway:
// cluster, maintenance (whose answers have etcd's shape: Status's storage
// version, an alarm list's revision, defragment's empty answer), lock and
// election at etcd's paths, Synod's groups, and the request size limits.
func TestGatewayServices(t *testing.T) {
	busyParallel(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 1})
	n := c.WaitLeader()
	g := newGWClient(t, n)
	g.term(n)

	// The member publishes its client URL once it runs.
	var st int
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if st, body = g.post("/v3/cluster/member/list", `{}`); strings.Contains(body, "clientURLs") {
			break
		}
	}
	g.expect("member list", st, body, 200, `{"header":{"cluster_id":"$cid","member_id":"$mid","raft_term":"$term"},`+
		`"members":[{"ID":"$mid","name":"n1","peerURLs":["http://`+n.PeerAddr+`"],"clientURLs":["http://`+n.ClientAddr+`"]}]}`)
	st, body = g.post("/v3/maintenance/status", `{}`)
	if st != 200 || !strings.Contains(body, `"version":"3.6.0"`) || !strings.Contains(body, `"storageVersion":"3.6.0"`) || !strings.Contains(body, `"downgradeInfo":{}`) {
		t.Errorf("status: got %d %s, want version, storageVersion 3.6.0 and downgradeInfo", st, body)
	}
	st, body = g.post("/v3/maintenance/alarm", `{"action":"GET"}`)
	g.expect("alarm list", st, body, 200, `{"header":{"cluster_id":"$cid","member_id":"$mid","revision":"1","raft_term":"$term"}}`)
	st, body = g.post("/v3/maintenance/defragment", `{}`)
	g.expect("defragment", st, body, 200, `{}`)
	st, body = g.post("/v3/maintenance/downgrade", `{}`)
	g.expect("downgrade", st, body, 501, `{"code":12,"message":"method Downgrade not implemented"}`)

	// Lock and election.
	st, body = g.post("/v3/lease/grant", `{"TTL":60}`)
	lease := field(t, body, "ID")
	st, body = g.post("/v3/lock/lock", `{"name":"`+b64("l")+`","lease":"`+lease+`"}`)
	if st != 200 || !strings.Contains(body, `"key":"`) {
		t.Fatalf("lock: got %d %s", st, body)
	}
	key := field(t, body, "key")
	if k, _ := base64.StdEncoding.DecodeString(key); !strings.HasPrefix(string(k), "l/") {
		t.Errorf("lock key: got %q, want l/<lease>", k)
	}
	st, body = g.post("/v3/lock/unlock", `{"key":"`+key+`"}`)
	if st != 200 {
		t.Errorf("unlock: got %d %s", st, body)
	}
	st, body = g.post("/v3/election/campaign", `{"name":"`+b64("e")+`","lease":"`+lease+`","value":"`+b64("v1")+`"}`)
	if st != 200 || !strings.Contains(body, `"leader":{"name":"`+b64("e")+`"`) {
		t.Fatalf("campaign: got %d %s", st, body)
	}
	st, body = g.post("/v3/election/leader", `{"name":"`+b64("e")+`"}`)
	if st != 200 || !strings.Contains(body, `"value":"`+b64("v1")+`"`) {
		t.Errorf("leader: got %d %s", st, body)
	}

	// Groups, under /v3/synod/groups/.
	st, body = g.post("/v3/synod/groups/join", `{"group":"g","member":"m1","metadata":"`+b64("meta")+`","lease":"`+lease+`"}`)
	if st != 200 {
		t.Fatalf("groups join: got %d %s", st, body)
	}
	st, body = g.post("/v3/synod/groups/list", `{"group":"g"}`)
	if st != 200 || !strings.Contains(body, `"id":"m1"`) || !strings.Contains(body, `"metadata":"`+b64("meta")+`"`) {
		t.Errorf("groups list: got %d %s, want member m1", st, body)
	}

	// Limits as on gRPC: etcd's error past --max-request-bytes, gRPC's
	// ResourceExhausted past the server's receive limit.
	big := strings.Repeat("x", 1600*1024)
	st, body = g.post("/v3/kv/put", `{"key":"`+b64("k")+`","value":"`+b64(big)+`"}`)
	g.expect("put over max-request-bytes", st, body, 400, `{"code":3,"message":"etcdserver: request is too large"}`)
	huge := strings.Repeat("x", 2100*1024)
	st, body = g.post("/v3/kv/put", `{"key":"`+b64("k")+`","value":"`+b64(huge)+`"}`)
	if st != 429 || !strings.Contains(body, `"code":8,"message":"grpc: received message larger than max (`) {
		t.Errorf("put over the receive limit: got %d %s, want 429 ResourceExhausted", st, body)
	}
}

// TestGatewayAuth authenticates through the gateway and calls with the
// token in the Authorization header, as with etcd's gateway; calls without
// a token, with an invalid one or without permission get etcd's errors.
func TestGatewayAuth(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 1, Configure: func(_ int, cfg *server.Config) { cfg.BcryptCost = bcrypt.MinCost }})
	n := c.WaitLeader()
	g := newGWClient(t, n)
	for _, step := range []struct{ path, body string }{
		{"/v3/auth/user/add", `{"name":"root","password":"rootpw"}`},
		{"/v3/auth/user/grant", `{"user":"root","role":"root"}`},
		{"/v3/auth/user/add", `{"name":"bob","password":"bobpw"}`},
		{"/v3/auth/enable", `{}`},
	} {
		if st, body := g.post(step.path, step.body); st != 200 {
			t.Fatalf("%s: got %d %s", step.path, st, body)
		}
	}
	// curl -L http://localhost:2379/v3/auth/authenticate -X POST -d '{"name": "root", "password": "pass"}'
	st, body := g.post("/v3/auth/authenticate", `{"name": "root", "password": "rootpw"}`)
	if st != 200 {
		t.Fatalf("authenticate: got %d %s", st, body)
	}
	token := field(t, body, "token")
	// curl -L http://localhost:2379/v3/kv/put -H 'Authorization : <token>' -X POST -d '{"key": "Zm9v", "value": "YmFy"}'
	if st, body := g.post("/v3/kv/put", `{"key": "Zm9v", "value": "YmFy"}`, "Authorization", token); st != 200 {
		t.Fatalf("put with the token: got %d %s", st, body)
	}
	st, body = g.post("/v3/kv/range", `{"key": "Zm9v"}`, "Authorization", token)
	if st != 200 || !strings.Contains(body, `"value":"YmFy"`) {
		t.Errorf("range with the token: got %d %s", st, body)
	}
	// grpc-gateway's metadata headers carry the token too.
	if st, body := g.post("/v3/kv/range", `{"key": "Zm9v"}`, "Grpc-Metadata-Token", token); st != 200 {
		t.Errorf("range with the token as metadata: got %d %s", st, body)
	}
	st, body = g.post("/v3/kv/range", `{"key": "Zm9v"}`)
	g.expect("range without a token", st, body, 400, `{"code":3,"message":"etcdserver: user name is empty"}`)
	req, _ := http.NewRequest(http.MethodPost, g.base+"/v3/kv/range", strings.NewReader(`{"key":"Zm9v"}`))
	req.Header.Set("Authorization", "bogus")
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	g.expect("range with an invalid token", resp.StatusCode, string(b), 401, `{"code":16,"message":"etcdserver: invalid auth token"}`)
	if got := resp.Header.Get("WWW-Authenticate"); got != "etcdserver: invalid auth token" {
		t.Errorf("WWW-Authenticate: got %q, want etcd's message", got)
	}
	st, body = g.post("/v3/auth/authenticate", `{"name": "bob", "password": "bobpw"}`)
	bob := field(t, body, "token")
	st, body = g.post("/v3/kv/range", `{"key": "Zm9v"}`, "Authorization", bob)
	g.expect("range without permission", st, body, 403, `{"code":7,"message":"etcdserver: permission denied"}`)
	st, body = g.post("/v3/auth/authenticate", `{"name": "root", "password": "nope"}`)
	g.expect("wrong password", st, body, 400, `{"code":3,"message":"etcdserver: authentication failed, invalid user ID or password"}`)
	// A refused watch, as etcd answers it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, lines := g.stream(ctx, "/v3/watch", `{"create_request":{"key":"Zm9v"}}`, "Authorization", bob)
	g.term(n)
	g.match("refused watch", nextLine(t, "refused watch", lines), `{"result":{"header":{"cluster_id":"$cid","member_id":"$mid","revision":"2","raft_term":"$term"},`+
		`"watch_id":"-1","created":true,"canceled":true,"cancel_reason":"rpc error: code = PermissionDenied desc = etcdserver: permission denied"}}`)
}

// TestGatewayOverTLS serves the gateway over the client port's TLS with
// client certificates required: HTTP/2 (as curl negotiates over TLS) and
// HTTP/1.1 work with a certificate, a client without one is refused, a
// gRPC client works on the same port, and with auth enabled a certificate's
// CN is the user, as on gRPC.
func TestGatewayOverTLS(t *testing.T) {
	t.Parallel()
	ca := newPKI(t, "ca")
	serverFiles := ca.issue("server", certgen.ServerUsage)
	c := testcluster.New(t, testcluster.Options{Nodes: 1, Configure: func(_ int, cfg *server.Config) {
		cfg.ClientTLS, cfg.ClientCertAuth = serverFiles, true
		cfg.BcryptCost = bcrypt.MinCost
	}, ClientTLS: &tls.Config{RootCAs: ca.pool(), Certificates: keyPair(t, ca.issue("root", certgen.ClientUsage))}})
	n := c.WaitLeader()
	rootCert := keyPair(t, ca.issue("root", certgen.ClientUsage))
	h2 := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.pool(), Certificates: rootCert}, ForceAttemptHTTP2: true}}
	h1 := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.pool(), Certificates: rootCert, NextProtos: []string{"http/1.1"}},
		TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	base := "https://" + n.ClientAddr
	for _, tc := range []struct {
		name   string
		client *http.Client
		proto  string
	}{{"http/2", h2, "HTTP/2.0"}, {"http/1.1", h1, "HTTP/1.1"}} {
		resp, err := tc.client.Post(base+"/v3/kv/put", "application/json", strings.NewReader(`{"key":"Zm9v","value":"YmFy"}`))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Proto != tc.proto || !strings.Contains(string(b), `"header":{"cluster_id"`) {
			t.Errorf("%s: got %s %d %s, want %s 200 and a header", tc.name, resp.Proto, resp.StatusCode, b, tc.proto)
		}
	}
	// Without a client certificate, the TLS handshake is refused.
	noCert := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool()}}}
	if resp, err := noCert.Post(base+"/v3/kv/range", "application/json", strings.NewReader(`{"key":"Zm9v"}`)); err == nil {
		resp.Body.Close()
		t.Errorf("without a client certificate: got status %d, want the handshake refused", resp.StatusCode)
	}
	// Plaintext HTTP gets nowhere.
	if resp, err := (&http.Client{Timeout: 10 * time.Second}).Post("http://"+n.ClientAddr+"/v3/kv/range", "application/json", strings.NewReader(`{"key":"Zm9v"}`)); err == nil {
		resp.Body.Close()
		t.Errorf("plaintext: got status %d, want the connection refused", resp.StatusCode)
	}

	// gRPC on the same port, at the same time as a watch over HTTP/2.
	cli := c.Client(n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g := &gwClient{t: t, base: base, client: h2}
	resp, lines := g.stream(ctx, "/v3/watch", `{"create_request":{"key":"Zm9v"}}`)
	if resp.Proto != "HTTP/2.0" {
		t.Errorf("watch: got %s, want HTTP/2.0", resp.Proto)
	}
	nextLine(t, "watch created", lines)
	if _, err := cli.Put(testcluster.Context(t, 10*time.Second), "foo", "over grpc"); err != nil {
		t.Fatalf("grpc put: %v", err)
	}
	if l := nextLine(t, "watch event", lines); !strings.Contains(l, `"value":"`+b64("over grpc")+`"`) {
		t.Errorf("watch event: got %s", l)
	}

	// With auth on, the certificate's CN (root) is the user of a request
	// without a token, over the gateway as over gRPC.
	for _, step := range []struct{ path, body string }{
		{"/v3/auth/user/add", `{"name":"root","password":"rootpw"}`},
		{"/v3/auth/user/grant", `{"user":"root","role":"root"}`},
		{"/v3/auth/enable", `{}`},
	} {
		resp, err := h2.Post(base+step.path, "application/json", strings.NewReader(step.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: got %d", step.path, resp.StatusCode)
		}
	}
	resp, err := h2.Post(base+"/v3/kv/range", "application/json", strings.NewReader(`{"key":"Zm9v"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"value":"`+b64("over grpc")+`"`) {
		t.Errorf("range as the certificate's user: got %d %s", resp.StatusCode, b)
	}
	if _, err := cli.Get(testcluster.Context(t, 10*time.Second), "foo"); err != nil {
		t.Errorf("grpc get as the certificate's user: %v", err)
	}
}

// notOnGateway are the services of the client port that have no JSON
// paths, and why. Every other service's every method must have one, but
// those etcd's gateway leaves out (see etcdPaths).
var notOnGateway = map[string]string{
	// etcd's gateway has none either; HTTP clients have /health and
	// /readyz.
	"grpc.health.v1.Health": "gRPC health checking",
	// A joining member's bootstrap call (synod join), not a client API.
	"synod.cluster.v1.PeerSecret": "the peer secret for a joining member",
}

// etcdPaths returns the POST paths of a method's google.api.http
// annotation (etcd's rpc.proto has one on every method its gateway serves)
// and whether its service has annotations at all.
func etcdPaths(t *testing.T, service, method string) (paths []string, annotated bool) {
	t.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		t.Fatalf("no generated descriptor of service %s: %v", service, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		t.Fatalf("%s is a %T, not a service", service, d)
	}
	ruleOf := func(m protoreflect.MethodDescriptor) *annotations.HttpRule {
		r, _ := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
		return r
	}
	for i := range sd.Methods().Len() {
		if ruleOf(sd.Methods().Get(i)) != nil {
			annotated = true
		}
	}
	md := sd.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		t.Fatalf("service %s has no method %s in its descriptor", service, method)
	}
	if r := ruleOf(md); r != nil {
		for _, b := range append([]*annotations.HttpRule{r}, r.AdditionalBindings...) {
			if p := b.GetPost(); p != "" {
				paths = append(paths, p)
			}
		}
	}
	return paths, annotated
}

// TestGatewayRoutesEveryMethod checks the gateway's paths against the
// services a node registers on its client port (as its gRPC server lists
// them, with their generated descriptors): every method of every service
// has a path (a new RPC without one fails here), etcd's methods at the
// paths of etcd's own annotations, each path reaches its method (a body
// that is not a request gets the method's decoding error, not "Not Found"
// nor "unknown method"), and no path names a method the node does not
// serve.
func TestGatewayRoutesEveryMethod(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 1})
	n := c.WaitLeader()
	g := newGWClient(t, n)
	services := n.Server().ClientServices()
	routes := gateway.Routes()
	paths := map[string][]string{} // by method
	for p, m := range routes {
		paths[m] = append(paths[m], p)
	}
	for name := range notOnGateway {
		if _, ok := services[name]; !ok {
			t.Errorf("notOnGateway lists %s, which the node does not register: remove it", name)
		}
	}
	served := map[string]bool{}
	checked := 0
	for name, info := range services {
		for _, m := range info.Methods {
			full := "/" + name + "/" + m.Name
			served[full] = true
			if _, skip := notOnGateway[name]; skip {
				continue
			}
			ps := paths[full]
			slices.Sort(ps)
			want, annotated := etcdPaths(t, name, m.Name)
			slices.Sort(want)
			switch {
			case len(want) > 0:
				if !slices.Equal(ps, want) {
					t.Errorf("%s: got paths %q, want etcd's %q", full, ps, want)
				}
			case annotated:
				// A method etcd's gateway leaves out (KV.RangeStream).
				if len(ps) > 0 {
					t.Errorf("%s: got paths %q, want none: etcd's gateway has none", full, ps)
				}
				t.Logf("%s: gRPC only, as in etcd", full)
				continue
			case len(ps) == 0:
				t.Errorf("%s has no gateway path (internal/gateway/routes.go)", full)
				continue
			}
			// Every path gets to the method's request: a JSON array
			// fails its decoding there, before anything runs.
			decodeErr := `{"code":3,"message":"proto: syntax error (line 1:1): unexpected token ["}`
			if m.IsClientStream || m.IsServerStream {
				decodeErr = `{"error":` + decodeErr + `}`
			}
			for _, p := range ps {
				st, body := g.post(p, `[1]`)
				g.expect(p+" ("+full+")", st, body, 400, decodeErr)
				checked++
			}
		}
	}
	for p, m := range routes {
		if !served[m] {
			t.Errorf("path %s calls %s, which the node does not serve", p, m)
		}
	}
	if checked != len(routes) {
		t.Errorf("reached %d paths through the node's methods, want every one of the gateway's %d", checked, len(routes))
	}
	t.Logf("%d services, %d paths", len(services)-len(notOnGateway), checked)
}

// TestGatewayLimits defines a limit, takes from it and reads it back
// through the gateway's /v3/synod/limits/ paths: the JSON of the Limits
// service (snake_case names, 64-bit integers as strings, keys in base64,
// defaults filled in, zero fields left out) and its errors, as over gRPC.
func TestGatewayLimits(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 1})
	n := c.WaitLeader()
	g := newGWClient(t, n)
	g.term(n)
	hdr := func(rev int) string {
		return fmt.Sprintf(`{"cluster_id":"$cid","member_id":"$mid","revision":"%d","raft_term":"$term"}`, rev)
	}
	// Two tokens now, then one an hour. Numbers or strings, either name.
	st, body := g.post("/v3/synod/limits/set", `{"limit":{"name":"api","limit":1,"periodMs":"3600000","burst":"2"}}`)
	// As stored: the defaults (a 2 s timeout, a 5% local share) filled in.
	def := `{"name":"api","limit":"1","period_ms":"3600000","burst":"2","timeout_ms":"2000","local_share_percent":5,"revision":"2"}`
	g.expect("set", st, body, 200, `{"header":`+hdr(2)+`,"limit":`+def+`,"created":true}`)
	st, body = g.post("/v3/synod/limits/get", `{"name":"api"}`)
	g.expect("get", st, body, 200, `{"header":`+hdr(2)+`,"limit":`+def+`}`)
	st, body = g.post("/v3/synod/limits/list", `{}`)
	g.expect("list", st, body, 200, `{"header":`+hdr(2)+`,"limits":[`+def+`]}`)

	// The whole burst at once: allowed, nothing remaining (left out), full
	// again in two hours.
	st, body = g.post("/v3/synod/limits/take", `{"items":[{"limit":"api","key":"`+b64("tenant-1")+`","cost":"2"}]}`)
	g.expect("take the burst", st, body, 200, `{"header":`+hdr(2)+`,"allowed":true,"decisions":[{"allowed":true,"reset_after_ms":"7200000","limit":"2"}]}`)
	// One more: refused, to retry in the hour a token takes to come back.
	st, body = g.post("/v3/synod/limits/take", `{"items":[{"limit":"api","key":"`+b64("tenant-1")+`"}]}`)
	if st != 200 {
		t.Fatalf("take over the burst: got status %d (%s), want 200", st, body)
	}
	var refused struct {
		Allowed   *bool `json:"allowed"`
		Decisions []struct {
			Allowed      *bool  `json:"allowed"`
			RetryAfterMs string `json:"retry_after_ms"`
			ResetAfterMs string `json:"reset_after_ms"`
			Limit        string `json:"limit"`
		} `json:"decisions"`
	}
	g.unmarshal(body, &refused)
	if refused.Allowed != nil || len(refused.Decisions) != 1 {
		t.Fatalf("take over the burst: got %s, want allowed left out (false) and one decision", body)
	}
	d := refused.Decisions[0]
	retry, _ := strconv.ParseInt(d.RetryAfterMs, 10, 64)
	reset, _ := strconv.ParseInt(d.ResetAfterMs, 10, 64)
	if d.Allowed != nil || d.Limit != "2" || retry < 3_599_000 || retry > 3_600_000 || reset < 7_199_000 || reset > 7_200_000 {
		t.Errorf("take over the burst: got decision %s, want refused, retry_after_ms about an hour (as a string), reset_after_ms about two, limit \"2\"", body)
	}
	// Another key has its own burst; a peek takes nothing.
	st, body = g.post("/v3/synod/limits/take", `{"items":[{"limit":"api","key":"`+b64("tenant-2")+`","cost":1}],"peek":true}`)
	g.expect("peek", st, body, 200, `{"header":`+hdr(2)+`,"allowed":true,"decisions":[{"allowed":true,"remaining":"1","reset_after_ms":"3600000","limit":"2"}]}`)

	// Errors, as over gRPC.
	st, body = g.post("/v3/synod/limits/take", `{"items":[{"limit":"api","key":"`+b64("tenant-2")+`","cost":3}]}`)
	g.expect("cost above the burst", st, body, 400, `{"code":3,"message":"synod: cost 3 of limit \"api\" is outside 0..2 (its capacity)"}`)
	st, body = g.post("/v3/synod/limits/take", `{"items":[{"limit":"nope","key":"`+b64("k")+`"}]}`)
	g.expect("take from a missing limit", st, body, 404, `{"code":5,"message":"limit \"nope\" not found"}`)
	st, body = g.post("/v3/synod/limits/get", `{"name":"nope"}`)
	g.expect("get of a missing limit", st, body, 404, `{"code":5,"message":"limit \"nope\" not found"}`)
	st, body = g.post("/v3/synod/limits/set", `{"limit":{"name":"bad name","limit":1,"period_ms":1000}}`)
	if st != 400 || !strings.Contains(body, `"code":3`) {
		t.Errorf("set of an invalid name: got %d %s, want 400 InvalidArgument", st, body)
	}
}

// TestGatewayRangesList lists a node's ranges through the gateway's
// /v3/synod/ranges/list: the system range, then the data ranges in key
// order with their spans in base64, replicas, leader and counts.
func TestGatewayRangesList(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Nodes: 1, Configure: splitAt("g")})
	n := c.WaitLeader()
	g := newGWClient(t, n)
	revs := map[string]string{} // the revision of the last write of each data range
	for _, k := range []string{"a", "h"} {
		st, body := g.post("/v3/kv/put", `{"key":"`+b64(k)+`","value":"`+b64("v")+`"}`)
		if st != 200 {
			t.Fatalf("put %s: got %d %s", k, st, body)
		}
		var put struct {
			Header struct {
				Revision string `json:"revision"`
			} `json:"header"`
		}
		g.unmarshal(body, &put)
		revs[k] = put.Header.Revision
	}
	type rangeInfo struct {
		ID           string `json:"id"`
		System       bool   `json:"system"`
		StartKey     string `json:"start_key"`
		EndKey       string `json:"end_key"`
		Generation   string `json:"generation"`
		Leader       string `json:"leader"`
		LeaderName   string `json:"leader_name"`
		RaftTerm     string `json:"raft_term"`
		Voters       []string
		Learners     []string
		AppliedIndex string `json:"applied_index"`
		Revision     string `json:"revision"`
		Keys         string `json:"keys"`
		SizeBytes    string `json:"size_bytes"`
		Replicas     []map[string]string
	}
	var list struct {
		ClusterID string      `json:"cluster_id"`
		MemberID  string      `json:"member_id"`
		Ranges    []rangeInfo `json:"ranges"`
	}
	// The ranges' published state follows the writes just after they
	// are answered.
	var st int
	var body string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, body = g.post("/v3/synod/ranges/list", `{}`)
		if st != 200 {
			t.Fatalf("ranges list: got status %d (%s), want 200", st, body)
		}
		list.Ranges = nil
		g.unmarshal(body, &list)
		if len(list.Ranges) == 3 && list.Ranges[1].Revision == revs["a"] && list.Ranges[2].Revision == revs["h"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ranges list: got %s, want three ranges, the data ranges at revisions %s and %s", body, revs["a"], revs["h"])
		}
	}
	if list.ClusterID != g.vars["$cid"] || list.MemberID != g.vars["$mid"] {
		t.Errorf("ranges list: got cluster %q member %q, want %s %s (64-bit IDs as strings)", list.ClusterID, list.MemberID, g.vars["$cid"], g.vars["$mid"])
	}
	mid := g.vars["$mid"]
	for i, want := range []struct{ id, start, end string }{
		{"1", "", ""}, {"2", "", b64("g")}, {"3", b64("g"), ""},
	} {
		r := list.Ranges[i]
		if r.ID != want.id || r.System != (i == 0) || r.StartKey != want.start || r.EndKey != want.end {
			t.Errorf("range %d: got id %q system %v span [%q, %q), want id %s system %v span [%q, %q)", i, r.ID, r.System, r.StartKey, r.EndKey, want.id, i == 0, want.start, want.end)
		}
		if r.Leader != mid || r.LeaderName != "n1" || !slices.Equal(r.Voters, []string{mid}) || r.Learners != nil {
			t.Errorf("range %s: got leader %q (%q), voters %q, learners %q; want %s (n1), voters [%s], no learners", r.ID, r.Leader, r.LeaderName, r.Voters, r.Learners, mid, mid)
		}
		if len(r.Replicas) != 1 || !maps.Equal(r.Replicas[0], map[string]string{"node": "n1", "id": mid, "role": "voter"}) {
			t.Errorf("range %s: got replicas %v, want n1 (%s), voter", r.ID, r.Replicas, mid)
		}
		for what, v := range map[string]string{"raft_term": r.RaftTerm, "applied_index": r.AppliedIndex} {
			if x, err := strconv.ParseUint(v, 10, 64); err != nil || x == 0 {
				t.Errorf("range %s: got %s %q, want a positive integer as a string", r.ID, what, v)
			}
		}
		if i == 0 {
			if r.Keys != "" || r.Revision != "" {
				t.Errorf("system range: got keys %q revision %q, want neither", r.Keys, r.Revision)
			}
			continue
		}
		if r.Keys != "1" {
			t.Errorf("range %s: got keys %q, want \"1\"", r.ID, r.Keys)
		}
	}
}
