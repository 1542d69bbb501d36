package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// fdsOn lists the descriptors process pid has open on path.
func fdsOn(t *testing.T, pid int, path string) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0 // exited
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}

// writeFIFO opens the FIFO at path for writing, which waits for a reader,
// and writes data to it; it leaves the FIFO open.
func writeFIFO(t *testing.T, path string, data []byte) *os.File {
	t.Helper()
	type opened struct {
		f   *os.File
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err == nil {
			_, err = f.Write(data)
		}
		ch <- opened{f, err}
	}()
	select {
	case o := <-ch:
		if o.err != nil {
			t.Fatalf("write FIFO %s: %v", path, o.err)
		}
		return o.f
	case <-time.After(20 * time.Second):
		t.Fatalf("nobody read FIFO %s within 20s", path)
		return nil
	}
}

// TestInterruptedRestoreIsRefused kills `synod snapshot restore` while it
// reads the backup's data, at a known point: the backup comes through a
// FIFO, written whole for the restore's verification pass and half for its
// data pass. `synod start` must then refuse the data dir, rather than
// bootstrap an empty member where the backup's data was expected; a restore
// run again starts over, and its member starts with the data.
func TestInterruptedRestoreIsRefused(t *testing.T) {
	t.Parallel()
	etcdctlPath(t)
	ports := freePorts(t, 4)
	dir := t.TempDir()
	src := startProc(t, "source", "start", "--name", "src", "--data-dir", filepath.Join(dir, "src"),
		"--client-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--peer-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--tick-interval", "20ms")
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{fmt.Sprintf("127.0.0.1:%d", ports[0])}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	const keys = 300
	value := strings.Repeat("v", 2048)
	poll(t, 20*time.Second, "source serving", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := cli.Put(ctx, "k/000", value)
		return err == nil, fmt.Sprint(err)
	})
	for i := 1; i < keys; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := cli.Put(ctx, fmt.Sprintf("k/%03d", i), fmt.Sprintf("%s%d", value, i))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "backup.db")
	if r := etcdctl(t, "", fmt.Sprintf("--endpoints=127.0.0.1:%d", ports[0]), "snapshot", "save", file); r.code != 0 {
		t.Fatalf("etcdctl snapshot save: %+v", r)
	}
	backup, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(backup) < 256<<10 {
		t.Fatalf("backup of %d bytes: want more than a pipe holds", len(backup))
	}
	src.cmd.Process.Kill()
	src.wait(t, 10*time.Second)

	target := filepath.Join(dir, "restored")
	peer := fmt.Sprintf("127.0.0.1:%d", ports[3])
	fifo := filepath.Join(dir, "backup.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	restore := startProc(t, "restore", "snapshot", "restore", fifo, "--name", "r1", "--data-dir", target, "--peer-addr", peer)
	// The verification pass reads the whole backup.
	w := writeFIFO(t, fifo, backup)
	w.Close()
	poll(t, 20*time.Second, "verification pass done", func() (bool, string) {
		return fdsOn(t, restore.cmd.Process.Pid, fifo) == 0 || restore.exited(), "the restore still reads the verification pass"
	})
	if restore.exited() {
		t.Fatalf("restore exited before its data pass: %s", restore.stderr.String())
	}
	// The data pass gets half the backup, and the restore is killed while
	// it waits for the rest.
	w = writeFIFO(t, fifo, backup[:len(backup)/2])
	if err := restore.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	restore.wait(t, 10*time.Second)
	w.Close()

	startArgs := []string{"start", "--name", "r1", "--data-dir", target,
		"--client-addr", fmt.Sprintf("127.0.0.1:%d", ports[2]), "--peer-addr", peer, "--tick-interval", "20ms"}
	p := startProc(t, "start after the interrupted restore", startArgs...)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("synod start on the data dir of an interrupted restore: still running after 10s, want a refusal; stderr:\n%s", lastLines(p.stderr.String(), 10))
	}
	if code := p.wait(t, time.Second); code == 0 || !strings.Contains(p.stderr.String(), "did not finish") {
		t.Fatalf("synod start on the data dir of an interrupted restore: exit %d, stderr %q; want a refusal saying the restore did not finish", code, lastLines(p.stderr.String(), 5))
	}

	// Restored again, from the file: it starts over, and the member serves
	// the backup's data.
	if r := synod(t, "", "snapshot", "restore", file, "--name", "r1", "--data-dir", target, "--peer-addr", peer); r.code != 0 {
		t.Fatalf("restore again: %+v", r)
	}
	if _, err := os.Stat(target + ".restoring"); !os.IsNotExist(err) {
		t.Fatalf("after a complete restore: got %s (%v), want it gone", target+".restoring", err)
	}
	startProc(t, "restored", startArgs...)
	poll(t, 20*time.Second, "restored member serves the backup", func() (bool, string) {
		r := etcdctl(t, "", fmt.Sprintf("--endpoints=127.0.0.1:%d", ports[2]), "get", "k/", "--prefix", "--keys-only", "-w", "json")
		return r.code == 0 && strings.Contains(r.stdout, fmt.Sprintf("\"count\":%d", keys)), lastLines(r.stdout+r.stderr, 3)
	})
}

// TestDeletedDataDirStopsMemberProcess deletes the data dir of a running
// follower: its process exits with an error saying so, instead of
// acknowledging writes into deleted files. Started again with the same
// flags on the empty dir, it exits with "this member's data is gone" (raft
// panicked before), and keeps refusing to start.
func TestDeletedDataDirStopsMemberProcess(t *testing.T) {
	t.Parallel()
	etcdctlPath(t)
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
			"--initial-cluster", strings.Join(spec, ","), "--peer-secret-file", secret, "--tick-interval", "20ms"}
	}
	nodes := make([]*proc, 3)
	for i := range 3 {
		nodes[i] = startProc(t, fmt.Sprintf("n%d", i+1), args(i)...)
	}
	all := "--endpoints=" + strings.Join(eps, ",")
	poll(t, 20*time.Second, "cluster serving", func() (bool, string) {
		r := etcdctl(t, "", all, "put", "k", "v")
		return r.code == 0, r.stderr
	})
	for i := range 20 {
		etcdctl(t, "", all, "put", fmt.Sprintf("k%d", i), "v")
	}
	// A follower: an endpoint whose member is not the leader.
	victim := -1
	poll(t, 10*time.Second, "a follower", func() (bool, string) {
		for i, ep := range eps {
			r := etcdctl(t, "", "--endpoints="+ep, "endpoint", "status", "-w", "fields")
			if r.code == 0 && strings.Contains(r.stdout, "\"Leader\"") && !sameField(r.stdout, "\"MemberID\"", "\"Leader\"") {
				victim = i
				return true, ""
			}
		}
		return false, "no follower found"
	})
	if err := os.RemoveAll(filepath.Join(dir, fmt.Sprintf("n%d", victim+1))); err != nil {
		t.Fatal(err)
	}
	if code := nodes[victim].wait(t, 15*time.Second); code == 0 || !strings.Contains(nodes[victim].stderr.String(), "was deleted while the member ran") {
		t.Fatalf("member whose data dir was deleted: exit %d, stderr %q; want an exit saying so", code, lastLines(nodes[victim].stderr.String(), 5))
	}
	other := "--endpoints=" + eps[(victim+1)%3]
	if r := etcdctl(t, "", other, "put", "after", "x"); r.code != 0 {
		t.Fatalf("put with two members left: %+v", r)
	}
	// Started again on the empty dir with the same flags, twice.
	for _, what := range []string{"restarted on the empty data dir", "restarted once more"} {
		p := startProc(t, what, args(victim)...)
		if code := p.wait(t, 15*time.Second); code == 0 || !strings.Contains(p.stderr.String(), "this member's data is gone") {
			t.Fatalf("%s: exit %d, stderr %q; want an exit saying the member's data is gone", what, code, lastLines(p.stderr.String(), 5))
		}
	}
	if r := etcdctl(t, "", other, "get", "after", "--print-value-only"); r.code != 0 || r.stdout != "x\n" {
		t.Fatalf("get after: %+v", r)
	}
}

// sameField reports whether two "fields" lines of etcdctl output have the
// same value.
func sameField(out, a, b string) bool {
	val := func(name string) string {
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, name+" : ") {
				return strings.TrimPrefix(line, name+" : ")
			}
		}
		return "?" + name
	}
	return val(a) == val(b)
}
