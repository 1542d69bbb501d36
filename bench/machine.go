package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/version"
	"golang.org/x/sys/unix"
)

// machine describes where the benchmark ran.
type machine struct {
	cpuModel   string
	cores      int
	memory     uint64 // bytes
	kernel     string
	filesystem string // type of the filesystem holding the data dirs
	fsync      fsyncStats
}

// fsyncStats are the latencies of sequential 4 KiB write+fdatasync pairs.
type fsyncStats struct {
	n             int
	mean          time.Duration
	p50, p99, max time.Duration
}

func probeMachine(dir string) (machine, error) {
	m := machine{cores: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.cpuModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if mem, err := statusLine("/proc/meminfo", "MemTotal"); err == nil {
		m.memory = mem
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		m.kernel = string(bytes.TrimRight(u.Release[:], "\x00"))
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil {
		m.filesystem = fsName(st.Type)
	}
	fs, err := measureFsync(dir, 1000)
	if err != nil {
		return m, err
	}
	m.fsync = fs
	return m, nil
}

// statusLine reads a "kB" line of a /proc file like meminfo, in bytes.
func statusLine(path, name string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name+":"); ok {
			var kb uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				return 0, fmt.Errorf("parse %s: %w", name, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no %s in %s", name, path)
}

func fsName(magic int64) string {
	switch magic {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("0x%x", magic)
}

// measureFsync writes n 4 KiB blocks sequentially to a new file in dir, each
// followed by fdatasync, and returns the latencies of the pairs.
func measureFsync(dir string, n int) (fsyncStats, error) {
	path := filepath.Join(dir, "fsync-probe")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fsyncStats{}, fmt.Errorf("create fsync probe: %w", err)
	}
	defer os.Remove(path)
	defer f.Close()
	block := bytes.Repeat([]byte{0xa5}, 4096)
	lat := make([]time.Duration, 0, n)
	var total time.Duration
	for i := range n {
		start := time.Now()
		if _, err := f.WriteAt(block, int64(i)*4096); err != nil {
			return fsyncStats{}, fmt.Errorf("write fsync probe: %w", err)
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return fsyncStats{}, fmt.Errorf("fdatasync fsync probe: %w", err)
		}
		d := time.Since(start)
		lat = append(lat, d)
		total += d
	}
	slices.Sort(lat)
	return fsyncStats{
		n:    n,
		mean: total / time.Duration(n),
		p50:  lat[n/2],
		p99:  lat[n*99/100],
		max:  lat[n-1],
	}, nil
}

// busyCPU returns the CPU time all processes of the machine have used since
// boot (user, nice, system, irq, softirq and steal time of /proc/stat).
func busyCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("parse /proc/stat: %q", line)
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		var v int64
		if _, err := fmt.Sscan(f[i], &v); err != nil {
			return 0, fmt.Errorf("parse /proc/stat: %w", err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// loadAverage returns the 1-minute load average as text.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// versions are the versions of what was measured.
type versions struct {
	goVersion string
	etcd      string
	synod     string
}

func probeVersions() versions {
	return versions{goVersion: runtime.Version(), etcd: version.Version, synod: synodCommit()}
}

// synodCommit names the commit of the Synod work tree this command was run
// from, marking uncommitted changes.
func synodCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown (not run from a git work tree)"
	}
	commit := strings.TrimSpace(string(out))
	// The harness (bench/) and its output are not part of what is measured.
	st, err := exec.Command("git", "status", "--porcelain", "--", ":/", ":(top,exclude)bench", ":(top,exclude)docs/benchmarks.md").Output()
	if err != nil {
		return commit
	}
	var changed []string
	// Each line is "XY path": two status letters and a space.
	for line := range strings.SplitSeq(strings.TrimRight(string(st), "\n"), "\n") {
		if len(line) > 3 {
			changed = append(changed, strings.TrimSpace(line[3:]))
		}
	}
	switch {
	case len(changed) == 0:
	case len(changed) <= 4:
		commit += " with uncommitted changes to " + strings.Join(changed, ", ")
	default:
		commit += fmt.Sprintf(" with uncommitted changes to %s and %d more files", strings.Join(changed[:3], ", "), len(changed)-3)
	}
	return commit
}

// machineSentence describes the machine, what other processes did during
// the run, and the versions measured (etcd's too when withEtcd), for the
// end of a report section.
func machineSentence(m machine, in interference, v versions, withEtcd bool) string {
	etcd := ""
	if withEtcd {
		etcd = ", etcd " + v.etcd
	}
	return fmt.Sprintf("Machine: %d cores, %s; %s, fsync p50 %s. Other processes used %.0f%% of the machine's CPU during the run (load average before it %s). Go %s%s, Synod %s.",
		m.cores, m.cpuModel, m.filesystem, fmtDur(m.fsync.p50), in.othersPercent(), in.loadBefore, v.goVersion, etcd, v.synod)
}
