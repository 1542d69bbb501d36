package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startDemoCluster starts `synod demo` on free ports and returns its
// endpoints, comma-separated.
func startDemoCluster(t *testing.T) string {
	t.Helper()
	ports := freePorts(t, 6)
	var clientPorts, peerPorts, eps []string
	for i := range 3 {
		clientPorts = append(clientPorts, strconv.Itoa(ports[i]))
		peerPorts = append(peerPorts, strconv.Itoa(ports[3+i]))
		eps = append(eps, "127.0.0.1:"+strconv.Itoa(ports[i]))
	}
	demo := startProc(t, "demo", "demo",
		"--client-ports", strings.Join(clientPorts, ","), "--peer-ports", strings.Join(peerPorts, ","))
	poll(t, 30*time.Second, "demo ready", func() (bool, string) {
		if demo.exited() {
			t.Fatalf("demo exited early: stdout %q, stderr %q", demo.stdout.String(), demo.stderr.String())
		}
		return strings.Contains(demo.stdout.String(), "\nready: "), demo.stdout.String()
	})
	if m := regexp.MustCompile(`data in (\S+) \(removed on exit\)`).FindStringSubmatch(demo.stdout.String()); m != nil {
		t.Cleanup(func() { os.RemoveAll(m[1]) }) // in case the demo is killed
	}
	return strings.Join(eps, ",")
}

// startEtcdctl starts etcdctl (API v3) in the background; it is killed when
// the test ends.
func startEtcdctl(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(etcdctlPath(t), args...)
	p.cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { // owned: ends when the process exits (killed at cleanup at the latest)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stdout:\n%s\n%s stderr:\n%s", name, p.stdout.String(), name, lastLines(p.stderr.String(), 40))
		}
	})
	return p
}

// waitStdout polls until p's stdout matches re.
func waitStdout(t *testing.T, p *proc, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	var m []string
	poll(t, 20*time.Second, p.name+" output", func() (bool, string) {
		m = rx.FindStringSubmatch(p.stdout.String())
		if m == nil && p.exited() {
			t.Fatalf("%s exited: got stdout %q, stderr %q; want a match of %q", p.name, p.stdout.String(), p.stderr.String(), re)
		}
		return m != nil, "stdout " + strconv.Quote(p.stdout.String())
	})
	return m
}

// keyCount counts the keys with prefix pfx, with etcdctl.
func keyCount(t *testing.T, ep, pfx string) int {
	t.Helper()
	r := etcdctl(t, "", ep, "get", pfx, "--prefix", "--keys-only", "-w", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"header"`) {
		t.Fatalf("etcdctl get %s --prefix: exit %d, stdout %q, stderr %q", pfx, r.code, r.stdout, r.stderr)
	}
	m := regexp.MustCompile(`"count":(\d+)`).FindStringSubmatch(r.stdout)
	if m == nil {
		return 0 // json leaves out a zero count
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func TestLockAndElectWithEtcdctl(t *testing.T) {
	t.Parallel()
	etcdctlPath(t) // fail at once without etcdctl
	ep := "--endpoints=" + startDemoCluster(t)

	// etcdctl lock runs a command under the lock, with the lock's key.
	r := etcdctl(t, "", ep, "lock", "e2e-run", "--", "sh", "-c", `echo "key=$ETCD_LOCK_KEY rev=$ETCD_LOCK_REV"`)
	if r.code != 0 || !regexp.MustCompile(`^key=e2e-run/[0-9a-f]+ rev=\d+\n$`).MatchString(r.stdout) {
		t.Errorf("etcdctl lock e2e-run CMD: exit %d, got stdout %q, want key=e2e-run/LEASE rev=N (stderr %q)", r.code, r.stdout, r.stderr)
	}

	// etcdctl and synod contend for the same lock: synod waits while
	// etcdctl holds it, and gets it (with a higher token) once released.
	holder := startEtcdctl(t, "etcdctl lock", ep, "lock", "e2e-shared")
	waitStdout(t, holder, `(?m)^e2e-shared/[0-9a-f]+$`)
	waiter := startProc(t, "synod lock", ep, "lock", "e2e-shared", "--", "sh", "-c", `echo "token=$SYNOD_LOCK_TOKEN"`)
	poll(t, 20*time.Second, "synod lock queued behind etcdctl", func() (bool, string) {
		n := keyCount(t, ep, "e2e-shared/")
		return n == 2, strconv.Itoa(n) + " keys under e2e-shared/"
	})
	if waiter.exited() {
		t.Fatalf("synod lock ran while etcdctl held the lock: stdout %q, stderr %q", waiter.stdout.String(), waiter.stderr.String())
	}
	held := etcdctl(t, "", ep, "get", "e2e-shared/", "--prefix", "-w", "json")
	revs := regexp.MustCompile(`"create_revision":(\d+)`).FindAllStringSubmatch(held.stdout, -1)
	if len(revs) != 2 {
		t.Fatalf("etcdctl get e2e-shared/: got %q, want two keys with their create revisions", held.stdout)
	}
	// etcdctl's key, the holder's, is the one created first.
	etcdctlToken := int64(-1)
	for _, m := range revs {
		if rev, _ := strconv.ParseInt(m[1], 10, 64); etcdctlToken < 0 || rev < etcdctlToken {
			etcdctlToken = rev
		}
	}
	if err := holder.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := waiter.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("synod lock after etcdctl released: exit %d, stderr %q", code, waiter.stderr.String())
	}
	tm := regexp.MustCompile(`^token=(\d+)\n$`).FindStringSubmatch(waiter.stdout.String())
	if tm == nil {
		t.Fatalf("synod lock: got stdout %q, want token=N", waiter.stdout.String())
	}
	if tok, _ := strconv.ParseInt(tm[1], 10, 64); tok <= etcdctlToken {
		t.Errorf("synod's token: got %d, want above etcdctl's %d", tok, etcdctlToken)
	}

	// etcdctl elect: a campaign, an observer, and synod taking over when
	// etcdctl's leader resigns.
	observer := startEtcdctl(t, "etcdctl elect -l", ep, "elect", "-l", "e2e-elect")
	leader := startEtcdctl(t, "etcdctl elect", ep, "elect", "e2e-elect", "alpha")
	waitStdout(t, leader, `(?m)^e2e-elect/[0-9a-f]+\nalpha\n`)
	waitStdout(t, observer, `(?m)^e2e-elect/[0-9a-f]+\nalpha\n`)
	next := startProc(t, "synod elect", ep, "elect", "e2e-elect", "beta")
	poll(t, 20*time.Second, "synod campaigning", func() (bool, string) {
		n := keyCount(t, ep, "e2e-elect/")
		return n == 2, strconv.Itoa(n) + " keys under e2e-elect/"
	})
	if strings.Contains(next.stdout.String(), "beta") {
		t.Fatalf("synod elect won while etcdctl's leader led: stdout %q", next.stdout.String())
	}
	if err := leader.cmd.Process.Signal(syscall.SIGINT); err != nil { // etcdctl resigns
		t.Fatal(err)
	}
	waitStdout(t, next, `(?m)^e2e-elect/[0-9a-f]+\nbeta\ntoken \d+\n`)
	waitStdout(t, observer, `(?m)^alpha\n(.|\n)*^beta\n`)
	if err := next.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := next.wait(t, 20*time.Second); code != 0 {
		t.Errorf("synod elect after an interrupt: exit %d, want 0 (stderr %q)", code, next.stderr.String())
	}
	poll(t, 20*time.Second, "synod resigned", func() (bool, string) {
		n := keyCount(t, ep, "e2e-elect/")
		return n == 0, strconv.Itoa(n) + " keys under e2e-elect/"
	})
}

// TestPausedLockHolderIsFenced pauses a lock holder (synod lock and its
// command, with SIGSTOP) past its lease, lets another holder take the lock
// and write, then resumes it: the paused holder's guarded write (an etcdctl
// txn comparing the lock key's create revision with its token) must fail,
// and the data must keep the second holder's write.
func TestPausedLockHolderIsFenced(t *testing.T) {
	t.Parallel()
	etcdctlPath(t)
	endpoints := startDemoCluster(t)
	ep := "--endpoints=" + endpoints
	goFile := filepath.Join(t.TempDir(), "go")
	// The guarded write of a holder, in etcdctl's txn format; the command
	// ignores SIGTERM so that the write is attempted whatever synod lock
	// does once it notices the lock is lost.
	guarded := `printf 'create("%s") = "%s"\n\nput fenced-data %s\n\n\n' "$SYNOD_LOCK_KEY" "$SYNOD_LOCK_TOKEN" "$1" | ETCDCTL_API=3 etcdctl --endpoints=` + endpoints + ` txn`
	first := &proc{name: "paused synod lock", done: make(chan struct{})}
	first.cmd = exec.Command(synodPath(t), ep, "lock", "--ttl", "2", "fenced-lock", "--", "sh", "-c",
		`trap '' TERM; echo "token=$SYNOD_LOCK_TOKEN"; while [ ! -e "$GO" ]; do sleep 0.05; done; `+guarded, "sh", "first")
	first.cmd.Env = append(os.Environ(), "GO="+goFile)
	first.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its own group, to pause the command too
	first.cmd.Stdout, first.cmd.Stderr = &first.stdout, &first.stderr
	if err := first.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { // owned: ends when the process group exits (killed at cleanup at the latest)
		first.err = first.cmd.Wait()
		close(first.done)
	}()
	pgid := first.cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(-pgid, syscall.SIGCONT)
		if !first.exited() {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-first.done
		}
		if t.Failed() {
			t.Logf("first holder stdout:\n%s\nstderr:\n%s", first.stdout.String(), first.stderr.String())
		}
	})
	waitStdout(t, first, `token=\d+`)

	if err := syscall.Kill(-pgid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	// The second holder gets the lock once the paused holder's lease has
	// expired, and writes.
	second := runCmd(t, "", nil, synodPath(t), ep, "lock", "fenced-lock", "--", "sh", "-c", guarded, "sh", "second")
	if second.code != 0 || !strings.HasPrefix(second.stdout, "SUCCESS") {
		t.Fatalf("second holder: exit %d, got stdout %q, want SUCCESS (stderr %q)", second.code, second.stdout, second.stderr)
	}
	t.Logf("second holder got the lock and wrote %s after the first was paused", time.Since(paused).Round(time.Millisecond))

	if err := os.WriteFile(goFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(-pgid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitStdout(t, first, `(SUCCESS|FAILURE)`)
	if out := first.stdout.String(); !strings.Contains(out, "FAILURE") || strings.Contains(out, "SUCCESS") {
		t.Errorf("paused holder's guarded write: got %q, want FAILURE", out)
	}
	want(t, "etcdctl get fenced-data", etcdctl(t, "", ep, "get", "fenced-data", "--print-value-only"), "second\n")
	select {
	case <-first.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("paused holder still running 30s after its resume")
	}
	if !strings.Contains(first.stderr.String(), "lock lost") {
		t.Errorf("paused holder's stderr: got %q, want it to report the lock lost", first.stderr.String())
	}
}
