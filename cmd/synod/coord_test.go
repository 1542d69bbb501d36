package main

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// background is a synod command running in a goroutine.
type background struct {
	stdout, stderr syncBuffer
	cancel         context.CancelFunc
	done           chan int // its exit code
}

// start runs synod with args against the cluster in the background; the
// command is interrupted (its context cancelled) at the end of the test.
func (c *testCluster) start(t *testing.T, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	bg := &background{cancel: cancel, done: make(chan int, 1)}
	args = append([]string{"--endpoints=" + strings.Join(c.endpoints, ",")}, args...)
	go func() { // owned: ends when the command does, at the latest on cancel
		bg.done <- run(ctx, args, strings.NewReader(""), &bg.stdout, &bg.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-bg.done:
		case <-time.After(20 * time.Second):
			t.Errorf("synod %s: still running 20s after its interrupt", strings.Join(args, " "))
		}
	})
	return bg
}

// waitOutput polls until the command's stdout matches re and returns the
// match's submatches.
func (bg *background) waitOutput(t *testing.T, re string, d time.Duration) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(d)
	for {
		if m := rx.FindStringSubmatch(bg.stdout.String()); m != nil {
			return m
		}
		select {
		case code := <-bg.done:
			bg.done <- code
			if m := rx.FindStringSubmatch(bg.stdout.String()); m != nil {
				return m
			}
			t.Fatalf("command exited %d: got stdout %q, stderr %q; want a match of %q", code, bg.stdout.String(), bg.stderr.String(), re)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: got stdout %q, stderr %q; want a match of %q", d, bg.stdout.String(), bg.stderr.String(), re)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not a synchronization
	}
}

// exitCode waits for the command to exit.
func (bg *background) exitCode(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case code := <-bg.done:
		bg.done <- code
		return code
	case <-time.After(d):
		t.Fatalf("command still running after %s (stdout %q, stderr %q)", d, bg.stdout.String(), bg.stderr.String())
		return 0
	}
}

func (c *testCluster) etcdClient(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.endpoints, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestCoordinationCommands(t *testing.T) {
	c := startCluster(t)
	t.Run("lock runs the command with the token and returns its code", func(t *testing.T) {
		tokens := make([]int64, 2)
		for i := range tokens {
			code, stdout, stderr := c.run(t, "", "lock", "cli-lock", "--", "sh", "-c", `echo "token=$SYNOD_LOCK_TOKEN key=$SYNOD_LOCK_KEY"; exit 3`)
			if code != 3 {
				t.Fatalf("exit code: got %d, want 3 (stderr %q)", code, stderr)
			}
			m := regexp.MustCompile(`^token=(\d+) key=cli-lock/[0-9a-f]+\n$`).FindStringSubmatch(stdout)
			if m == nil {
				t.Fatalf("stdout: got %q, want token=N key=cli-lock/LEASE", stdout)
			}
			tokens[i], _ = strconv.ParseInt(m[1], 10, 64)
		}
		if tokens[1] <= tokens[0] {
			t.Errorf("tokens: got %d then %d, want strictly increasing", tokens[0], tokens[1])
		}
		// The lock was released both times.
		resp, err := c.etcdClient(t).Get(t.Context(), "cli-lock/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count != 0 {
			t.Errorf("keys of cli-lock after both runs: got %d, want 0", resp.Count)
		}
	})

	t.Run("a lost lock stops the command", func(t *testing.T) {
		cli := c.etcdClient(t)
		bg := c.start(t, "lock", "--ttl", "30", "lost-lock", "--", "sh", "-c",
			`trap 'echo terminated; exit 7' TERM; echo "holding $SYNOD_LOCK_TOKEN"; while :; do sleep 0.05; done`)
		bg.waitOutput(t, `holding \d+`, 20*time.Second)
		resp, err := cli.Get(t.Context(), "lost-lock/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 {
			t.Fatalf("keys of lost-lock: got %d, want 1", len(resp.Kvs))
		}
		// The lease ends (as if the holder's session expired).
		if _, err := cli.Revoke(t.Context(), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
			t.Fatal(err)
		}
		if code := bg.exitCode(t, 20*time.Second); code != 7 {
			t.Errorf("exit code: got %d, want 7 (the command's, after SIGTERM)", code)
		}
		if !strings.Contains(bg.stderr.String(), "lock lost") {
			t.Errorf("stderr: got %q, want it to say the lock was lost", bg.stderr.String())
		}
		if !strings.Contains(bg.stdout.String(), "terminated") {
			t.Errorf("stdout: got %q, want the command's SIGTERM trap to have run", bg.stdout.String())
		}
	})

	t.Run("elect and observe", func(t *testing.T) {
		obs := c.start(t, "elect", "-l", "cli-elect")
		first := c.start(t, "elect", "cli-elect", "alpha")
		first.waitOutput(t, `(?m)^alpha\ntoken \d+\n`, 20*time.Second)
		obs.waitOutput(t, `(?m)^cli-elect/[0-9a-f]+\nalpha\n`, 20*time.Second)
		second := c.start(t, "elect", "cli-elect", "beta")
		// beta waits while alpha leads; interrupting alpha resigns.
		first.cancel()
		if code := first.exitCode(t, 20*time.Second); code != 0 {
			t.Errorf("alpha's exit code after an interrupt: got %d, want 0 (stderr %q)", code, first.stderr.String())
		}
		second.waitOutput(t, `(?m)^beta\ntoken \d+\n`, 20*time.Second)
		obs.waitOutput(t, `(?m)^alpha\n(.|\n)*^beta\n`, 20*time.Second)
	})

	t.Run("group join, list, leave and watch", func(t *testing.T) {
		start := c.revision(t, "put", "group-test-start", "")
		join := c.start(t, "group", "join", "cli-group", "m1", "addr=10.0.0.1")
		join.waitOutput(t, `m1 "addr=10.0.0.1" lease=[0-9a-f]{16}\n`, 20*time.Second)
		c.want(t, "", join.stdout.String(), "group", "list", "cli-group")
		join.cancel() // leaves
		if code := join.exitCode(t, 20*time.Second); code != 0 {
			t.Errorf("join's exit code after an interrupt: got %d, want 0 (stderr %q)", code, join.stderr.String())
		}
		code, stdout, stderr := c.run(t, "", "group", "watch", "cli-group", "--rev", strconv.FormatInt(start, 10), "--max-events", "2")
		if code != 0 {
			t.Fatalf("group watch: exit %d, stderr %q", code, stderr)
		}
		want := regexp.MustCompile(`^JOIN m1 "addr=10.0.0.1" rev=\d+\nLEAVE m1 "addr=10.0.0.1" rev=\d+\n$`)
		if !want.MatchString(stdout) {
			t.Errorf("group watch: got %q, want a JOIN then a LEAVE of m1", stdout)
		}
		c.want(t, "", "", "group", "list", "cli-group")
	})

	t.Run("usage errors", func(t *testing.T) {
		for _, args := range [][]string{{"lock"}, {"lock", "a", "b"}, {"elect", "x"}, {"elect", "-l"}, {"group", "join", "g"}, {"lock", "--ttl", "0", "x"}} {
			if code, _, _ := c.run(t, "", args...); code != exitUsage {
				t.Errorf("synod %s: exit code got %d, want %d", strings.Join(args, " "), code, exitUsage)
			}
		}
	})
}
