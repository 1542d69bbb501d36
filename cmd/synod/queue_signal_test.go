//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestQueueWorkDrainsOnSIGTERM sends this process a real SIGTERM while
// `synod queue work` runs a job: the command stops claiming, lets the job
// finish (its command gets no signal), reports it and exits 0.
func TestQueueWorkDrainsOnSIGTERM(t *testing.T) {
	c := startCluster(t)
	dir := t.TempDir()
	started, release := filepath.Join(dir, "started"), filepath.Join(dir, "release")
	id := c.push(t, "", "qterm", "slow")
	// The job says it started, then runs until the test releases it; a
	// SIGTERM would end it with "terminated" and exit status 7.
	w := c.start(t, "queue", "work", "qterm", "--", "sh", "-c",
		`trap 'echo terminated; exit 7' TERM; touch "$1"; while [ ! -e "$2" ]; do sleep 0.02; done; echo finished`,
		"sh", started, release)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		select {
		case code := <-w.done:
			w.done <- code // for the cleanup
			t.Fatalf("work exited %d before its job started (stderr %q)", code, w.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("job not started after 10s (stderr %q)", w.stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	// The job runs, so work has installed its signal handler (before it
	// claimed anything): the SIGTERM goes to it, not to the default action.
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, "work's stderr", func() (bool, string) {
		s := w.stderr.String()
		return strings.Contains(s, "stopping: letting the running jobs finish"), s
	})
	// Draining, it waits for the job.
	select {
	case code := <-w.done:
		w.done <- code // for the cleanup
		t.Fatalf("work exited %d while its job ran (stderr %q)", code, w.stderr.String())
	case <-time.After(300 * time.Millisecond):
	}
	var j struct {
		State  string
		Result []byte
	}
	c.jsonOf(t, &j, "queue", "get", "qterm", id)
	if j.State != "RUNNING" {
		t.Fatalf("job %s during the drain: got %s, want RUNNING", id, j.State)
	}
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := w.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("work: exit %d after SIGTERM, want 0 (stderr %q)", code, w.stderr.String())
	}
	// It exited after reporting the job: completed, by the command's own
	// end (not a signal).
	c.jsonOf(t, &j, "queue", "get", "qterm", id)
	if j.State != "COMPLETED" || string(j.Result) != "finished\n" {
		t.Fatalf("job %s after work exited: got %s %q, want COMPLETED \"finished\\n\"", id, j.State, j.Result)
	}
}
