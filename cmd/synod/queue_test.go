package main

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// jsonOf runs a command with -w json and decodes its output.
func (c *testCluster) jsonOf(t *testing.T, v any, args ...string) {
	t.Helper()
	code, stdout, stderr := c.run(t, "", append(args, "-w", "json")...)
	if code != 0 {
		t.Fatalf("synod %s: exit %d, stderr %q", strings.Join(args, " "), code, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), v); err != nil {
		t.Fatalf("synod %s: output %q: %v", strings.Join(args, " "), stdout, err)
	}
}

// push pushes a job and returns its ID.
func (c *testCluster) push(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	code, stdout, stderr := c.run(t, stdin, append([]string{"queue", "push"}, args...)...)
	if code != 0 || !regexp.MustCompile(`^\d+\n$`).MatchString(stdout) {
		t.Fatalf("synod queue push %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, stdout, stderr)
	}
	return strings.TrimSpace(stdout)
}

type statsJSON struct {
	Available, Scheduled, Running, Completed, Dead, Cancelled int64
	Paused                                                    bool
}

func TestQueueCommands(t *testing.T) {
	c := startCluster(t)
	t.Run("work runs the command per job with the payload and environment", func(t *testing.T) {
		a := c.push(t, "", "q1", "first")
		b := c.push(t, "from stdin", "q1", "--priority", "5")
		w := c.start(t, "queue", "work", "q1", "--concurrency", "2", "--", "sh", "-c",
			`printf '%s|%s|%s|%s|%s' "$(cat)" "$SYNOD_QUEUE" "$SYNOD_JOB_ID" "$SYNOD_JOB_ATTEMPT" "$SYNOD_JOB_TOKEN"`)
		for _, id := range []string{a, b} {
			code, stdout, stderr := c.run(t, "", "queue", "wait", "q1", id, "-w", "json")
			if code != 0 {
				t.Fatalf("wait %s: exit %d, stderr %q", id, code, stderr)
			}
			var j struct {
				State  string
				Result []byte
				Token  string
			}
			if err := json.Unmarshal([]byte(stdout), &j); err != nil {
				t.Fatal(err)
			}
			payload := map[string]string{a: "first", b: "from stdin"}[id]
			want := payload + "|q1|" + id + "|1|" + j.Token
			if j.State != "COMPLETED" || string(j.Result) != want {
				t.Fatalf("job %s: got %s %q, want COMPLETED %q", id, j.State, j.Result, want)
			}
		}
		w.cancel()
		if code := w.exitCode(t, 10*time.Second); code != 0 {
			t.Fatalf("work: exit %d after an interrupt, stderr %q", code, w.stderr.String())
		}
		var st statsJSON
		c.jsonOf(t, &st, "queue", "stats", "q1")
		if st.Completed != 2 || st.Available != 0 || st.Running != 0 {
			t.Fatalf("stats: got %+v", st)
		}
	})

	t.Run("failures are retried, then dead, redriven and purged", func(t *testing.T) {
		id := c.push(t, "", "q2", "x", "--max-attempts", "2", "--backoff", "10ms")
		w := c.start(t, "queue", "work", "q2", "--", "sh", "-c", "echo something broke >&2; exit 3")
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, stdout, _ := c.run(t, "", "queue", "dead", "q2")
			if stdout == id+` dead attempt=2 error="exit status 3: something broke"`+"\n" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("dead jobs: got %q", stdout)
			}
			time.Sleep(50 * time.Millisecond) // polling interval
		}
		w.cancel()
		w.exitCode(t, 10*time.Second)
		c.want(t, "", "1 redriven\n", "queue", "redrive", "q2")
		c.want(t, "", id+` pending attempt=2 error="exit status 3: something broke"`+"\n", "queue", "list", "q2", "--state", "pending")
		c.want(t, "", id+" cancelled\n", "queue", "cancel", "q2", id)
		c.want(t, "", "0 purged\n", "queue", "purge", "q2")
		c.want(t, "", "1 purged\n", "queue", "purge", "q2", id)
		c.want(t, "", "", "queue", "list", "q2")
	})

	t.Run("pause, resume and stats", func(t *testing.T) {
		c.want(t, "", "q3 paused\n", "queue", "pause", "q3")
		c.push(t, "", "q3", "a")
		c.push(t, "", "q3", "b", "--delay", "1h")
		var st statsJSON
		c.jsonOf(t, &st, "queue", "stats", "q3")
		if !st.Paused || st.Available != 1 || st.Scheduled != 1 {
			t.Fatalf("stats: got %+v, want paused with 1 available and 1 scheduled", st)
		}
		c.want(t, "", "q3 resumed\n", "queue", "resume", "q3")
	})

	t.Run("cron schedules push a job per firing", func(t *testing.T) {
		code, stdout, stderr := c.run(t, "", "queue", "cron", "put", "q4", "tick", "@every 1s", "ping")
		if code != 0 || !regexp.MustCompile(`^tick "@every 1s" next=\S+\n$`).MatchString(stdout) {
			t.Fatalf("cron put: exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			var st statsJSON
			c.jsonOf(t, &st, "queue", "stats", "q4")
			if st.Available >= 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("jobs pushed by the schedule after 10s: %d", st.Available)
			}
			time.Sleep(100 * time.Millisecond) // polling interval
		}
		c.want(t, "", "deleted tick\n", "queue", "cron", "delete", "q4", "tick")
		c.want(t, "", "", "queue", "cron", "list", "q4")
		code, stdout, _ = c.run(t, "", "queue", "cron", "put", "q4", "bad", "61 * * * *")
		if code != exitError {
			t.Fatalf("bad schedule: exit %d, stdout %q", code, stdout)
		}
	})

	t.Run("get shows a job", func(t *testing.T) {
		id := c.push(t, "", "q5", "payload-x", "--group", "g", "--key", "k1")
		code, stdout, stderr := c.run(t, "", "queue", "push", "q5", "again", "--key", "k1")
		if code != 0 || stdout != id+" (an existing job with key k1)\n" {
			t.Fatalf("second push with the key: exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		code, stdout, _ = c.run(t, "", "queue", "get", "q5", id)
		for _, want := range []string{"job " + id + " of q5\n", "state     pending\n", "group     g\n", "key       k1\n", "payload   payload-x\n"} {
			if code != 0 || !strings.Contains(stdout, want) {
				t.Fatalf("get: exit %d, got %q, want it to contain %q", code, stdout, want)
			}
		}
		n, _ := strconv.ParseUint(id, 10, 64)
		c.wantError(t, "", "get job "+strconv.FormatUint(n+1, 10)+" of q5: queue: job "+strconv.FormatUint(n+1, 10)+" not found in queue q5", "queue", "get", "q5", strconv.FormatUint(n+1, 10))
	})
}
