package gcpolicy

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Percent is the GC percent a server runs with when GOGC is not set.
const Percent = 400

// minLimit is the least memory limit Apply sets, whatever the machine.
const minLimit = 1 << 30

// Policy is what Apply decided.
type Policy struct {
	Percent     int   // -1 when GOGC is set and was left alone
	MemoryLimit int64 // 0 when GOMEMLIMIT is set and was left alone
}

// Apply sets the GC percent and a soft memory limit of a quarter of the
// memory available to the process (the cgroup limit when one is set, else
// the machine's), at least 1 GiB, unless GOGC or GOMEMLIMIT say otherwise.
func Apply() Policy {
	p := Policy{Percent: -1}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(Percent)
		p.Percent = Percent
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		p.MemoryLimit = Limit(available())
		debug.SetMemoryLimit(p.MemoryLimit)
	}
	return p
}

// Limit is the memory limit for a process that may use total bytes: a
// quarter of it, at least 1 GiB. total 0 means unknown.
func Limit(total int64) int64 {
	return max(total/4, minLimit)
}

// available is the memory the process may use, or 0 if unknown.
func available() int64 {
	total := memTotal()
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if n, ok := parseCgroupMax(b); ok && (total == 0 || n < total) {
			total = n
		}
	}
	return total
}

// parseCgroupMax parses a cgroup v2 memory.max file ("max" means none).
func parseCgroupMax(b []byte) (int64, bool) {
	s := string(bytes.TrimSpace(b))
	if s == "max" || s == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

// memTotal reads MemTotal from /proc/meminfo, or 0.
func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	n, _ := parseMemInfo(bufio.NewScanner(f))
	return n
}

// parseMemInfo returns MemTotal in bytes from the lines of /proc/meminfo.
func parseMemInfo(sc *bufio.Scanner) (int64, error) {
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("parse meminfo line %q: want a size in kB", sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse meminfo line %q: %w", sc.Text(), err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read meminfo: %w", err)
	}
	return 0, fmt.Errorf("no MemTotal in meminfo")
}
