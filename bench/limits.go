package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	guber "github.com/gubernator-io/gubernator/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/bench/internal/member"
)

// limitsCommand is the subcommand that measures Synod's rate limiters
// against gubernator:
//
//	cd bench && go run . limits
//
// It starts three Synod members (synodmember) and three gubernator
// instances (gubermember, github.com/gubernator-io/gubernator/v2 with its
// defaults, peers given statically) side by side, and drives each system
// with -callers concurrent callers, closed loop, over -conns gRPC
// connections spread evenly over the three members, each call one decision
// of cost 1 for a key drawn uniformly from -keys keys, all under one limit
// of -rate tokens per -period (burst -burst). Systems, measured in turns
// over -rounds rounds (the first alternating):
//
//   - gubernator: the default behaviour (BATCHING): the instance a call
//     reaches forwards it to the key's owner on a hash ring, batched;
//   - gubernator-global: GLOBAL: every instance answers from its own copy
//     and sends hits to the owner asynchronously;
//   - synod-strict: the owner (the leader) decides every call; other
//     members forward to it in batches;
//   - synod-local: each member decides from shares granted by the owner.
//
// Per system it reports decisions per second, latency percentiles, the
// share allowed, server CPU per 1,000 decisions, and for Synod the Raft
// log entries appended per 1,000 decisions (the leader's raft index over
// the window: checkpoints, and anything else). It prints Markdown.
const limitsCommand = "limits"

type limitsOptions struct {
	dir      string
	systems  []string
	rounds   int
	warmup   time.Duration
	duration time.Duration
	callers  int
	conns    int
	keys     int
	rate     int64
	period   time.Duration
	burst    int64
}

func parseLimitsOptions(args []string) (*limitsOptions, error) {
	o := &limitsOptions{}
	fs := flag.NewFlagSet(limitsCommand, flag.ContinueOnError)
	var systems string
	fs.StringVar(&o.dir, "dir", os.TempDir(), "directory for the members' data")
	fs.StringVar(&systems, "systems", "gubernator,gubernator-global,synod-strict,synod-local", "systems to measure")
	fs.IntVar(&o.rounds, "rounds", 2, "rounds per system, interleaved")
	fs.DurationVar(&o.warmup, "warmup", 5*time.Second, "load before each measured window")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured window per system and round")
	fs.IntVar(&o.callers, "callers", 1000, "concurrent callers")
	fs.IntVar(&o.conns, "conns", 99, "gRPC connections, spread over the members")
	fs.IntVar(&o.keys, "keys", 10000, "keys the calls are spread over")
	fs.Int64Var(&o.rate, "rate", 1000, "tokens per period of the limit, per key")
	fs.DurationVar(&o.period, "period", time.Second, "the limit's period")
	fs.Int64Var(&o.burst, "burst", 0, "the limit's burst (default: -rate)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	o.systems = splitList(systems)
	if o.burst == 0 {
		o.burst = o.rate
	}
	if o.rounds < 1 || o.callers < 1 || o.conns < 1 || o.keys < 1 || o.rate < 1 || o.period < time.Millisecond {
		return nil, errors.New("counts, rates and the period must be positive")
	}
	return o, nil
}

func runLimits(args []string) error {
	o, err := parseLimitsOptions(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	work, err := os.MkdirTemp(o.dir, "synod-bench-limits-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	var synod, guberC *cluster
	needSynod, needGuber := false, false
	for _, s := range o.systems {
		switch s {
		case "synod-strict", "synod-local":
			needSynod = true
		case "gubernator", "gubernator-global":
			needGuber = true
		default:
			return fmt.Errorf("unknown system %q", s)
		}
	}
	if needSynod {
		logf("building %s", synodMemberPackage)
		l, err := buildSynodMember(ctx, work)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(work, "synod"), 0o755); err != nil {
			return err
		}
		if synod, err = startCluster(ctx, "synod", filepath.Join(work, "synod"), l); err != nil {
			return err
		}
		defer synod.stop()
		if err := setSynodLimits(ctx, synod, o); err != nil {
			return err
		}
	}
	if needGuber {
		logf("building gubermember")
		if guberC, err = startGubernator(ctx, work); err != nil {
			return err
		}
		defer guberC.stop()
	}

	results := map[string][]*limitsResult{}
	for round := range o.rounds {
		order := o.systems
		if round%2 == 1 {
			order = reversed(order)
		}
		for _, system := range order {
			c := synod
			if strings.HasPrefix(system, "gubernator") {
				c = guberC
			}
			logf("round %d: %s", round+1, system)
			r, err := measureLimits(ctx, c, system, o)
			if err != nil {
				return fmt.Errorf("%s: %w", system, err)
			}
			logf("  %.0f decisions/s, p50 %v, p99 %v, allowed %.1f%%, raft entries/1000 %.2f",
				r.throughput(), r.percentile(50), r.percentile(99), r.allowedPercent(), r.entriesPerK())
			results[system] = append(results[system], r)
		}
	}
	printLimits(o, results)
	return nil
}

func reversed(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

// The limits' names on Synod.
const (
	synodStrictLimit = "bench-strict"
	synodLocalLimit  = "bench-local"
)

func setSynodLimits(ctx context.Context, c *cluster, o *limitsOptions) error {
	conn, err := grpc.NewClient(c.endpoints()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	cli := synodpb.NewLimitsClient(conn)
	for name, mode := range map[string]synodpb.Limit_Mode{synodStrictLimit: synodpb.Limit_STRICT, synodLocalLimit: synodpb.Limit_LOCAL} {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cli.SetLimit(sctx, &synodpb.SetLimitRequest{Limit: &synodpb.Limit{
			Name: name, Limit: o.rate, PeriodMs: o.period.Milliseconds(), Burst: o.burst, Mode: mode,
		}})
		cancel()
		if err != nil {
			return fmt.Errorf("set limit %s: %w", name, err)
		}
	}
	return nil
}

// startGubernator starts three gubernator instances and waits until each
// knows its three peers.
func startGubernator(ctx context.Context, work string) (*cluster, error) {
	path := filepath.Join(work, "gubermember")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, "github.com/synod-io/synod/bench/gubermember")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build gubermember (run from the bench directory): %w\n%s", err, out)
	}
	addrs, err := freeAddrs(3 * clusterSize)
	if err != nil {
		return nil, err
	}
	var peers []string
	for i := range clusterSize {
		peers = append(peers, fmt.Sprintf("g%d=%s/%s", i+1, addrs[3*i], addrs[3*i+1]))
	}
	c := &cluster{system: "gubernator"}
	for i := range clusterSize {
		a := member.Args{
			Name:           fmt.Sprintf("g%d", i+1),
			DataDir:        filepath.Join(work, fmt.Sprintf("g%d", i+1)),
			ClientAddr:     addrs[3*i],
			PeerAddr:       addrs[3*i+1],
			PprofAddr:      addrs[3*i+2],
			InitialCluster: strings.Join(peers, ","),
		}
		if err := os.MkdirAll(a.DataDir, 0o755); err != nil {
			return nil, err
		}
		m, err := startMember("gubernator", launcher{path: path}, a, filepath.Join(work, a.Name+".log"))
		if err != nil {
			c.stop()
			return nil, err
		}
		c.members = append(c.members, m)
	}
	deadline := time.Now().Add(time.Minute)
	for _, ep := range c.endpoints() {
		for {
			if err := c.checkAlive(); err != nil {
				c.stop()
				return nil, err
			}
			ok := func() bool {
				conn, err := grpc.NewClient(ep, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					return false
				}
				defer conn.Close()
				hctx, cancel := context.WithTimeout(ctx, time.Second)
				defer cancel()
				h, err := guber.NewV1Client(conn).HealthCheck(hctx, &guber.HealthCheckReq{})
				return err == nil && h.PeerCount == clusterSize
			}()
			if ok {
				break
			}
			if time.Now().After(deadline) {
				c.stop()
				return nil, errors.New("gubernator instances did not see their peers within a minute")
			}
			time.Sleep(100 * time.Millisecond) // polling interval
		}
	}
	return c, nil
}

type limitsResult struct {
	*result
	allowed, decided int64
	entries          uint64 // raft log entries appended in the window (Synod)
}

func (r *limitsResult) allowedPercent() float64 {
	if r.decided == 0 {
		return 0
	}
	return 100 * float64(r.allowed) / float64(r.decided)
}

func (r *limitsResult) entriesPerK() float64 {
	if r.ops == 0 {
		return 0
	}
	return float64(r.entries) * 1000 / float64(r.ops)
}

// measureLimits runs one system's load over a warmup and a window.
func measureLimits(ctx context.Context, c *cluster, system string, o *limitsOptions) (*limitsResult, error) {
	var conns []*grpc.ClientConn
	defer func() {
		for _, cc := range conns {
			_ = cc.Close()
		}
	}()
	eps := c.endpoints()
	for i := range o.conns {
		cc, err := grpc.NewClient(eps[i%len(eps)], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		conns = append(conns, cc)
	}
	keys := make([]string, o.keys)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%06d", i)
	}
	out := &limitsResult{}
	var allowed, decided atomic.Int64
	var decide func(ctx context.Context, conn *grpc.ClientConn, key string) (bool, error)
	switch system {
	case "synod-strict", "synod-local":
		name := synodStrictLimit
		if system == "synod-local" {
			name = synodLocalLimit
		}
		decide = func(ctx context.Context, conn *grpc.ClientConn, key string) (bool, error) {
			resp, err := synodpb.NewLimitsClient(conn).Take(ctx, &synodpb.TakeRequest{Items: []*synodpb.TakeItem{{Limit: name, Key: []byte(key), Cost: 1}}})
			if err != nil {
				return false, err
			}
			if resp.Decisions[0].Unavailable {
				return false, errors.New("no decision in time")
			}
			return resp.Allowed, nil
		}
	default:
		behavior := guber.Behavior_BATCHING
		if system == "gubernator-global" {
			behavior = guber.Behavior_GLOBAL
		}
		decide = func(ctx context.Context, conn *grpc.ClientConn, key string) (bool, error) {
			resp, err := guber.NewV1Client(conn).GetRateLimits(ctx, &guber.GetRateLimitsReq{Requests: []*guber.RateLimitReq{{
				Name: "bench", UniqueKey: key, Hits: 1, Limit: o.rate, Duration: o.period.Milliseconds(),
				Burst: o.burst, Algorithm: guber.Algorithm_TOKEN_BUCKET, Behavior: behavior,
			}}})
			if err != nil {
				return false, err
			}
			r := resp.Responses[0]
			if r.Error != "" {
				return false, errors.New(r.Error)
			}
			return r.Status == guber.Status_UNDER_LIMIT, nil
		}
	}
	inst := &instance{
		run: func(ctx context.Context, rec *recorder) error {
			errc := make(chan error, o.callers)
			for i := range o.callers {
				go func() {
					w := rec.worker()
					conn := conns[i%len(conns)]
					rng := rand.New(rand.NewPCG(uint64(i), 18))
					for ctx.Err() == nil {
						key := keys[rng.IntN(len(keys))]
						start := rec.now()
						ok, err := decide(ctx, conn, key)
						end := rec.now()
						if ctx.Err() != nil {
							break
						}
						rec.done(w, start, end, err)
						if err == nil && rec.inWindow(start, end) {
							decided.Add(1)
							if ok {
								allowed.Add(1)
							}
						}
					}
					errc <- nil
				}()
			}
			for range o.callers {
				<-errc
			}
			return nil
		},
		close: func() {},
	}
	var idxBefore uint64
	raftIndex := func() (uint64, error) { return 0, nil }
	if strings.HasPrefix(system, "synod") {
		raftIndex = func() (uint64, error) { return leaderRaftIndex(ctx, c) }
	}
	w := window{cluster: c, warmup: o.warmup, duration: o.duration,
		started: func() { idxBefore, _ = raftIndex() },
		ended: func() {
			after, _ := raftIndex()
			out.entries = after - idxBefore
		},
	}
	res, err := w.measure(ctx, inst, 0)
	if err != nil {
		return nil, err
	}
	out.result = res
	out.allowed, out.decided = allowed.Load(), decided.Load()
	if res.errors > 0 {
		logf("  %d errors, first: %v", res.errors, res.firstErr)
	}
	return out, nil
}

// leaderRaftIndex is the raft index the leader reports.
func leaderRaftIndex(ctx context.Context, c *cluster) (uint64, error) {
	for _, ep := range c.endpoints() {
		cli, err := newClient(ep)
		if err != nil {
			return 0, err
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cli.Status(sctx, ep)
		cancel()
		_ = cli.Close()
		if err == nil && st.Leader == st.Header.GetMemberId() {
			return st.RaftIndex, nil
		}
	}
	return 0, errors.New("no leader")
}

func printLimits(o *limitsOptions, results map[string][]*limitsResult) {
	fmt.Printf("\n%d callers, %d keys, %d gRPC connections over 3 members; limit %d per %s (burst %d) per key, cost 1; %s warmup and %s measured per round, %d rounds.\n\n",
		o.callers, o.keys, o.conns, o.rate, o.period, o.burst, o.warmup, o.duration, o.rounds)
	fmt.Println("| system | decisions/s | per round | p50 | p99 | p99.9 | allowed | server CPU s/1k | Raft entries/1k |")
	fmt.Println("|---|---:|---|---:|---:|---:|---:|---:|---:|")
	for _, system := range o.systems {
		rs := results[system]
		merged := &result{}
		var rounds []string
		var allowed, decided int64
		var entries uint64
		for _, r := range rs {
			merged.ops += r.ops
			merged.window += r.window
			merged.serverCPU += r.serverCPU
			merged.lat = append(merged.lat, r.lat...)
			rounds = append(rounds, fmt.Sprintf("%.0f", r.throughput()))
			allowed += r.allowed
			decided += r.decided
			entries += r.entries
		}
		slices.Sort(merged.lat)
		lr := &limitsResult{result: merged, allowed: allowed, decided: decided, entries: entries}
		raft := "-"
		if strings.HasPrefix(system, "synod") {
			raft = fmt.Sprintf("%.2f", lr.entriesPerK())
		}
		fmt.Printf("| %s | %.0f | %s | %s | %s | %s | %.1f%% | %.3f | %s |\n", system, merged.throughput(), strings.Join(rounds, ", "),
			fmtDur(merged.percentile(50)), fmtDur(merged.percentile(99)), fmtDur(merged.percentile(99.9)), lr.allowedPercent(), merged.cpuPerKOps(), raft)
	}
}
