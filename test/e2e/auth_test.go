package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAuthWithEtcdctl enables auth on a 3-node cluster with etcdctl, then
// checks users, roles and permissions with `etcdctl --user` and the synod
// CLI's --user.
func TestAuthWithEtcdctl(t *testing.T) {
	t.Parallel()
	etcdctlPath(t) // fail loudly if etcdctl is missing
	ports := freePorts(t, 6)
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
			"--initial-cluster", strings.Join(spec, ","), "--peer-secret-file", secret,
			"--tick-interval", "20ms", "--bcrypt-cost", "4")
	}
	all := "--endpoints=" + strings.Join(eps, ",")
	poll(t, 20*time.Second, "cluster ready", func() (bool, string) {
		r := etcdctl(t, "", all, "put", "ready", "1")
		return r.code == 0, fmt.Sprintf("%+v", r)
	})

	ctl := func(args ...string) result { return etcdctl(t, "", append([]string{all}, args...)...) }
	want(t, "user add root", ctl("user", "add", "root:rootpw"), "User root created\n")
	want(t, "grant root", ctl("user", "grant-role", "root", "root"), "Role root is granted to user root\n")
	want(t, "auth enable", ctl("auth", "enable"), "Authentication Enabled\n")

	if r := ctl("put", "k", "v"); r.code == 0 || !strings.Contains(r.stderr, "user name is empty") {
		t.Fatalf("put without --user: got %+v, want failure with user name is empty", r)
	}
	root := func(args ...string) result { return ctl(append([]string{"--user", "root:rootpw"}, args...)...) }
	want(t, "role add", root("role", "add", "app"), "Role app created\n")
	want(t, "grant readwrite prefix", root("role", "grant-permission", "app", "readwrite", "app/", "--prefix"), "Role app updated\n")
	want(t, "grant read key", root("role", "grant-permission", "app", "read", "config"), "Role app updated\n")
	want(t, "user add bob", root("user", "add", "bob:bobpw"), "User bob created\n")
	want(t, "grant app", root("user", "grant-role", "bob", "app"), "Role app is granted to user bob\n")
	want(t, "root put config", root("put", "config", "c1"), "OK\n")
	want(t, "root put secret", root("put", "secret", "s"), "OK\n")

	bob := func(args ...string) result { return ctl(append([]string{"--user", "bob:bobpw"}, args...)...) }
	want(t, "bob put app/x", bob("put", "app/x", "1"), "OK\n")
	want(t, "bob get app/ prefix", bob("get", "app/", "--prefix"), "app/x\n1\n")
	want(t, "bob get config", bob("get", "config"), "config\nc1\n")
	for _, tc := range []struct {
		what string
		args []string
	}{
		{"bob put config (read only)", []string{"put", "config", "c2"}},
		{"bob get secret", []string{"get", "secret"}},
		{"bob get everything", []string{"get", "", "--prefix"}},
		{"bob del app (wider than app/)", []string{"del", "app", "--prefix"}},
		{"bob user list", []string{"user", "list"}},
	} {
		if r := bob(tc.args...); r.code == 0 || !strings.Contains(r.stderr, "permission denied") {
			t.Errorf("%s: got %+v, want failure with permission denied", tc.what, r)
		}
	}
	if r := ctl("--user", "bob:wrong", "get", "config"); r.code == 0 || !strings.Contains(r.stderr, "authentication failed") {
		t.Errorf("bob with a wrong password: got %+v, want authentication failed", r)
	}

	// The synod CLI: --user, and its user/role/auth commands.
	syn := func(user string, args ...string) result {
		return synod(t, "", append([]string{"--endpoints", strings.Join(eps, ","), "--user", user}, args...)...)
	}
	// bob's wrong password above may have used up his free failures on a
	// member (etcdctl retries it): wait out the throttle first.
	var asBob result
	poll(t, 10*time.Second, "bob's login after his wrong password", func() (bool, string) {
		asBob = syn("bob:bobpw", "get", "app/x")
		return !strings.Contains(asBob.stderr, "too many failed authentication attempts"), asBob.stderr
	})
	want(t, "synod get as bob", asBob, "app/x\n1\n")
	if r := syn("bob:bobpw", "get", "secret"); r.code == 0 || !strings.Contains(r.stderr, "permission denied") {
		t.Errorf("synod get secret as bob: got %+v, want permission denied", r)
	}
	want(t, "synod role revoke-permission", syn("root:rootpw", "role", "revoke-permission", "app", "app/", "--prefix"),
		"Permission of [app/, app0) (prefix app/) is revoked from role app\n")
	// Revocation takes effect on bob's next request, on every node.
	for i, ep := range eps {
		// bob's wrong password above may have used up his free failures on
		// this member (etcdctl retries it): wait out the throttle first.
		var r result
		poll(t, 10*time.Second, "bob's login after his wrong password", func() (bool, string) {
			r = etcdctl(t, "", "--endpoints="+ep, "--user", "bob:bobpw", "get", "app/x")
			return !strings.Contains(r.stderr, "too many failed authentication attempts"), r.stderr
		})
		if r.code == 0 || !strings.Contains(r.stderr, "permission denied") {
			t.Errorf("bob get app/x on n%d after revocation: got %+v, want permission denied", i+1, r)
		}
	}
	want(t, "synod user list", syn("root:rootpw", "user", "list"), "bob\nroot\n")
	want(t, "synod auth status", syn("root:rootpw", "auth", "status"), "Authentication Status: true\nAuthRevision: 9\n")
	want(t, "synod auth disable", syn("root:rootpw", "auth", "disable"), "Authentication Disabled\n")
	want(t, "get secret with auth disabled", ctl("get", "secret"), "secret\ns\n")
}
