package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/synod-io/synod/bench/internal/member"
)

// TestGatewayMatchesEtcd sends the same JSON requests to etcd's gRPC gateway
// (an embedded etcd) and to Synod's (a synodmember process), one fresh
// single-member cluster each, and compares the answers: HTTP status,
// content type, and every JSON document field by field, names, types and
// values, except the values that differ between any two clusters (IDs,
// terms, tokens, sizes; see ignoredEverywhere and each step's ignore).
// Streams are compared line by line.
func TestGatewayMatchesEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and builds and starts a Synod member")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	etcdBase := startGatewayEtcd(t, filepath.Join(dir, "etcd"))
	synodBase := startGatewaySynod(t, ctx, filepath.Join(dir, "synod"))

	systems := []*gwSystem{
		{name: "etcd", base: etcdBase, vars: map[string]string{}},
		{name: "synod", base: synodBase, vars: map[string]string{}},
	}
	// Synod's revisions may have gaps (a delete of no key takes one):
	// revMap maps Synod's revisions to etcd's, learned from the headers of
	// the same step's answers, and Synod's revision fields are translated
	// before they are compared.
	revMap := map[string]string{}
	for _, st := range gatewaySteps() {
		var answers []gwAnswer
		for _, sys := range systems {
			a, err := sys.do(ctx, st)
			if err != nil {
				t.Fatalf("%s: %s: %v", st.name, sys.name, err)
			}
			answers = append(answers, a)
		}
		learnRevisions(revMap, answers[0], answers[1])
		answers[1] = translateRevisions(revMap, answers[1])
		diffs := compareAnswers(st, answers[0], answers[1])
		known := st.known
		diffs = slices.DeleteFunc(diffs, func(d string) bool {
			for _, k := range known {
				if strings.Contains(d, k) {
					t.Logf("%s: known difference: %s", st.name, d)
					return true
				}
			}
			return false
		})
		if os.Getenv("GATEWAY_SHOW") != "" {
			t.Logf("%s\n  etcd:  %d %s\n  synod: %d %s", st.name, answers[0].status, answers[0].lines, answers[1].status, answers[1].lines)
		}
		if len(diffs) > 0 {
			t.Errorf("%s: synod's answer differs from etcd's:\n  %s\n  etcd:  %d %q\n  synod: %d %q",
				st.name, strings.Join(diffs, "\n  "), answers[0].status, answers[0].lines, answers[1].status, answers[1].lines)
		}
	}
}

// revisionFields are the JSON fields that hold a revision.
var revisionFields = map[string]bool{"revision": true, "rev": true, "create_revision": true, "mod_revision": true, "compact_revision": true, "hash_revision": true}

// headerRevision returns the revision of the first header in doc (at its
// top or in a watch result), if any.
func headerRevision(doc string) (string, bool) {
	var m map[string]any
	if json.Unmarshal([]byte(doc), &m) != nil {
		return "", false
	}
	if r, ok := m["result"].(map[string]any); ok {
		m = r
	}
	h, ok := m["header"].(map[string]any)
	if !ok {
		return "", false
	}
	rev, ok := h["revision"].(string)
	return rev, ok
}

// learnRevisions records, for each document of a step, which of etcd's
// revisions Synod's header revision stands for.
func learnRevisions(revMap map[string]string, etcd, synod gwAnswer) {
	for i := range min(len(etcd.lines), len(synod.lines)) {
		e, eok := headerRevision(etcd.lines[i])
		s, sok := headerRevision(synod.lines[i])
		if eok && sok {
			if _, known := revMap[s]; !known {
				revMap[s] = e
			}
		}
	}
}

// translateRevisions rewrites the revision fields of an answer of Synod's
// into etcd's revisions, where revMap knows them.
func translateRevisions(revMap map[string]string, a gwAnswer) gwAnswer {
	var walk func(v any) any
	walk = func(v any) any {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && revisionFields[k] {
					if e, ok := revMap[s]; ok {
						v[k] = e
					}
					continue
				}
				v[k] = walk(x)
			}
		case []any:
			for i := range v {
				v[i] = walk(v[i])
			}
		}
		return v
	}
	out := a
	out.lines = slices.Clone(a.lines)
	for i, l := range out.lines {
		var doc any
		if json.Unmarshal([]byte(l), &doc) != nil {
			continue
		}
		if b, err := json.Marshal(walk(doc)); err == nil {
			out.lines[i] = string(b)
		}
	}
	return out
}

// gwStep is one request of the script.
type gwStep struct {
	name string
	path string
	// body may name variables captured by earlier steps: {{lease}}.
	body string
	// method is POST unless set.
	method string
	// token names the variable whose value goes in the Authorization header.
	token string
	// stream reads the answer line by line: lines of them (0: to the end),
	// running during (if set) once the first line arrived.
	stream bool
	lines  int
	during *gwStep
	// capture records fields of the answer's first document into variables:
	// variable name -> dotted path ("ID", "key").
	capture map[string]string
	// ignore lists field names whose values may differ in this step.
	ignore []string
	// known lists differences of Synod's services from etcd's that are
	// known and accepted (the gateway passes them through): a difference
	// that contains one of these is logged, not failed.
	known []string
}

// ignoredEverywhere are fields whose values differ between two clusters:
// cluster and member IDs, Raft terms, lease IDs (random), tokens.
var ignoredEverywhere = []string{"cluster_id", "member_id", "raft_term", "ID", "token"}

func b64(s string) string {
	var sb strings.Builder
	enc := json.NewEncoder(&sb)
	_ = enc.Encode([]byte(s))
	return strings.Trim(strings.TrimSpace(sb.String()), `"`)
}

// gatewaySteps are etcd's documented gateway examples (put, range, range
// with prefix, delete, txn, watch, lease grant/keep-alive/revoke,
// authenticate then a call with the token), then every other service, and
// the common errors.
func gatewaySteps() []*gwStep {
	foo, bar, w := b64("foo"), b64("bar"), b64("w")
	return []*gwStep{
		// KV, as in etcd's gateway documentation.
		{name: "put", path: "/v3/kv/put", body: `{"key":"` + foo + `","value":"` + bar + `"}`},
		{name: "range", path: "/v3/kv/range", body: `{"key":"` + foo + `"}`},
		{name: "put foo/a", path: "/v3/kv/put", body: `{"key":"` + b64("foo/a") + `","value":"` + b64("1") + `","prev_kv":true}`},
		{name: "put foo/b", path: "/v3/kv/put", body: `{"key":"` + b64("foo/b") + `","value":"` + b64("2") + `"}`},
		{name: "overwrite with prev_kv", path: "/v3/kv/put", body: `{"key":"` + b64("foo/b") + `","value":"` + b64("3") + `","prev_kv":true}`},
		{name: "range with prefix", path: "/v3/kv/range", body: `{"key":"` + b64("foo/") + `","range_end":"` + b64("foo0") + `"}`},
		{name: "range all keys, limit and sort", path: "/v3/kv/range", body: `{"key":"AA==","range_end":"AA==","limit":2,"sort_order":"DESCEND","sort_target":"KEY"}`},
		{name: "range keys only", path: "/v3/kv/range", body: `{"key":"AA==","range_end":"AA==","keys_only":true}`},
		{name: "range count only", path: "/v3/kv/range", body: `{"key":"AA==","range_end":"AA==","count_only":true}`},
		{name: "range at a negative revision (current)", path: "/v3/kv/range", body: `{"key":"` + foo + `","revision":-1}`},
		{name: "range at an old revision", path: "/v3/kv/range", body: `{"key":"` + b64("foo/b") + `","revision":"4","serializable":true}`},
		{name: "range of a missing key", path: "/v3/kv/range", body: `{"key":"` + b64("nothing") + `"}`},
		{name: "range lowerCamel names and unknown fields", path: "/v3/kv/range", body: `{"key":"` + b64("foo/") + `","rangeEnd":"` + b64("foo0") + `","bogus":1}`},
		{name: "range without a key", path: "/v3/kv/range", body: `{}`},
		{name: "range with an empty body", path: "/v3/kv/range", body: ``},
		{name: "range at a future revision", path: "/v3/kv/range", body: `{"key":"` + foo + `","revision":1000}`},
		{name: "txn, success branch", path: "/v3/kv/txn", body: `{"compare":[{"target":"VALUE","key":"` + foo + `","result":"EQUAL","value":"` + bar + `"}],` +
			`"success":[{"request_put":{"key":"` + foo + `","value":"` + b64("baz") + `"}},{"request_range":{"key":"` + foo + `"}}],` +
			`"failure":[{"request_range":{"key":"` + b64("foo/a") + `"}}]}`},
		{name: "txn, failure branch", path: "/v3/kv/txn", body: `{"compare":[{"target":"CREATE","key":"` + foo + `","result":"EQUAL","create_revision":"1"}],` +
			`"success":[{"request_put":{"key":"` + foo + `","value":"` + b64("x") + `"}}],` +
			`"failure":[{"request_range":{"key":"` + b64("foo/") + `","range_end":"` + b64("foo0") + `"}},{"request_delete_range":{"key":"` + b64("foo/a") + `","prev_kv":true}}]}`},
		{name: "txn, read-only", path: "/v3/kv/txn", body: `{"success":[{"requestRange":{"key":"` + foo + `"}}]}`},
		{name: "txn, nested", path: "/v3/kv/txn", body: `{"success":[{"request_txn":{"success":[{"request_range":{"key":"` + foo + `"}}]}}]}`},
		{name: "txn, duplicate key", path: "/v3/kv/txn", body: `{"success":[{"request_put":{"key":"` + foo + `"}},{"request_put":{"key":"` + foo + `"}}]}`},
		{name: "delete", path: "/v3/kv/deleterange", body: `{"key":"` + foo + `","prev_kv":true}`},
		{name: "delete a prefix", path: "/v3/kv/deleterange", body: `{"key":"` + b64("foo/") + `","range_end":"` + b64("foo0") + `"}`},
		{name: "delete a missing key", path: "/v3/kv/deleterange", body: `{"key":"` + foo + `"}`},

		// Watch: a put by another client appears as a line.
		{name: "watch", path: "/v3/watch", body: `{"create_request":{"key":"` + w + `"}}`, stream: true, lines: 2,
			during: &gwStep{name: "put under watch", path: "/v3/kv/put", body: `{"key":"` + w + `","value":"` + b64("1") + `"}`}},
		{name: "overwrite w", path: "/v3/kv/put", body: `{"key":"` + w + `","value":"` + b64("2") + `"}`},
		{name: "watch from history with prev_kv", path: "/v3/watch", body: `{"create_request":{"key":"` + w + `","start_revision":2,"prev_kv":true}}`, stream: true, lines: 2},
		{name: "watch a prefix, deletes only, two watchers", path: "/v3/watch",
			body: `{"create_request":{"key":"` + w + `","range_end":"` + b64("x") + `","filters":["NOPUT"]}} {"create_request":{"key":"` + b64("v") + `","watch_id":7}}`, stream: true, lines: 3,
			during: &gwStep{name: "delete under watch", path: "/v3/kv/deleterange", body: `{"key":"` + w + `"}`}},

		// Leases.
		{name: "lease grant", path: "/v3/lease/grant", body: `{"TTL":60}`, capture: map[string]string{"lease": "ID"}},
		{name: "put with a lease", path: "/v3/kv/put", body: `{"key":"` + b64("leased") + `","value":"` + bar + `","lease":"{{lease}}"}`},
		{name: "lease time to live", path: "/v3/lease/timetolive", body: `{"ID":"{{lease}}","keys":true}`, ignore: []string{"TTL"}},
		{name: "lease time to live (old path)", path: "/v3/kv/lease/timetolive", body: `{"ID":"{{lease}}"}`, ignore: []string{"TTL"}},
		{name: "lease leases", path: "/v3/lease/leases", body: `{}`},
		{name: "lease keep-alive", path: "/v3/lease/keepalive", body: `{"ID":"{{lease}}"}`, stream: true},
		{name: "lease keep-alive, two requests", path: "/v3/lease/keepalive", body: `{"ID":"{{lease}}"} {"ID":"{{lease}}"}`, stream: true},
		{name: "lease keep-alive, empty body", path: "/v3/lease/keepalive", body: ``, stream: true},
		{name: "lease revoke", path: "/v3/lease/revoke", body: `{"ID":"{{lease}}"}`},
		{name: "range of the revoked lease's key", path: "/v3/kv/range", body: `{"key":"` + b64("leased") + `"}`},
		{name: "lease revoke, not found", path: "/v3/kv/lease/revoke", body: `{"ID":"{{lease}}"}`},
		{name: "lease keep-alive, not found", path: "/v3/lease/keepalive", body: `{"ID":"{{lease}}"}`, stream: true},
		{name: "lease time to live, not found", path: "/v3/lease/timetolive", body: `{"ID":"{{lease}}"}`},
		{name: "put with a missing lease", path: "/v3/kv/put", body: `{"key":"` + foo + `","lease":"{{lease}}"}`},
		{name: "lease grant for the lock", path: "/v3/lease/grant", body: `{"TTL":60}`, capture: map[string]string{"lease": "ID"}},

		// Lock and election, at etcd's paths.
		{name: "lock", path: "/v3/lock/lock", body: `{"name":"` + b64("l") + `","lease":"{{lease}}"}`, capture: map[string]string{"lockkey": "key"}, ignore: []string{"key"}},
		{name: "unlock", path: "/v3/lock/unlock", body: `{"key":"{{lockkey}}"}`},
		{name: "campaign", path: "/v3/election/campaign", body: `{"name":"` + b64("e") + `","lease":"{{lease}}","value":"` + b64("v1") + `"}`,
			capture: map[string]string{"lname": "leader.name", "lkey": "leader.key", "lrev": "leader.rev", "llease": "leader.lease"}, ignore: []string{"key", "lease"}},
		{name: "leader", path: "/v3/election/leader", body: `{"name":"` + b64("e") + `"}`, ignore: []string{"key", "lease"}},
		{name: "proclaim", path: "/v3/election/proclaim", body: `{"leader":{"name":"{{lname}}","key":"{{lkey}}","rev":"{{lrev}}","lease":"{{llease}}"},"value":"` + b64("v2") + `"}`},
		{name: "observe", path: "/v3/election/observe", body: `{"name":"` + b64("e") + `"}`, stream: true, lines: 1, ignore: []string{"key", "lease"}},
		{name: "resign", path: "/v3/election/resign", body: `{"leader":{"name":"{{lname}}","key":"{{lkey}}","rev":"{{lrev}}","lease":"{{llease}}"}}`},
		// etcd's election service returns its errors as plain errors (gRPC
		// code Unknown); Synod's coord gives them codes (NotFound here).
		{name: "leader, none", path: "/v3/election/leader", body: `{"name":"` + b64("e") + `"}`,
			known: []string{"status: got 404, want 500", "line 0.code: got 5, want 2"}},

		// Compaction.
		{name: "compaction", path: "/v3/kv/compaction", body: `{"revision":"5","physical":true}`},
		{name: "range at a compacted revision", path: "/v3/kv/range", body: `{"key":"` + foo + `","revision":"3"}`},
		{name: "watch from a compacted revision", path: "/v3/watch", body: `{"create_request":{"key":"` + w + `","start_revision":2}}`, stream: true, lines: 2},

		// Cluster and maintenance.
		{name: "member list", path: "/v3/cluster/member/list", body: `{}`, ignore: []string{"peerURLs", "clientURLs"}},
		{name: "status", path: "/v3/maintenance/status", body: `{}`, ignore: []string{"version", "dbSize", "dbSizeInUse", "leader", "raftIndex", "raftTerm", "raftAppliedIndex", "storageVersion", "dbSizeQuota"}},
		{name: "alarm list", path: "/v3/maintenance/alarm", body: `{"action":"GET"}`},
		{name: "hash kv", path: "/v3/maintenance/hashkv", body: `{"revision":"0"}`, ignore: []string{"hash", "hash_revision"}},
		{name: "hash", path: "/v3/maintenance/hash", body: `{}`, ignore: []string{"hash"}},
		{name: "defragment", path: "/v3/maintenance/defragment", body: `{}`},

		// HTTP and JSON mistakes.
		{name: "GET instead of POST", path: "/v3/kv/range", method: http.MethodGet},
		{name: "unknown path under /v3", path: "/v3/kv/nothing", body: `{}`},
		{name: "/v3beta prefix", path: "/v3beta/kv/range", body: `{"key":"` + foo + `"}`},
		{name: "truncated JSON", path: "/v3/kv/range", body: `{"key":`},
		{name: "not an object", path: "/v3/kv/range", body: `[1]`},
		{name: "wrong type", path: "/v3/kv/put", body: `{"key":1}`},

		// Auth: authenticate, then calls with the token.
		{name: "add user root", path: "/v3/auth/user/add", body: `{"name":"root","password":"rootpw"}`},
		{name: "grant root its role", path: "/v3/auth/user/grant", body: `{"user":"root","role":"root"}`},
		{name: "add user bob", path: "/v3/auth/user/add", body: `{"name":"bob","password":"bobpw"}`},
		{name: "add role reader", path: "/v3/auth/role/add", body: `{"name":"reader"}`},
		{name: "grant reader a range", path: "/v3/auth/role/grant", body: `{"name":"reader","perm":{"permType":"READ","key":"` + b64("r/") + `","range_end":"` + b64("r0") + `"}}`},
		{name: "grant bob reader", path: "/v3/auth/user/grant", body: `{"user":"bob","role":"reader"}`},
		{name: "enable auth", path: "/v3/auth/enable", body: `{}`},
		{name: "authenticate", path: "/v3/auth/authenticate", body: `{"name":"root","password":"rootpw"}`, capture: map[string]string{"root": "token"}},
		{name: "authenticate with a wrong password", path: "/v3/auth/authenticate", body: `{"name":"root","password":"nope"}`},
		{name: "authenticate bob", path: "/v3/auth/authenticate", body: `{"name":"bob","password":"bobpw"}`, capture: map[string]string{"bob": "token"}},
		{name: "put with the token", path: "/v3/kv/put", body: `{"key":"` + b64("r/1") + `","value":"` + bar + `"}`, token: "root"},
		{name: "range with the token", path: "/v3/kv/range", body: `{"key":"` + b64("r/1") + `"}`, token: "root"},
		{name: "range without a token", path: "/v3/kv/range", body: `{"key":"` + b64("r/1") + `"}`},
		{name: "range with an invalid token", path: "/v3/kv/range", body: `{"key":"` + b64("r/1") + `"}`, token: "bogus"},
		{name: "bob reads his range", path: "/v3/kv/range", body: `{"key":"` + b64("r/1") + `"}`, token: "bob"},
		{name: "bob writes", path: "/v3/kv/put", body: `{"key":"` + b64("r/1") + `","value":"` + bar + `"}`, token: "bob"},
		{name: "bob watches outside his range", path: "/v3/watch", body: `{"create_request":{"key":"` + foo + `"}}`, token: "bob", stream: true, lines: 1,
			ignore: []string{"cancel_reason"}},
		// A Watch stream opened without a user is opened, and each watch it
		// asks for is cancelled.
		{name: "watch without a token", path: "/v3/watch", body: `{"create_request":{"key":"` + foo + `"}}`, stream: true, lines: 1},
		{name: "lease keep-alive without a token", path: "/v3/lease/keepalive", body: `{"ID":"1"}`, stream: true},
		{name: "auth status", path: "/v3/auth/status", body: `{}`},
		{name: "user get", path: "/v3/auth/user/get", body: `{"name":"bob"}`, token: "root"},
		{name: "user list", path: "/v3/auth/user/list", body: `{}`, token: "root"},
		{name: "role get", path: "/v3/auth/role/get", body: `{"role":"reader"}`, token: "root"},
		{name: "role get, not found", path: "/v3/auth/role/get", body: `{"role":"nobody"}`, token: "root"},
		{name: "disable auth", path: "/v3/auth/disable", body: `{}`, token: "root"},
	}
}

// gwSystem is one system under comparison, with the variables its answers
// gave.
type gwSystem struct {
	name string
	base string
	vars map[string]string
}

// gwAnswer is an answer: status, content type and its JSON documents (one
// per line for a stream).
type gwAnswer struct {
	status      int
	contentType string
	lines       []string
}

func (s *gwSystem) expand(v string) string {
	for k, val := range s.vars {
		v = strings.ReplaceAll(v, "{{"+k+"}}", val)
	}
	return v
}

func (s *gwSystem) do(ctx context.Context, st *gwStep) (gwAnswer, error) {
	method := st.method
	if method == "" {
		method = http.MethodPost
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.base+st.path, strings.NewReader(s.expand(st.body)))
	if err != nil {
		return gwAnswer{}, err
	}
	if st.token != "" {
		tok, ok := s.vars[st.token]
		if !ok {
			tok = st.token
		}
		req.Header.Set("Authorization", tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return gwAnswer{}, err
	}
	defer resp.Body.Close()
	a := gwAnswer{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type")}
	if !st.stream {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return gwAnswer{}, err
		}
		a.lines = []string{string(b)}
	} else {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for (st.lines == 0 || len(a.lines) < st.lines) && sc.Scan() {
			a.lines = append(a.lines, sc.Text())
			if len(a.lines) == 1 && st.during != nil {
				if _, err := s.do(ctx, st.during); err != nil {
					return gwAnswer{}, fmt.Errorf("%s: %w", st.during.name, err)
				}
			}
		}
		if err := sc.Err(); err != nil {
			return gwAnswer{}, fmt.Errorf("read stream: %w", err)
		}
	}
	if len(a.lines) > 0 && st.capture != nil {
		var doc map[string]any
		if err := json.Unmarshal([]byte(a.lines[0]), &doc); err != nil {
			return gwAnswer{}, fmt.Errorf("capture from %q: %w", a.lines[0], err)
		}
		for name, path := range st.capture {
			var v any = doc
			for _, f := range strings.Split(path, ".") {
				m, _ := v.(map[string]any)
				v = m[f]
			}
			str, ok := v.(string)
			if !ok {
				return gwAnswer{}, fmt.Errorf("capture %s: %s of %q is %v", name, path, a.lines[0], v)
			}
			s.vars[name] = str
		}
	}
	return a, nil
}

// compareAnswers lists how got (Synod's) differs from want (etcd's).
func compareAnswers(st *gwStep, want, got gwAnswer) []string {
	var diffs []string
	if got.status != want.status {
		diffs = append(diffs, fmt.Sprintf("status: got %d, want %d", got.status, want.status))
	}
	if got.contentType != want.contentType && !(strings.HasPrefix(got.contentType, "text/plain") && strings.HasPrefix(want.contentType, "text/plain")) {
		diffs = append(diffs, fmt.Sprintf("content type: got %q, want %q", got.contentType, want.contentType))
	}
	if len(got.lines) != len(want.lines) {
		return append(diffs, fmt.Sprintf("documents: got %d, want %d", len(got.lines), len(want.lines)))
	}
	ignore := append(slices.Clone(ignoredEverywhere), st.ignore...)
	for i := range want.lines {
		var w, g any
		werr := json.Unmarshal([]byte(want.lines[i]), &w)
		gerr := json.Unmarshal([]byte(got.lines[i]), &g)
		switch {
		case werr != nil && gerr != nil:
			if want.lines[i] != got.lines[i] {
				diffs = append(diffs, fmt.Sprintf("line %d: got %q, want %q", i, got.lines[i], want.lines[i]))
			}
		case werr != nil || gerr != nil:
			diffs = append(diffs, fmt.Sprintf("line %d: got %q, want %q", i, got.lines[i], want.lines[i]))
		default:
			diffs = append(diffs, compareJSON(fmt.Sprintf("line %d", i), w, g, ignore)...)
		}
	}
	return diffs
}

// compareJSON compares two JSON values: same object keys, same types, same
// values except under the ignored keys (whose types must still match).
func compareJSON(path string, want, got any, ignore []string) []string {
	if reflect.TypeOf(want) != reflect.TypeOf(got) {
		return []string{fmt.Sprintf("%s: got %T %v, want %T %v", path, got, got, want, want)}
	}
	switch w := want.(type) {
	case map[string]any:
		g := got.(map[string]any)
		var diffs []string
		keys := map[string]bool{}
		for k := range w {
			keys[k] = true
		}
		for k := range g {
			keys[k] = true
		}
		var sorted []string
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			wv, wok := w[k]
			gv, gok := g[k]
			switch {
			case !gok:
				diffs = append(diffs, fmt.Sprintf("%s.%s: missing, want %v", path, k, wv))
			case !wok:
				diffs = append(diffs, fmt.Sprintf("%s.%s: got %v, want no such field", path, k, gv))
			case slices.Contains(ignore, k):
				if reflect.TypeOf(wv) != reflect.TypeOf(gv) {
					diffs = append(diffs, fmt.Sprintf("%s.%s: got %T, want %T", path, k, gv, wv))
				}
			default:
				diffs = append(diffs, compareJSON(path+"."+k, wv, gv, ignore)...)
			}
		}
		return diffs
	case []any:
		g := got.([]any)
		if len(g) != len(w) {
			return []string{fmt.Sprintf("%s: got %d elements, want %d", path, len(g), len(w))}
		}
		var diffs []string
		for i := range w {
			diffs = append(diffs, compareJSON(fmt.Sprintf("%s[%d]", path, i), w[i], g[i], ignore)...)
		}
		return diffs
	case string:
		// protojson's messages have a no-break space after "proto:" in
		// some builds and a space in others.
		if nbsp := "\u00a0"; strings.ReplaceAll(w, nbsp, " ") != strings.ReplaceAll(got.(string), nbsp, " ") {
			return []string{fmt.Sprintf("%s: got %q, want %q", path, got, want)}
		}
		return nil
	default:
		if !reflect.DeepEqual(want, got) {
			return []string{fmt.Sprintf("%s: got %v, want %v", path, got, want)}
		}
		return nil
	}
}

// startGatewayEtcd starts a single-member etcd in this process and returns
// its client URL.
func startGatewayEtcd(t *testing.T, dir string) string {
	t.Helper()
	addrs, err := freeAddrs(2)
	if err != nil {
		t.Fatal(err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "n1"
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(filepath.Dir(dir), "etcd.log")}
	client, _ := url.Parse("http://" + addrs[0])
	peer, _ := url.Parse("http://" + addrs[1])
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster = "n1=" + peer.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatalf("etcd failed: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("etcd not ready after a minute")
	}
	return client.String()
}

// startGatewaySynod builds and starts a single-member Synod and returns its
// client URL.
func startGatewaySynod(t *testing.T, ctx context.Context, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := buildSynodMember(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := freeAddrs(2)
	if err != nil {
		t.Fatal(err)
	}
	a := member.Args{Name: "n1", DataDir: filepath.Join(dir, "n1"), ClientAddr: addrs[0], PeerAddr: addrs[1], InitialCluster: "n1=" + addrs[1],
		PeerSecret: strings.Repeat("5e", 32)}
	m, err := startMember("synod", l, a, filepath.Join(dir, "n1.log"))
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{system: "synod", members: []*memberProc{m}}
	t.Cleanup(c.stop)
	if _, err := c.waitLeader(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	return "http://" + addrs[0]
}
