package chaos

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/synod-io/synod/internal/testbin"
	"github.com/synod-io/synod/internal/testcluster"
)

// The synod binary, built once per test process by the first process run.
var (
	buildOnce sync.Once
	synodBin  string
	buildErr  error
	binDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func buildSynod(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "synod-chaos-bin-")
		if buildErr != nil {
			return
		}
		synodBin = filepath.Join(binDir, "synod")
		if buildErr = testbin.ConsultSources(filepath.Join("..", "..")); buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", synodBin, "github.com/synod-io/synod/cmd/synod")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			buildErr = fmt.Errorf("build synod: %w\n%s", err, out.String())
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return synodBin
}

// processLogLevel is the nodes' log level: SYNOD_TEST_LOG if set (as for
// in-process clusters), else info. The logs go to files, kept when a run
// fails.
func processLogLevel() string {
	if l := os.Getenv("SYNOD_TEST_LOG"); l != "" {
		return l
	}
	return "info"
}

// procCluster is a cluster of synod processes whose peer traffic goes
// through a proxy.
type procCluster struct {
	t     *testing.T
	bin   string
	dir   string
	spec  string
	proxy *proxy
	nodes []*procNode
	// secretFile holds the peer secret every member is started with.
	secretFile string
}

type procNode struct {
	name, dataDir, logPath   string
	clientAddr, peerAddr, ip string
	advertise                string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	paused bool
}

// freeAddrs returns n loopback addresses whose ports were free a moment
// ago.
func freeAddrs(ip string, n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

// procClusters counts the process clusters this test process started: each
// one gets loopback addresses of its own (see startProcesses).
var procClusters atomic.Int64

// startProcesses starts n synod processes behind a proxy. Node i of the
// k-th cluster of this test process listens on 127.0.k.(31+i) (k modulo
// 250), addresses no other test package and no other cluster running in
// parallel binds, so that a port found free here, or freed by a crash, cannot
// be taken by another test before the node binds it again; it dials its
// peers from 127.0.k.(11+i).
func startProcesses(t *testing.T, n int) *procCluster {
	t.Helper()
	c := &procCluster{t: t, bin: buildSynod(t), dir: t.TempDir()}
	block := (procClusters.Add(1) - 1) % 250
	addrs := make([]string, 2*n)
	for i := range n {
		a, err := freeAddrs(fmt.Sprintf("127.0.%d.%d", block, 31+i), 2)
		if err != nil {
			t.Fatal(err)
		}
		addrs[i], addrs[n+i] = a[0], a[1]
	}

	var ips []string
	for i := range n {
		ips = append(ips, fmt.Sprintf("127.0.%d.%d", block, 11+i))
	}
	var err error
	c.proxy, err = newProxy(addrs[n:], ips)
	if err != nil {
		t.Fatal(err)
	}
	var spec []string
	for i := range n {
		nd := &procNode{
			name: fmt.Sprintf("n%d", i+1), clientAddr: addrs[i], peerAddr: addrs[n+i], ip: ips[i],
			advertise: c.proxy.addr(i),
		}
		nd.dataDir = filepath.Join(c.dir, nd.name)
		nd.logPath = filepath.Join(c.dir, nd.name+".log")
		c.nodes = append(c.nodes, nd)
		spec = append(spec, nd.name+"="+nd.advertise)
	}
	c.spec = strings.Join(spec, ",")
	c.secretFile = filepath.Join(c.dir, "peer-secret.hex")
	if out, err := exec.Command(c.bin, "peer-secret", "new", c.secretFile).CombinedOutput(); err != nil {
		t.Fatalf("synod peer-secret new: %v: %s", err, out)
	}
	t.Cleanup(c.close)
	for i := range c.nodes {
		if err := c.restart(i); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := waitServing(ctx, c); err != nil {
		t.Fatalf("process cluster did not start: %v\nlogs in %s", err, c.logs())
	}
	return c
}

func (c *procCluster) size() int             { return len(c.nodes) }
func (c *procCluster) name(i int) string     { return c.nodes[i].name }
func (c *procCluster) endpoint(i int) string { return c.nodes[i].clientAddr }
func (c *procCluster) logs() string {
	// The directory is removed with the test: keep the logs of a failed run.
	dir, err := os.MkdirTemp("", "synod-chaos-logs-")
	if err != nil {
		return c.dir
	}
	for _, n := range c.nodes {
		if b, err := os.ReadFile(n.logPath); err == nil {
			_ = os.WriteFile(filepath.Join(dir, filepath.Base(n.logPath)), b, 0o644)
		}
	}
	return dir
}

// leader asks every running, unpaused node for its status.
func (c *procCluster) leader(ctx context.Context) int {
	best, term := -1, uint64(0)
	for i, n := range c.nodes {
		n.mu.Lock()
		up := n.cmd != nil && !n.paused
		n.mu.Unlock()
		if !up {
			continue
		}
		cli, err := newClient(n.clientAddr)
		if err != nil {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		st, err := cli.Status(sctx, n.clientAddr)
		cancel()
		cli.Close()
		if err == nil && st.Leader == st.Header.MemberId && st.RaftTerm >= term {
			best, term = i, st.RaftTerm
		}
	}
	return best
}

func (c *procCluster) isolate(i int) {
	for j := range c.nodes {
		if j != i {
			c.proxy.cutLink(i, j)
			c.proxy.cutLink(j, i)
		}
	}
}

func (c *procCluster) oneWay(from, to int) { c.proxy.cutLink(from, to) }

func (c *procCluster) split(minority []int) {
	in := map[int]bool{}
	for _, i := range minority {
		in[i] = true
	}
	for i := range c.nodes {
		for j := range c.nodes {
			if in[i] != in[j] {
				c.proxy.cutLink(i, j)
			}
		}
	}
}

func (c *procCluster) heal() { c.proxy.heal() }

// setLinkFaults supports delays only: a byte stream cannot lose or
// duplicate single messages.
func (c *procCluster) setLinkFaults(f testcluster.LinkFaults) bool {
	if f.Drop > 0 || f.Duplicate > 0 {
		return false
	}
	c.proxy.setDelay(f.Delay + f.Jitter/2)
	return true
}

// crash kills a node with SIGKILL and waits for it to be gone.
func (c *procCluster) crash(i int) error {
	n := c.nodes[i]
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.cmd, n.paused = nil, false
	n.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s: %w", n.name, err)
	}
	<-exited
	return nil
}

// restart starts a node that is not running.
func (c *procCluster) restart(i int) error {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := []string{"start", "--name", n.name, "--data-dir", n.dataDir,
		"--client-addr", n.clientAddr, "--peer-addr", n.peerAddr,
		"--advertise-peer-url", "http://" + n.advertise, "--peer-source-ip", n.ip,
		"--initial-cluster", c.spec, "--peer-secret-file", c.secretFile, "--tick-interval", "20ms", "--election-ticks", "10",
		"--log-level", processLogLevel()}
	// SYNOD_TEST_PRESPLIT=1: a pre-split store (the flags apply when the
	// node bootstraps, and are ignored on restarts).
	args = append(args, testbin.PresplitArgs()...)
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	exited := make(chan struct{})
	go func() { // owned: ends when the process does, which crash and close ensure
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	n.cmd, n.exited = cmd, exited
	return nil
}

func (c *procCluster) running(i int) bool {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// pause freezes a node with SIGSTOP.
func (c *procCluster) pause(i int) (bool, error) {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return true, nil
	}
	if err := n.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return true, fmt.Errorf("stop %s: %w", n.name, err)
	}
	n.paused = true
	return true, nil
}

// resume thaws a paused node with SIGCONT.
func (c *procCluster) resume(i int) error {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || !n.paused {
		return nil
	}
	n.paused = false
	if err := n.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return fmt.Errorf("continue %s: %w", n.name, err)
	}
	return nil
}

// close kills every node and stops the proxy.
func (c *procCluster) close() {
	for i := range c.nodes {
		_ = c.resume(i)
		if err := c.crash(i); err != nil {
			c.t.Errorf("stop %s: %v", c.nodes[i].name, err)
		}
	}
	c.proxy.close()
}
