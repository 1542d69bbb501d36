package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKilledWorkersJobsRunAgain SIGKILLs a `synod queue work` process while
// it holds jobs: another worker must run them again within the dead
// worker's lease TTL plus one second, and the jobs record the lost
// attempt.
func TestKilledWorkersJobsRunAgain(t *testing.T) {
	t.Parallel()
	eps := startDemoCluster(t)
	ep := "--endpoints=" + eps
	dir := t.TempDir()
	const jobs = 4
	const ttl = 2 * time.Second
	var ids []string
	for i := range jobs {
		r := synod(t, "", ep, "queue", "push", "work", "job"+strconv.Itoa(i))
		if r.code != 0 {
			t.Fatalf("push: %+v", r)
		}
		ids = append(ids, strings.TrimSpace(r.stdout))
	}
	// Worker A takes every job and hangs in them; its commands record
	// their PIDs (they run in their own process group: they outlive it).
	pids := filepath.Join(dir, "pids")
	a := startProc(t, "worker-a", ep, "queue", "work", "work", "--ttl", "2", "--concurrency", strconv.Itoa(jobs), "--",
		"sh", "-c", `echo $$ >> `+pids+`; exec sleep 60`)
	t.Cleanup(func() {
		b, _ := os.ReadFile(pids)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	poll(t, 20*time.Second, "worker A running every job", func() (bool, string) {
		if a.exited() {
			t.Fatalf("worker A exited: %s", a.stderr.String())
		}
		b, _ := os.ReadFile(pids)
		return len(strings.Fields(string(b))) == jobs, string(b)
	})
	// Worker B is ready, with room and nothing to do.
	ran := filepath.Join(dir, "ran")
	startProc(t, "worker-b", ep, "queue", "work", "work", "--ttl", "2", "--concurrency", strconv.Itoa(jobs), "--",
		"sh", "-c", `echo "$SYNOD_JOB_ID $SYNOD_JOB_ATTEMPT $(date +%s%N)" >> `+ran)
	poll(t, 20*time.Second, "worker B attached", func() (bool, string) {
		r := synod(t, "", ep, "queue", "stats", "work", "-w", "json")
		var st struct{ Workers, Running int64 }
		_ = json.Unmarshal([]byte(r.stdout), &st)
		return st.Workers == 2 && st.Running == jobs, r.stdout
	})
	if err := a.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	killed := time.Now()
	a.wait(t, 5*time.Second)

	var last time.Time
	poll(t, 20*time.Second, "the jobs run again", func() (bool, string) {
		data, _ := os.ReadFile(ran)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) < jobs || lines[0] == "" {
			return false, string(data)
		}
		seen := map[string]bool{}
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) != 3 || f[1] != "2" {
				t.Fatalf("worker B ran %q: want job, attempt 2, time", l)
			}
			seen[f[0]] = true
			ns, _ := strconv.ParseInt(f[2], 10, 64)
			if at := time.Unix(0, ns); at.After(last) {
				last = at
			}
		}
		for _, id := range ids {
			if !seen[id] {
				return false, string(data)
			}
		}
		return true, ""
	})
	took := last.Sub(killed)
	t.Logf("every job ran again %s after the SIGKILL (lease TTL %s)", took.Round(time.Millisecond), ttl)
	if took > ttl+time.Second {
		t.Errorf("the jobs ran again %s after the worker died, want within the TTL %s plus 1s", took, ttl)
	}
	for _, id := range ids {
		r := synod(t, "", ep, "queue", "wait", "work", id, "-w", "json")
		var j struct {
			State string
			Lost  int
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &j) != nil || j.State != "COMPLETED" || j.Lost != 1 {
			t.Errorf("job %s: %+v, want COMPLETED with one lost attempt", id, r)
		}
	}
}
