package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/synod-io/synod/bench/internal/member"
)

// cluster is three member processes of one system.
type cluster struct {
	system  string
	members []*memberProc
}

// memberProc is one running member process.
type memberProc struct {
	args    member.Args
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed when the process has exited
	waitErr error         // set before exited is closed
}

// clusterSize is the number of members of each cluster.
const clusterSize = 3

// startCluster starts the members of system under dir with l and waits until
// they agree on a leader.
func startCluster(ctx context.Context, system, dir string, l launcher) (_ *cluster, err error) {
	addrs, err := freeAddrs(4 * clusterSize)
	if err != nil {
		return nil, err
	}
	c := &cluster{system: system}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	var initial []string
	for i := range clusterSize {
		initial = append(initial, fmt.Sprintf("n%d=%s", i+1, addrs[3*i+1]))
	}
	// Synod's members authenticate each other with a shared peer secret.
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	for i := range clusterSize {
		a := member.Args{
			Name:            fmt.Sprintf("n%d", i+1),
			DataDir:         filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			ClientAddr:      addrs[3*i],
			PeerAddr:        addrs[3*i+1],
			PprofAddr:       addrs[3*i+2],
			InitialCluster:  strings.Join(initial, ","),
			PeerSecret:      hex.EncodeToString(secret),
			QuotaBytes:      l.quotaBytes,
			DataRangeSplits: strings.Join(l.dataRangeSplits, ","),
		}
		if l.metrics {
			a.MetricsAddr = addrs[3*clusterSize+i]
		}
		m, err := startMember(system, l, a, filepath.Join(dir, a.Name+".log"))
		if err != nil {
			return nil, err
		}
		c.members = append(c.members, m)
	}
	if _, err := c.waitLeader(ctx, time.Minute); err != nil {
		return nil, err
	}
	return c, nil
}

// freeAddrs returns n loopback addresses whose ports were free a moment ago.
func freeAddrs(n int) ([]string, error) {
	var addrs []string
	var lis []net.Listener
	defer func() {
		for _, l := range lis {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		lis = append(lis, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

func startMember(system string, l launcher, a member.Args, logPath string) (*memberProc, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create member log: %w", err)
	}
	flags := a.Flags()
	if l.flags != nil {
		flags = l.flags(a)
	}
	cmd := exec.Command(l.path, append(append([]string(nil), l.prefix...), flags...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The member dies with the harness, whatever happens to the harness.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s member %s: %w", system, a.Name, err)
	}
	m := &memberProc{args: a, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		m.waitErr = cmd.Wait()
		_ = logFile.Close()
		close(m.exited)
	}()
	return m, nil
}

// stop ends every member (SIGTERM, then SIGKILL after a grace period) and
// waits for the processes.
func (c *cluster) stop() {
	for _, m := range c.members {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, m := range c.members {
		select {
		case <-m.exited:
		case <-time.After(20 * time.Second):
			_ = m.cmd.Process.Kill()
			<-m.exited
		}
	}
}

// checkAlive fails if a member has exited, with the end of its log.
func (c *cluster) checkAlive() error {
	for _, m := range c.members {
		select {
		case <-m.exited:
			return fmt.Errorf("%s member %s exited (%v); log tail:\n%s", c.system, m.args.Name, m.waitErr, tail(m.logPath, 2000))
		default:
		}
	}
	return nil
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (c *cluster) endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.args.ClientAddr)
	}
	return eps
}

func newClient(endpoint string) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", endpoint, err)
	}
	return cli, nil
}

// waitLeader waits until every member reports the same leader and returns the
// index of the leader's member.
func (c *cluster) waitLeader(ctx context.Context, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var clients []*clientv3.Client
	defer func() {
		for _, cli := range clients {
			_ = cli.Close()
		}
	}()
	for _, ep := range c.endpoints() {
		cli, err := newClient(ep)
		if err != nil {
			return 0, err
		}
		clients = append(clients, cli)
	}
	var last error
	for {
		if err := c.checkAlive(); err != nil {
			return 0, err
		}
		idx, err := agreedLeader(ctx, clients)
		if err == nil {
			return idx, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%s cluster has no agreed leader: %w", c.system, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func agreedLeader(ctx context.Context, clients []*clientv3.Client) (int, error) {
	var lead uint64
	idx := -1
	for i, cli := range clients {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cli.Status(sctx, cli.Endpoints()[0])
		cancel()
		if err != nil {
			return 0, fmt.Errorf("status of %s: %w", cli.Endpoints()[0], err)
		}
		if st.Leader == 0 || (lead != 0 && st.Leader != lead) {
			return 0, fmt.Errorf("members disagree on the leader (%x, %x)", lead, st.Leader)
		}
		lead = st.Leader
		if st.Header.GetMemberId() == lead {
			idx = i
		}
	}
	if idx < 0 {
		return 0, errors.New("the leader is not among the members")
	}
	return idx, nil
}

// procStats is what /proc tells about the member processes at one instant.
type procStats struct {
	cpu time.Duration // user + system time, summed over members
}

func (c *cluster) stats() (procStats, error) {
	var s procStats
	for _, m := range c.members {
		cpu, err := processCPU(m.cmd.Process.Pid)
		if err != nil {
			return s, err
		}
		s.cpu += cpu
	}
	return s, nil
}

// clockTicks is USER_HZ, the unit of the times in /proc/<pid>/stat; it is 100
// on every Linux architecture Go supports.
const clockTicks = 100

// processCPU returns the user+system CPU time of a process (all threads).
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time of %d: %w", pid, err)
	}
	// The command name (field 2) may contain spaces: fields are counted
	// from the closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// resetPeakRSS resets the members' VmHWM so that peakRSS measures from now.
func (c *cluster) resetPeakRSS() error {
	for _, m := range c.members {
		path := fmt.Sprintf("/proc/%d/clear_refs", m.cmd.Process.Pid)
		if err := os.WriteFile(path, []byte("5"), 0); err != nil {
			return fmt.Errorf("reset peak rss: %w", err)
		}
	}
	return nil
}

// peakRSS returns the sum of the members' VmHWM, in bytes.
func (c *cluster) peakRSS() (uint64, error) {
	var sum uint64
	for _, m := range c.members {
		v, err := statusField(m.cmd.Process.Pid, "VmHWM")
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// statusField reads a "kB" field of /proc/<pid>/status, in bytes.
func statusField(pid int, name string) (uint64, error) {
	return statusLine(fmt.Sprintf("/proc/%d/status", pid), name)
}

// diskUsage returns the mean over members of the space allocated to their
// data directories (like du), in bytes.
func (c *cluster) diskUsage() (int64, error) {
	var sum int64
	for _, m := range c.members {
		n, err := allocatedBytes(m.args.DataDir)
		if err != nil {
			return 0, err
		}
		sum += n
	}
	return sum / int64(len(c.members)), nil
}

func allocatedBytes(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking (compaction, WAL recycling)
			}
			return err
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("measure disk usage of %s: %w", dir, err)
	}
	return total, nil
}
