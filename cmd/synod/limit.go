package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/client"
)

func (a *app) limitCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "limit",
		Short: "Define rate limits and take from them",
		Long: `Rate limits shared by every node of the cluster. A limit is data: a name, an
algorithm and its parameters, and a mode; it applies per key (a tenant, a
user, an address). Changes take effect on every node within a second.

Algorithms: gcra (a token bucket: --rate and --burst), sliding-window,
fixed-window and calendar-window (--rate N/minute|hour|day|week|month, in
--time-zone), and concurrency (--max permits, each held on a lease).

Modes: strict (the owner of the keys, the leader of their range, decides;
a failover never admits beyond the limit), local (each node decides from a
share of the capacity granted by the owner; over-admission is bounded by
the shares handed out, --local-share percent of the capacity), shadow
(decided and counted as strict, never refused).`,
	}
	cmd.AddCommand(a.limitSetCmd(), a.limitTakeCmd(), a.limitRunCmd(), a.limitListCmd(), a.limitGetCmd(), a.limitDeleteCmd(), a.limitStatsCmd())
	return cmd
}

var algorithms = map[string]synodpb.Limit_Algorithm{
	"gcra":            synodpb.Limit_GCRA,
	"sliding-window":  synodpb.Limit_SLIDING_WINDOW,
	"fixed-window":    synodpb.Limit_FIXED_WINDOW,
	"calendar-window": synodpb.Limit_CALENDAR_WINDOW,
	"concurrency":     synodpb.Limit_CONCURRENCY,
}

var modes = map[string]synodpb.Limit_Mode{
	"strict": synodpb.Limit_STRICT,
	"local":  synodpb.Limit_LOCAL,
	"shadow": synodpb.Limit_SHADOW,
}

var calendarUnits = map[string]synodpb.Limit_CalendarUnit{
	"minute": synodpb.Limit_MINUTE,
	"hour":   synodpb.Limit_HOUR,
	"day":    synodpb.Limit_DAY,
	"week":   synodpb.Limit_WEEK,
	"month":  synodpb.Limit_MONTH,
}

// rateUnits are the shorthands of --rate's period.
var rateUnits = map[string]time.Duration{
	"ms": time.Millisecond, "s": time.Second, "sec": time.Second, "second": time.Second,
	"m": time.Minute, "min": time.Minute, "minute": time.Minute,
	"h": time.Hour, "hour": time.Hour, "d": 24 * time.Hour, "day": 24 * time.Hour,
}

// parseRate parses N/PERIOD into the limit's count and either a period (a
// unit or a Go duration: 100/s, 1000/10m, 5/1m30s) or, for a calendar
// window, a calendar unit.
func parseRate(rate string, l *synodpb.Limit) error {
	n, per, ok := strings.Cut(rate, "/")
	count, err := strconv.ParseInt(n, 10, 64)
	if !ok || err != nil || count <= 0 {
		return usageErrorf("--rate %q: want N/PERIOD (100/s, 1000/10m, 5000/day)", rate)
	}
	l.Limit = count
	if l.Algorithm == synodpb.Limit_CALENDAR_WINDOW {
		u, ok := calendarUnits[per]
		if !ok {
			return usageErrorf("--rate %q: a calendar window is per minute, hour, day, week or month", rate)
		}
		l.CalendarUnit = u
		return nil
	}
	d, ok := rateUnits[per]
	if !ok {
		if d, err = time.ParseDuration(per); err != nil || d < time.Millisecond {
			return usageErrorf("--rate %q: the period is a unit (s, m, h, day) or a duration of at least 1ms", rate)
		}
	}
	if d%time.Millisecond != 0 {
		return usageErrorf("--rate %q: the period must be whole milliseconds", rate)
	}
	l.PeriodMs = d.Milliseconds()
	return nil
}

// formatRate is parseRate's inverse.
func formatRate(l *synodpb.Limit) string {
	switch l.Algorithm {
	case synodpb.Limit_CONCURRENCY:
		return "-"
	case synodpb.Limit_CALENDAR_WINDOW:
		for name, u := range calendarUnits {
			if u == l.CalendarUnit {
				return fmt.Sprintf("%d/%s", l.Limit, name)
			}
		}
	}
	d := time.Duration(l.PeriodMs) * time.Millisecond
	switch d {
	case time.Second:
		return fmt.Sprintf("%d/s", l.Limit)
	case time.Minute:
		return fmt.Sprintf("%d/m", l.Limit)
	case time.Hour:
		return fmt.Sprintf("%d/h", l.Limit)
	case 24 * time.Hour:
		return fmt.Sprintf("%d/day", l.Limit)
	}
	return fmt.Sprintf("%d/%s", l.Limit, d)
}

func nameOf[T comparable](m map[string]T, v T) string {
	for k, x := range m {
		if x == v {
			return k
		}
	}
	return fmt.Sprint(v)
}

func (a *app) limitSetCmd() *cobra.Command {
	var rate, algorithm, mode, tz string
	var burst, maxPermits int64
	var share int
	var failOpen bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "set NAME --rate N/PERIOD | --max N",
		Short: "Create or change a limit",
		Long: `Create or change the limit NAME. A change keeps its keys' state when the
algorithm and window stay (a new rate or burst applies to the state as is).

  synod limit set api --rate 100/s --burst 200
  synod limit set signups --rate 1000/day --algorithm calendar-window --time-zone Europe/Paris
  synod limit set exports --algorithm concurrency --max 4`,
		Args: argsBetween(1, 1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			l := &synodpb.Limit{Name: args[0], Burst: burst, Max: maxPermits, FailOpen: failOpen, TimeZone: tz, LocalSharePercent: int32(share)}
			alg, ok := algorithms[algorithm]
			if !ok {
				return usageErrorf("--algorithm %q: want gcra, sliding-window, fixed-window, calendar-window or concurrency", algorithm)
			}
			l.Algorithm = alg
			if l.Mode, ok = modes[mode]; !ok {
				return usageErrorf("--mode %q: want strict, local or shadow", mode)
			}
			switch {
			case alg == synodpb.Limit_CONCURRENCY && rate != "":
				return usageErrorf("a concurrency limit takes --max, not --rate")
			case alg == synodpb.Limit_CONCURRENCY && maxPermits <= 0:
				return usageErrorf("a concurrency limit needs --max")
			case alg != synodpb.Limit_CONCURRENCY && rate == "":
				return usageErrorf("--rate is required (N/PERIOD)")
			case alg != synodpb.Limit_CONCURRENCY:
				if err := parseRate(rate, l); err != nil {
					return err
				}
			}
			if timeout < 0 {
				return usageErrorf("--timeout must not be negative")
			}
			l.TimeoutMs = timeout.Milliseconds()
			return a.withSynodClient(cmd.Context(), func(c *client.Client) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), a.opts.client.commandTimeout)
				defer cancel()
				resp, err := c.Limits().SetLimit(ctx, &synodpb.SetLimitRequest{Limit: l})
				if err != nil {
					return fmt.Errorf("set limit %s: %w", l.Name, err)
				}
				p := a.printer(cmd)
				if p.format == outputJSON {
					return p.json(resp)
				}
				verb := "changed"
				if resp.Created {
					verb = "created"
				}
				return p.write(fmt.Appendf(nil, "limit %s %s (revision %d)\n", l.Name, verb, resp.Limit.Revision))
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&rate, "rate", "", "N/PERIOD: tokens per period (gcra) or per window; the period is a unit (s, m, h, day) or a duration; minute, hour, day, week or month for a calendar window")
	f.Int64Var(&burst, "burst", 0, "gcra: the bucket's size (default: N of --rate)")
	f.StringVar(&algorithm, "algorithm", "gcra", "gcra, sliding-window, fixed-window, calendar-window or concurrency")
	f.Int64Var(&maxPermits, "max", 0, "concurrency: the permits held at once")
	f.StringVar(&mode, "mode", "strict", "strict, local or shadow")
	f.BoolVar(&failOpen, "fail-open", false, "allow requests when no decision can be made in time (default: refuse them)")
	f.DurationVar(&timeout, "timeout", 0, "how long a decision may wait for the owner (default 2s)")
	f.StringVar(&tz, "time-zone", "", "calendar-window: the time zone of the windows (an IANA name; default UTC)")
	f.IntVar(&share, "local-share", 0, "local mode: percent of a key's capacity handed out to nodes at once (default 5)")
	return cmd
}

// takeJSON is what `limit take -w json` prints.
type takeJSON struct {
	Allowed      bool  `json:"allowed"`
	Remaining    int64 `json:"remaining"`
	RetryAfterMs int64 `json:"retry_after_ms"`
	ResetAfterMs int64 `json:"reset_after_ms"`
	Limit        int64 `json:"limit"`
	WaitMs       int64 `json:"wait_ms,omitempty"`
	WouldRefuse  bool  `json:"would_refuse,omitempty"`
	Unavailable  bool  `json:"unavailable,omitempty"`
}

func (a *app) limitTakeCmd() *cobra.Command {
	var cost int64
	var peek bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "take NAME [KEY]",
		Short: "Take tokens from a limit: exit 0 when allowed, 1 when refused",
		Long: `Ask for --cost tokens of limit NAME for KEY (default: the empty key). Exits 0
when allowed, 1 when refused (retry_after says when to retry: never early).
With --wait, a request that would be allowed within that time books its
tokens and waits for them before exiting 0. With --peek nothing is taken.`,
		Args: argsBetween(1, 2, "NAME [KEY]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cost < 0 || wait < 0 {
				return usageErrorf("--cost and --wait must not be negative")
			}
			key := ""
			if len(args) == 2 {
				key = args[1]
			}
			return a.withSynodClient(cmd.Context(), func(c *client.Client) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), a.opts.client.commandTimeout)
				defer cancel()
				req := &synodpb.TakeRequest{Items: []*synodpb.TakeItem{{Limit: args[0], Key: []byte(key), Cost: cost}}, Peek: peek, MaxWaitMs: wait.Milliseconds()}
				resp, err := c.Limits().Take(ctx, req)
				if err != nil {
					return fmt.Errorf("take from %s: %w", args[0], err)
				}
				d := resp.Decisions[0]
				if err := printDecision(a.printer(cmd), d); err != nil {
					return err
				}
				if !resp.Allowed {
					return exitCodeError{1}
				}
				return sleepCtx(cmd.Context(), time.Duration(d.WaitMs)*time.Millisecond)
			})
		},
	}
	f := cmd.Flags()
	f.Int64Var(&cost, "cost", 1, "tokens to take")
	f.BoolVar(&peek, "peek", false, "decide without taking anything")
	f.DurationVar(&wait, "wait", 0, "wait up to this long for the tokens instead of being refused")
	return cmd
}

func printDecision(p *printer, d *synodpb.Decision) error {
	if p.format == outputJSON {
		return p.jsonValue(takeJSON{Allowed: d.Allowed, Remaining: d.Remaining, RetryAfterMs: d.RetryAfterMs, ResetAfterMs: d.ResetAfterMs,
			Limit: d.Limit, WaitMs: d.WaitMs, WouldRefuse: d.WouldRefuse, Unavailable: d.Unavailable})
	}
	var b bytes.Buffer
	if d.Allowed {
		b.WriteString("allowed")
	} else {
		b.WriteString("refused")
	}
	fmt.Fprintf(&b, " remaining=%d limit=%d", d.Remaining, d.Limit)
	if !d.Allowed && !d.Unavailable {
		fmt.Fprintf(&b, " retry_after=%s", time.Duration(d.RetryAfterMs)*time.Millisecond)
	}
	if d.WaitMs > 0 {
		fmt.Fprintf(&b, " wait=%s", time.Duration(d.WaitMs)*time.Millisecond)
	}
	if d.WouldRefuse {
		b.WriteString(" (shadow: would refuse)")
	}
	if d.Unavailable {
		b.WriteString(" (no decision in time)")
	}
	b.WriteByte('\n')
	return p.write(b.Bytes())
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *app) limitRunCmd() *cobra.Command {
	var cost int64
	var ttl int
	var killAfter time.Duration
	cmd := &cobra.Command{
		Use:   "run NAME [KEY] -- CMD [ARGS...]",
		Short: "Wait for a slot of a limit, then run a command",
		Long: `Wait for capacity of limit NAME for KEY (--cost tokens of a rate limit, or a
permit of a concurrency limit), then run CMD and exit with its exit code.

A permit is held on a session whose lease lives --ttl seconds after its
last renewal, and released when CMD exits; if it is lost (the lease ended),
CMD is sent SIGTERM, then SIGKILL after --kill-after.`,
		Args: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			if dash < 1 || dash > 2 || dash == len(args) {
				return usageErrorf("%s takes NAME [KEY] -- CMD [ARGS...]", cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			name, key, argv := args[0], "", args[dash:]
			if dash == 2 {
				key = args[1]
			}
			if err := positive("ttl", ttl); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return a.withSynodClient(ctx, func(c *client.Client) error {
				gctx, cancel := context.WithTimeout(ctx, a.opts.client.commandTimeout)
				l, err := c.GetLimit(gctx, name)
				cancel()
				if err != nil {
					return fmt.Errorf("limit %s: %w", name, err)
				}
				if l.Algorithm != synodpb.Limit_CONCURRENCY {
					if err := c.Limiter(name, key).WaitN(ctx, int(cost)); err != nil {
						if ctx.Err() != nil {
							return nil // interrupted while waiting
						}
						return fmt.Errorf("wait for %s: %w", name, err)
					}
					return runCommand(ctx, cmd, argv, nil, nil, killAfter)
				}
				return a.withSession(ctx, ttl, func(s *client.Session) error {
					p, err := c.Acquire(ctx, s, name, key)
					if err != nil {
						if ctx.Err() != nil {
							return nil
						}
						return fmt.Errorf("acquire a permit of %s: %w", name, err)
					}
					defer func() {
						rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.opts.client.commandTimeout)
						defer cancel()
						_ = p.Release(rctx) // the session's end releases it anyway
					}()
					env := []string{"SYNOD_LIMIT_PERMIT=" + p.ID()}
					return runCommand(ctx, cmd, argv, env, p.Lost(), killAfter)
				})
			})
		},
	}
	f := cmd.Flags()
	f.Int64Var(&cost, "cost", 1, "tokens to wait for (rate limits)")
	f.IntVar(&ttl, "ttl", 10, "TTL in seconds of the session holding a permit")
	f.DurationVar(&killAfter, "kill-after", 10*time.Second, "after SIGTERM, how long the command has before SIGKILL")
	return cmd
}

// runCommand runs argv until it exits, lost is closed or ctx ends (then
// it stops it: SIGTERM, SIGKILL after killAfter), and returns its exit
// code as an exitCodeError (nil for 0).
func runCommand(ctx context.Context, cmd *cobra.Command, argv, env []string, lost <-chan struct{}, killAfter time.Duration) error {
	c := exec.Command(argv[0], argv[1:]...)
	c.Stdin, c.Stdout, c.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	c.Env = append(os.Environ(), env...)
	if err := c.Start(); err != nil {
		return fmt.Errorf("run %s: %w", argv[0], err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }() // owned: ends when the command exits, which stop guarantees
	stop := func(why string) error {
		fmt.Fprintf(cmd.ErrOrStderr(), "synod limit: %s; stopping %s (SIGTERM)\n", why, argv[0])
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
	case <-lost:
		err = stop("permit lost")
	case <-ctx.Done():
		err = stop("interrupted")
	}
	return exitStatus(argv[0], err)
}

func (a *app) limitListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the limits",
		Args:  argsBetween(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withSynodClient(cmd.Context(), func(c *client.Client) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), a.opts.client.commandTimeout)
				defer cancel()
				resp, err := c.Limits().ListLimits(ctx, &synodpb.ListLimitsRequest{})
				if err != nil {
					return fmt.Errorf("list limits: %w", err)
				}
				p := a.printer(cmd)
				if p.format == outputJSON {
					return p.json(resp)
				}
				var b bytes.Buffer
				formatTable(&b, limitColumns, resp.Limits)
				return p.write(b.Bytes())
			})
		},
	}
}

var limitColumns = []column[*synodpb.Limit]{
	{"NAME", func(l *synodpb.Limit) string { return l.Name }},
	{"ALGORITHM", func(l *synodpb.Limit) string { return nameOf(algorithms, l.Algorithm) }},
	{"RATE", formatRate},
	{"BURST/MAX", func(l *synodpb.Limit) string {
		switch {
		case l.Algorithm == synodpb.Limit_CONCURRENCY:
			return strconv.FormatInt(l.Max, 10)
		case l.Algorithm == synodpb.Limit_GCRA && l.Burst > 0:
			return strconv.FormatInt(l.Burst, 10)
		}
		return "-"
	}},
	{"MODE", func(l *synodpb.Limit) string { return nameOf(modes, l.Mode) }},
	{"ON FAILURE", func(l *synodpb.Limit) string {
		if l.FailOpen {
			return "allow"
		}
		return "refuse"
	}},
}

func (a *app) limitGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Show a limit",
		Args:  argsBetween(1, 1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withSynodClient(cmd.Context(), func(c *client.Client) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), a.opts.client.commandTimeout)
				defer cancel()
				resp, err := c.Limits().GetLimit(ctx, &synodpb.GetLimitRequest{Name: args[0]})
				if err != nil {
					return fmt.Errorf("get limit %s: %w", args[0], err)
				}
				p := a.printer(cmd)
				if p.format == outputJSON {
					return p.json(resp)
				}
				l := resp.Limit
				var b bytes.Buffer
				fmt.Fprintf(&b, "name: %s\nalgorithm: %s\n", l.Name, nameOf(algorithms, l.Algorithm))
				if l.Algorithm == synodpb.Limit_CONCURRENCY {
					fmt.Fprintf(&b, "max: %d\n", l.Max)
				} else {
					fmt.Fprintf(&b, "rate: %s\n", formatRate(l))
					if l.Burst > 0 {
						fmt.Fprintf(&b, "burst: %d\n", l.Burst)
					}
					if l.TimeZone != "" {
						fmt.Fprintf(&b, "time zone: %s\n", l.TimeZone)
					}
				}
				fmt.Fprintf(&b, "mode: %s\nfail open: %v\ntimeout: %s\n", nameOf(modes, l.Mode), l.FailOpen, time.Duration(l.TimeoutMs)*time.Millisecond)
				if l.Mode == synodpb.Limit_LOCAL {
					fmt.Fprintf(&b, "local share: %d%%\n", l.LocalSharePercent)
				}
				fmt.Fprintf(&b, "revision: %d\n", l.Revision)
				return p.write(b.Bytes())
			})
		},
	}
}

func (a *app) limitDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a limit, its keys' state and its permits",
		Args:  argsBetween(1, 1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withSynodClient(cmd.Context(), func(c *client.Client) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), a.opts.client.commandTimeout)
				defer cancel()
				resp, err := c.Limits().DeleteLimit(ctx, &synodpb.DeleteLimitRequest{Name: args[0]})
				if err != nil {
					return fmt.Errorf("delete limit %s: %w", args[0], err)
				}
				if !resp.Deleted {
					return fmt.Errorf("delete limit %s: %w", args[0], status.Error(codes.NotFound, "no such limit"))
				}
				p := a.printer(cmd)
				if p.format == outputJSON {
					return p.json(resp)
				}
				return p.write(fmt.Appendf(nil, "limit %s deleted\n", args[0]))
			})
		},
	}
}

func (a *app) limitStatsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stats NAME",
		Short: "Show a limit's decisions and owner",
		Long: `Show the decisions the owner of limit NAME's keys made (or had reported by
nodes deciding locally) since it took over, the keys it holds, the bound on
over-admission (local shares outstanding), and its checkpoints.`,
		Args: argsBetween(1, 1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withSynodClient(cmd.Context(), func(c *client.Client) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), a.opts.client.commandTimeout)
				defer cancel()
				s, err := c.Limits().LimitStats(ctx, &synodpb.LimitStatsRequest{Name: args[0]})
				if err != nil {
					return fmt.Errorf("stats of limit %s: %w", args[0], err)
				}
				p := a.printer(cmd)
				if p.format == outputJSON {
					return p.json(s)
				}
				var b bytes.Buffer
				fmt.Fprintf(&b, "limit: %s\nowner: %x (for %s)\nallowed: %d\nrefused: %d\n", args[0], s.Owner,
					(time.Duration(s.OwnerSinceMs) * time.Millisecond).Round(time.Second), s.Allowed, s.Refused)
				if s.Limit.GetMode() == synodpb.Limit_SHADOW {
					fmt.Fprintf(&b, "would refuse: %d\n", s.WouldRefuse)
				}
				if s.Limit.GetAlgorithm() == synodpb.Limit_CONCURRENCY {
					fmt.Fprintf(&b, "permits held: %d\n", s.Permits)
				} else {
					fmt.Fprintf(&b, "keys: %d\nover-admission bound: %d\ncheckpoints: %d\n", s.Keys, s.OverAdmissionBound, s.Checkpoints)
				}
				return p.write(b.Bytes())
			})
		},
	}
}
