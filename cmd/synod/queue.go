package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/client"
)

func (a *app) queueCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "queue",
		Short: "Push, work and inspect job queues",
		Long: `Job queues: durable, replicated work queues. Producers push jobs; workers
claim them over a stream, each claim bound to the worker's session lease (its
jobs are available again as soon as the lease ends) and carrying a fencing
token; failed jobs are retried with backoff, then kept in the dead set.`,
	}
	cmd.AddCommand(a.queuePushCmd(), a.queueWorkCmd(), a.queueStatsCmd(), a.queueListCmd(), a.queueGetCmd(),
		a.queueWaitCmd(), a.queueCancelCmd(), a.queueDeadCmd(), a.queueRedriveCmd(), a.queuePurgeCmd(),
		a.queuePauseCmd(true), a.queuePauseCmd(false), a.queueConfigureCmd(), a.queueCronCmd())
	return cmd
}

// withQueue connects and runs fn with the queue, within --command-timeout.
func (a *app) withQueue(cmd *cobra.Command, name string, fn func(ctx context.Context, q *client.Queue) error) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), a.opts.client.commandTimeout)
	defer cancel()
	return a.withSynodClient(ctx, func(c *client.Client) error { return fn(ctx, c.Queue(name)) })
}

// failed is the error of a call that failed: what was done and the
// server's message (without gRPC's code).
func failed(what string, err error) error {
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.PermissionDenied, codes.AlreadyExists, codes.OutOfRange:
			return fmt.Errorf("%s: %s", what, st.Message())
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// specFlags are the options of a job, for push and cron put.
type specFlags struct {
	priority    int32
	delay       time.Duration
	runAt       string
	maxAttempts int
	backoff     time.Duration
	maxBackoff  time.Duration
	key         string
	group       string
	dependsOn   []string
	timeout     time.Duration
}

func (f *specFlags) add(cmd *cobra.Command, withTiming bool) {
	fl := cmd.Flags()
	fl.Int32Var(&f.priority, "priority", 0, "priority: higher runs first")
	if withTiming {
		fl.DurationVar(&f.delay, "delay", 0, "run no sooner than this from now")
		fl.StringVar(&f.runAt, "run-at", "", "run no sooner than this time (RFC 3339)")
		fl.StringVar(&f.key, "key", "", "idempotency key: a second push with it returns the first job while it is retained")
		fl.StringSliceVar(&f.dependsOn, "depends-on", nil, "IDs of jobs of the queue that must complete first")
	}
	fl.IntVar(&f.maxAttempts, "max-attempts", 0, "failed attempts after which the job is dead (default: the queue's, 25)")
	fl.DurationVar(&f.backoff, "backoff", 0, "initial retry interval, doubled after each failure (default 1s)")
	fl.DurationVar(&f.maxBackoff, "max-backoff", 0, "longest retry interval (default 1h)")
	fl.StringVar(&f.group, "group", "", "group key: a group's jobs run one at a time, in push order")
	fl.DurationVar(&f.timeout, "timeout", 0, "how long an attempt may run (default: the queue's, 5m)")
}

func (f *specFlags) spec(payload []byte) (client.Spec, error) {
	s := client.Spec{Payload: payload, Priority: f.priority, Delay: f.delay, MaxAttempts: f.maxAttempts,
		IdempotencyKey: f.key, Group: f.group, Timeout: f.timeout}
	deps, err := parseIDs(f.dependsOn)
	if err != nil {
		return s, err
	}
	s.DependsOn = deps
	if f.runAt != "" {
		t, err := time.Parse(time.RFC3339, f.runAt)
		if err != nil {
			return s, usageErrorf("--run-at: %v", err)
		}
		if f.delay != 0 {
			return s, usageErrorf("--delay and --run-at exclude each other")
		}
		s.RunAt = t
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"delay", f.delay}, {"backoff", f.backoff}, {"max-backoff", f.maxBackoff}, {"timeout", f.timeout}} {
		if d.v < 0 {
			return s, usageErrorf("--%s must not be negative", d.name)
		}
	}
	if f.maxAttempts < 0 {
		return s, usageErrorf("--max-attempts must not be negative")
	}
	if f.backoff > 0 || f.maxBackoff > 0 {
		s.Retry = &client.RetryPolicy{Initial: f.backoff, Max: f.maxBackoff}
	}
	return s, nil
}

func (a *app) queuePushCmd() *cobra.Command {
	var f specFlags
	cmd := &cobra.Command{
		Use:   "push QUEUE [PAYLOAD]",
		Short: "Push a job; the payload is read from stdin when not given",
		Args:  argsBetween(1, 2, "QUEUE [PAYLOAD]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var payload []byte
			if len(args) == 2 {
				payload = []byte(args[1])
			} else {
				var err error
				if payload, err = io.ReadAll(cmd.InOrStdin()); err != nil {
					return fmt.Errorf("read the payload from stdin: %w", err)
				}
			}
			s, err := f.spec(payload)
			if err != nil {
				return err
			}
			return a.withQueue(cmd, args[0], func(ctx context.Context, q *client.Queue) error {
				ids, dup, err := q.PushTxn(ctx, nil, nil, s)
				if err != nil {
					return failed(fmt.Sprintf("push to %s", args[0]), err)
				}
				p := a.printer(cmd)
				if p.format == outputJSON {
					return p.jsonValue(map[string]any{"id": ids[0], "duplicate": dup[0]})
				}
				if dup[0] {
					return p.write(fmt.Appendf(nil, "%d (an existing job with key %s)\n", ids[0], f.key))
				}
				return p.write(fmt.Appendf(nil, "%d\n", ids[0]))
			})
		},
	}
	f.add(cmd, true)
	return cmd
}

// workOptions are the flags of queue work.
type workOptions struct {
	concurrency int
	ttl         int
	worker      string
	killAfter   time.Duration
}

func (a *app) queueWorkCmd() *cobra.Command {
	var o workOptions
	cmd := &cobra.Command{
		Use:   "work QUEUE [--concurrency N] -- CMD [ARGS...]",
		Short: "Run a command for each job of a queue",
		Long: `Claim jobs of QUEUE and run CMD once per job, up to --concurrency at a time,
with the job's payload on its stdin and in its environment SYNOD_QUEUE,
SYNOD_JOB_ID, SYNOD_JOB_ATTEMPT (from 1) and SYNOD_JOB_TOKEN (the claim's
fencing token). Exit status 0 completes the job with the command's stdout
(its first 64 KiB) as result; any other status fails the attempt, which is
retried per the job's policy (the last line of stderr is the job's error).

The jobs are claimed on a session whose lease lives --ttl seconds after its
last renewal: if this process dies, its jobs run again elsewhere as soon as
the lease expires. A job that stops being this worker's (cancelled, timed
out) gets SIGTERM, then SIGKILL after --kill-after.

SIGINT or SIGTERM stops claiming, lets the running commands finish, reports
them and exits; a second one stops the commands too.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash != 1 || len(args) < 2 {
				return usageErrorf("%s takes QUEUE -- CMD [ARGS...]", cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := positive("concurrency", o.concurrency); err != nil {
				return err
			}
			if err := positive("ttl", o.ttl); err != nil {
				return err
			}
			return a.work(cmd, args[0], args[1:], o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.concurrency, "concurrency", 1, "jobs run at once")
	f.IntVar(&o.ttl, "ttl", 10, "TTL in seconds of the worker's session lease")
	f.StringVar(&o.worker, "worker", "", "the worker's ID in the queue (default: random)")
	f.DurationVar(&o.killAfter, "kill-after", 10*time.Second, "after SIGTERM, how long a revoked job's command has before SIGKILL")
	return cmd
}

func (a *app) work(cmd *cobra.Command, queue string, argv []string, o workOptions) error {
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)
	ctx, drain := context.WithCancel(cmd.Context())
	defer drain()
	force := make(chan struct{})
	go func() {
		select {
		case <-signals:
		case <-ctx.Done():
			return
		}
		fmt.Fprintln(cmd.ErrOrStderr(), "synod queue work: stopping: letting the running jobs finish (again to stop them)")
		drain()
		if _, ok := <-signals; ok {
			close(force)
		}
	}()
	return a.withSession(context.WithoutCancel(ctx), o.ttl, func(s *client.Session) error {
		var opts []client.WorkerOption
		if o.worker != "" {
			opts = append(opts, client.WithWorkerID(o.worker))
		}
		opts = append(opts, client.WithConcurrency(o.concurrency))
		h := func(jctx context.Context, j *client.Job) ([]byte, error) {
			return runJob(jctx, force, cmd, j, argv, o.killAfter)
		}
		err := s.Client().Queue(queue).NewWorker(s, h, opts...).Run(ctx)
		if errors.Is(err, client.ErrSessionLost) {
			return errors.New("the worker's session lease ended: its running jobs were released")
		}
		return err
	})
}

// tailBuffer keeps the last bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

// lastLine is the last non-empty line written.
func (t *tailBuffer) lastLine() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := strings.Split(strings.TrimRight(string(t.buf), "\n"), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// headBuffer keeps the first max bytes written to it.
type headBuffer struct {
	buf []byte
	max int
}

func (h *headBuffer) Write(p []byte) (int, error) {
	if room := h.max - len(h.buf); room > 0 {
		h.buf = append(h.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// runJob runs argv for one job.
func runJob(ctx context.Context, force <-chan struct{}, cmd *cobra.Command, j *client.Job, argv []string, killAfter time.Duration) ([]byte, error) {
	c := exec.Command(argv[0], argv[1:]...)
	c.Stdin = bytes.NewReader(j.Payload)
	out := &headBuffer{max: 64 << 10}
	errTail := &tailBuffer{max: 4 << 10}
	c.Stdout = out
	c.Stderr = io.MultiWriter(cmd.ErrOrStderr(), errTail)
	c.Env = append(os.Environ(),
		"SYNOD_QUEUE="+j.Queue,
		"SYNOD_JOB_ID="+strconv.FormatUint(j.ID, 10),
		"SYNOD_JOB_ATTEMPT="+strconv.Itoa(j.Attempt),
		"SYNOD_JOB_TOKEN="+strconv.FormatInt(j.Token, 10))
	ownProcessGroup(c) // a ^C at the terminal drains synod; it does not kill the jobs
	if err := c.Start(); err != nil {
		return nil, client.Permanent(fmt.Errorf("run %s: %w", argv[0], err))
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }() // owned: ends when the command exits, which stop guarantees
	stop := func(why string) error {
		fmt.Fprintf(cmd.ErrOrStderr(), "synod queue work: job %d %s; stopping %s (SIGTERM)\n", j.ID, why, argv[0])
		_ = c.Process.Signal(syscall.SIGTERM)
		timer := time.NewTimer(killAfter)
		defer timer.Stop()
		select {
		case err := <-exited:
			return err
		case <-timer.C:
			_ = c.Process.Kill()
			return <-exited
		}
	}
	var err error
	select {
	case err = <-exited:
	case <-ctx.Done():
		err = stop(context.Cause(ctx).Error())
	case <-force:
		err = stop("stopped")
	}
	if err == nil {
		return out.buf, nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return nil, fmt.Errorf("wait for %s: %w", argv[0], err)
	}
	msg := ee.Error()
	if line := errTail.lastLine(); line != "" {
		msg += ": " + line
	}
	return nil, errors.New(msg)
}

func (a *app) queueStatsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stats QUEUE",
		Short: "Show a queue's jobs by state, its oldest available job's age and recent rates",
		Args:  argsBetween(1, 1, "QUEUE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withQueue(cmd, args[0], func(ctx context.Context, q *client.Queue) error {
				st, err := q.Stats(ctx)
				if err != nil {
					return failed(fmt.Sprintf("stats of %s", args[0]), err)
				}
				return a.printStats(cmd, st)
			})
		},
	}
}

func (a *app) printStats(cmd *cobra.Command, st *queuepb.StatsResponse) error {
	p := a.printer(cmd)
	c := st.Config
	if p.format == outputJSON {
		return p.jsonValue(map[string]any{
			"queue": st.Queue, "available": st.Available, "scheduled": st.Scheduled, "waiting": st.Waiting,
			"running": st.Running, "completed": st.Completed, "dead": st.Dead, "cancelled": st.Cancelled,
			"oldest_available_ms": st.OldestAvailableMs, "workers": st.Workers, "capacity": st.Capacity,
			"pushed_per_second": st.PushedPerSecond, "completed_per_second": st.CompletedPerSecond,
			"failed_per_second": st.FailedPerSecond, "dead_per_second": st.DeadPerSecond,
			"pickup_p50_ms": st.PickupP50Ms, "pickup_p99_ms": st.PickupP99Ms,
			"paused": c.GetPaused(), "max_running": c.GetMaxRunning(), "group_max_running": c.GetGroupMaxRunning(),
			"schedules": st.Schedules,
		})
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "queue      %s", st.Queue)
	if c.GetPaused() {
		b.WriteString(" (paused)")
	}
	fmt.Fprintf(&b, "\navailable  %d\nscheduled  %d\nwaiting    %d\nrunning    %d\ncompleted  %d\ndead       %d\ncancelled  %d\n",
		st.Available, st.Scheduled, st.Waiting, st.Running, st.Completed, st.Dead, st.Cancelled)
	fmt.Fprintf(&b, "oldest available job waited %s\n", time.Duration(st.OldestAvailableMs)*time.Millisecond)
	fmt.Fprintf(&b, "workers    %d (capacity %d)\n", st.Workers, st.Capacity)
	fmt.Fprintf(&b, "per second (last minute): pushed %.1f, completed %.1f, failed %.1f, dead %.1f\n",
		st.PushedPerSecond, st.CompletedPerSecond, st.FailedPerSecond, st.DeadPerSecond)
	fmt.Fprintf(&b, "pickup (last minute, this member's workers): p50 %.1f ms, p99 %.1f ms\n", st.PickupP50Ms, st.PickupP99Ms)
	return p.write(b.Bytes())
}

// printJobs prints jobs one per line, or as JSON lines.
func (a *app) printJobs(cmd *cobra.Command, jobs []*queuepb.Job) error {
	p := a.printer(cmd)
	for _, j := range jobs {
		if p.format == outputJSON {
			if err := p.json(j); err != nil {
				return err
			}
			continue
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%d %s attempt=%d", j.Id, stateName(j.State), j.Attempt)
		if j.Priority != 0 {
			fmt.Fprintf(&b, " priority=%d", j.Priority)
		}
		if j.Group != "" {
			fmt.Fprintf(&b, " group=%s", j.Group)
		}
		if j.State == queuepb.State_PENDING && j.RunAtMs > time.Now().UnixMilli() {
			fmt.Fprintf(&b, " run_at=%s", time.UnixMilli(j.RunAtMs).UTC().Format(time.RFC3339))
		}
		if j.LastError != "" {
			fmt.Fprintf(&b, " error=%q", j.LastError)
		}
		b.WriteByte('\n')
		if err := p.write([]byte(b.String())); err != nil {
			return err
		}
	}
	return nil
}

func stateName(s queuepb.State) string { return strings.ToLower(s.String()) }

func parseState(s string) (queuepb.State, error) {
	if s == "" {
		return queuepb.State_STATE_UNSPECIFIED, nil
	}
	v, ok := queuepb.State_value[strings.ToUpper(s)]
	if !ok || v == 0 {
		return 0, usageErrorf("--state must be pending, running, completed, dead or cancelled, got %q", s)
	}
	return queuepb.State(v), nil
}

func (a *app) queueListCmd() *cobra.Command {
	var state string
	var after uint64
	var limit int
	var payload bool
	cmd := &cobra.Command{
		Use:   "list QUEUE",
		Short: "List a queue's jobs by ID",
		Args:  argsBetween(1, 1, "QUEUE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := parseState(state)
			if err != nil {
				return err
			}
			return a.listJobs(cmd, args[0], st, after, limit, payload)
		},
	}
	f := cmd.Flags()
	f.StringVar(&state, "state", "", "only jobs in this state: pending, running, completed, dead or cancelled")
	f.Uint64Var(&after, "after", 0, "only jobs with IDs above this")
	f.IntVar(&limit, "limit", 100, "at most this many jobs")
	f.BoolVar(&payload, "payload", false, "with payloads and results (JSON output)")
	return cmd
}

func (a *app) listJobs(cmd *cobra.Command, queue string, st queuepb.State, after uint64, limit int, payload bool) error {
	return a.withQueue(cmd, queue, func(ctx context.Context, q *client.Queue) error {
		jobs, more, err := q.List(ctx, st, after, limit, payload)
		if err != nil {
			return failed(fmt.Sprintf("list %s", queue), err)
		}
		if err := a.printJobs(cmd, jobs); err != nil {
			return err
		}
		if more && a.printer(cmd).format != outputJSON {
			fmt.Fprintf(cmd.ErrOrStderr(), "(more: --after %d)\n", jobs[len(jobs)-1].Id)
		}
		return nil
	})
}

func (a *app) queueDeadCmd() *cobra.Command {
	var after uint64
	var limit int
	cmd := &cobra.Command{
		Use:   "dead QUEUE",
		Short: "List a queue's dead jobs with their last error",
		Args:  argsBetween(1, 1, "QUEUE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.listJobs(cmd, args[0], queuepb.State_DEAD, after, limit, false)
		},
	}
	cmd.Flags().Uint64Var(&after, "after", 0, "only jobs with IDs above this")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many jobs")
	return cmd
}

func parseID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, usageErrorf("job ID %q is not a number", s)
	}
	return id, nil
}

func parseIDs(args []string) ([]uint64, error) {
	var ids []uint64
	for _, s := range args {
		id, err := parseID(s)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// printJob prints one job in full.
func (a *app) printJob(cmd *cobra.Command, j *queuepb.Job) error {
	p := a.printer(cmd)
	if p.format == outputJSON {
		return p.json(j)
	}
	var b bytes.Buffer
	ms := func(v int64) string {
		if v == 0 {
			return "-"
		}
		return time.UnixMilli(v).UTC().Format(time.RFC3339Nano)
	}
	fmt.Fprintf(&b, "job %d of %s\nstate     %s", j.Id, j.Queue, stateName(j.State))
	if j.Waiting {
		b.WriteString(" (waiting for dependencies)")
	}
	if j.CancelRequested {
		b.WriteString(" (cancel requested)")
	}
	fmt.Fprintf(&b, "\nattempt   %d (failed %d, lost %d, max %d)\n", j.Attempt, j.Failures, j.Lost, j.MaxAttempts)
	fmt.Fprintf(&b, "priority  %d\n", j.Priority)
	if j.Group != "" {
		fmt.Fprintf(&b, "group     %s\n", j.Group)
	}
	if j.IdempotencyKey != "" {
		fmt.Fprintf(&b, "key       %s\n", j.IdempotencyKey)
	}
	if len(j.DependsOn) > 0 {
		fmt.Fprintf(&b, "depends   %v\n", j.DependsOn)
	}
	fmt.Fprintf(&b, "created   %s\nrun at    %s\n", ms(j.CreatedAtMs), ms(j.RunAtMs))
	if j.Token != 0 {
		fmt.Fprintf(&b, "token     %d (worker %s, lease %016x, claimed %s, deadline %s)\n", j.Token, j.Worker, j.Lease, ms(j.ClaimedAtMs), ms(j.DeadlineMs))
	}
	if j.FinishedAtMs != 0 {
		fmt.Fprintf(&b, "finished  %s\n", ms(j.FinishedAtMs))
	}
	if j.LastError != "" {
		fmt.Fprintf(&b, "error     %s\n", j.LastError)
	}
	if len(j.Progress) > 0 {
		fmt.Fprintf(&b, "progress  %s\n", j.Progress)
	}
	fmt.Fprintf(&b, "payload   %s\n", j.Payload)
	if len(j.Result) > 0 {
		fmt.Fprintf(&b, "result    %s\n", j.Result)
	}
	return p.write(b.Bytes())
}

func (a *app) queueGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get QUEUE ID",
		Short: "Show a job: state, attempts, token, payload, result and last error",
		Args:  argsBetween(2, 2, "QUEUE ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[1])
			if err != nil {
				return err
			}
			return a.withQueue(cmd, args[0], func(ctx context.Context, q *client.Queue) error {
				j, err := q.Get(ctx, id)
				if err != nil {
					return failed(fmt.Sprintf("get job %d of %s", id, args[0]), err)
				}
				return a.printJob(cmd, j)
			})
		},
	}
}

func (a *app) queueWaitCmd() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "wait QUEUE ID",
		Short: "Wait until a job is finished and show it; exit 1 unless it completed",
		Args:  argsBetween(2, 2, "QUEUE ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[1])
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return a.withSynodClient(ctx, func(c *client.Client) error {
				j, err := c.Queue(args[0]).Wait(ctx, id)
				if err != nil {
					return failed(fmt.Sprintf("wait for job %d of %s", id, args[0]), err)
				}
				if err := a.printJob(cmd, j); err != nil {
					return err
				}
				if j.State != queuepb.State_COMPLETED {
					return fmt.Errorf("job %d ended %s", id, stateName(j.State))
				}
				return nil
			})
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", time.Hour, "how long to wait")
	return cmd
}

func (a *app) queueCancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel QUEUE ID",
		Short: "Cancel a pending job, or tell a running job's worker to stop",
		Args:  argsBetween(2, 2, "QUEUE ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[1])
			if err != nil {
				return err
			}
			return a.withQueue(cmd, args[0], func(ctx context.Context, q *client.Queue) error {
				st, err := q.Cancel(ctx, id)
				if err != nil {
					return failed(fmt.Sprintf("cancel job %d of %s", id, args[0]), err)
				}
				msg := "cancelled"
				if st == queuepb.State_RUNNING {
					msg = "running: its worker was told to stop"
				}
				p := a.printer(cmd)
				if p.format == outputJSON {
					return p.jsonValue(map[string]any{"id": id, "state": stateName(st)})
				}
				return p.write(fmt.Appendf(nil, "%d %s\n", id, msg))
			})
		},
	}
}

func (a *app) queueRedriveCmd() *cobra.Command {
	var rate int
	cmd := &cobra.Command{
		Use:   "redrive QUEUE [ID...]",
		Short: "Make dead jobs (all, or the given ones) pending again, with fresh attempts",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := parseIDs(args[1:])
			if err != nil {
				return err
			}
			if err := positive("rate", rate); err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(cmd.Context()) // as long as the rate makes it
			defer cancel()
			return a.withSynodClient(ctx, func(c *client.Client) error {
				n, err := c.Queue(args[0]).Redrive(ctx, rate, ids...)
				if err != nil {
					return failed(fmt.Sprintf("redrive %s", args[0]), err)
				}
				return a.printCount(cmd, "redriven", n)
			})
		},
	}
	cmd.Flags().IntVar(&rate, "rate", 1000, "jobs per second at most")
	return cmd
}

func (a *app) printCount(cmd *cobra.Command, what string, n int64) error {
	p := a.printer(cmd)
	if p.format == outputJSON {
		return p.jsonValue(map[string]any{what: n})
	}
	return p.write(fmt.Appendf(nil, "%d %s\n", n, what))
}

func (a *app) queuePurgeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "purge QUEUE [ID...]",
		Short: "Delete the dead jobs (all, or the given finished ones)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := parseIDs(args[1:])
			if err != nil {
				return err
			}
			return a.withQueue(cmd, args[0], func(ctx context.Context, q *client.Queue) error {
				n, err := q.Purge(ctx, ids...)
				if err != nil {
					return failed(fmt.Sprintf("purge %s", args[0]), err)
				}
				return a.printCount(cmd, "purged", n)
			})
		},
	}
}

func (a *app) queuePauseCmd(pause bool) *cobra.Command {
	use, short := "resume QUEUE", "Resume a paused queue's claims"
	if pause {
		use, short = "pause QUEUE", "Stop a queue's claims (running jobs go on)"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  argsBetween(1, 1, "QUEUE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withQueue(cmd, args[0], func(ctx context.Context, q *client.Queue) error {
				_, err := q.Configure(ctx, &queuepb.ConfigureRequest{Paused: proto.Bool(pause)})
				if err != nil {
					return failed(fmt.Sprintf("%s %s", cmd.Name(), args[0]), err)
				}
				return a.printer(cmd).write(fmt.Appendf(nil, "%s %sd\n", args[0], cmd.Name()))
			})
		},
	}
}

func (a *app) queueConfigureCmd() *cobra.Command {
	var maxRunning, groupMax, maxAttempts, maxLost int32
	var completed, dead, timeout, backoff time.Duration
	cmd := &cobra.Command{
		Use:   "configure QUEUE",
		Short: "Change a queue's limits, retention and defaults (the flags given)",
		Args:  argsBetween(1, 1, "QUEUE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &queuepb.ConfigureRequest{}
			fl := cmd.Flags()
			if fl.Changed("max-running") {
				req.MaxRunning = proto.Int32(maxRunning)
			}
			if fl.Changed("group-max-running") {
				req.GroupMaxRunning = proto.Int32(groupMax)
			}
			if fl.Changed("max-attempts") {
				req.DefaultMaxAttempts = proto.Int32(maxAttempts)
			}
			if fl.Changed("max-lost") {
				req.MaxLost = proto.Int32(maxLost)
			}
			if fl.Changed("completed-retention") {
				req.CompletedRetentionMs = proto.Int64(completed.Milliseconds())
			}
			if fl.Changed("dead-retention") {
				req.DeadRetentionMs = proto.Int64(dead.Milliseconds())
			}
			if fl.Changed("timeout") {
				req.DefaultTimeoutMs = proto.Int64(timeout.Milliseconds())
			}
			if fl.Changed("backoff") {
				req.DefaultRetry = &queuepb.RetryPolicy{InitialBackoffMs: backoff.Milliseconds()}
			}
			return a.withQueue(cmd, args[0], func(ctx context.Context, q *client.Queue) error {
				c, err := q.Configure(ctx, req)
				if err != nil {
					return failed(fmt.Sprintf("configure %s", args[0]), err)
				}
				return a.printer(cmd).json(c)
			})
		},
	}
	f := cmd.Flags()
	f.Int32Var(&maxRunning, "max-running", 0, "jobs running at once in the queue (0: no limit)")
	f.Int32Var(&groupMax, "group-max-running", 0, "jobs of one group running at once (0: 1)")
	f.Int32Var(&maxAttempts, "max-attempts", 0, "default failed attempts that make a job dead (0: 25)")
	f.Int32Var(&maxLost, "max-lost", 0, "attempts lost to ended leases that make a job dead (0: 10)")
	f.DurationVar(&completed, "completed-retention", 0, "how long completed and cancelled jobs are kept (0: 24h; negative: not kept)")
	f.DurationVar(&dead, "dead-retention", 0, "how long dead jobs are kept (0: 30 days; negative: not kept)")
	f.DurationVar(&timeout, "timeout", 0, "default attempt timeout (0: 5m)")
	f.DurationVar(&backoff, "backoff", 0, "default initial retry interval (0: 1s)")
	return cmd
}

func (a *app) queueCronCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cron",
		Short: "Manage a queue's cron schedules (a job per firing, exactly once per firing)",
		Long: `A schedule pushes a job at each firing of a cron expression: five fields
(minute hour day-of-month month day-of-week), @every <duration>, or @hourly,
@daily, @weekly, @monthly, @yearly; times are UTC. The job of the firing at
time T has the idempotency key cron:<name>:<T>: each firing pushes one job,
across leader changes. Firings missed while the cluster had no leader are
caught up for up to an hour.`,
	}
	var f specFlags
	put := &cobra.Command{
		Use:   "put QUEUE NAME SCHEDULE [PAYLOAD]",
		Short: "Create or replace a schedule",
		Args:  argsBetween(3, 4, "QUEUE NAME SCHEDULE [PAYLOAD]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var payload []byte
			if len(args) == 4 {
				payload = []byte(args[3])
			}
			s, err := f.spec(payload)
			if err != nil {
				return err
			}
			return a.withQueue(cmd, args[0], func(ctx context.Context, q *client.Queue) error {
				sc, err := q.PutSchedule(ctx, args[1], args[2], s)
				if err != nil {
					return failed(fmt.Sprintf("put schedule %s of %s", args[1], args[0]), err)
				}
				return a.printSchedules(cmd, []*queuepb.Schedule{sc})
			})
		},
	}
	f.add(put, false)
	list := &cobra.Command{
		Use:   "list QUEUE",
		Short: "List a queue's schedules with their next firing",
		Args:  argsBetween(1, 1, "QUEUE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withQueue(cmd, args[0], func(ctx context.Context, q *client.Queue) error {
				ss, err := q.Schedules(ctx)
				if err != nil {
					return failed(fmt.Sprintf("list schedules of %s", args[0]), err)
				}
				return a.printSchedules(cmd, ss)
			})
		},
	}
	del := &cobra.Command{
		Use:   "delete QUEUE NAME",
		Short: "Delete a schedule",
		Args:  argsBetween(2, 2, "QUEUE NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withQueue(cmd, args[0], func(ctx context.Context, q *client.Queue) error {
				ok, err := q.DeleteSchedule(ctx, args[1])
				if err != nil {
					return failed(fmt.Sprintf("delete schedule %s of %s", args[1], args[0]), err)
				}
				if !ok {
					return fmt.Errorf("queue %s has no schedule %s", args[0], args[1])
				}
				return a.printer(cmd).write(fmt.Appendf(nil, "deleted %s\n", args[1]))
			})
		},
	}
	cmd.AddCommand(put, list, del)
	return cmd
}

func (a *app) printSchedules(cmd *cobra.Command, ss []*queuepb.Schedule) error {
	p := a.printer(cmd)
	for _, s := range ss {
		if p.format == outputJSON {
			if err := p.json(s); err != nil {
				return err
			}
			continue
		}
		next := "-"
		if s.NextMs > 0 {
			next = time.UnixMilli(s.NextMs).UTC().Format(time.RFC3339)
		}
		if err := p.write(fmt.Appendf(nil, "%s %q next=%s\n", s.Name, s.Cron, next)); err != nil {
			return err
		}
	}
	return nil
}
