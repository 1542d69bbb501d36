package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == memberCommand {
		os.Exit(runMember(os.Args[2:]))
	}
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// options are the command's flags.
type options struct {
	out          string
	dir          string
	systems      []string
	workloads    []string
	warmup       time.Duration
	duration     time.Duration
	clients      int
	conns        int
	valueSize    int
	getKeys      int
	watchers     int
	watchPutRate float64
	lockClients  int
	profileDir   string
	profile      []string
	keep         bool

	args []string // as given, for the report
}

func parseOptions(args []string) (*options, error) {
	o := &options{args: args}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var systems, names, profile string
	fs.StringVar(&o.out, "out", "", "Markdown file to write the results into (its generated section is replaced; empty: standard output)")
	fs.StringVar(&o.dir, "dir", os.TempDir(), "directory on the disk to measure, for the members' data")
	fs.StringVar(&systems, "systems", "etcd,synod", "systems to run, in order")
	fs.StringVar(&names, "workloads", "all", "comma-separated workloads to run: "+strings.Join(workloadNames(), ", "))
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "load before each measured window")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "measured window of each workload")
	fs.IntVar(&o.clients, "clients", 1000, "concurrent clients of the many-client workloads")
	fs.IntVar(&o.conns, "conns", 100, "gRPC connections the clients share")
	fs.IntVar(&o.valueSize, "value-size", 256, "bytes per value written")
	fs.IntVar(&o.getKeys, "get-keys", 10000, "keys preloaded for the get workloads")
	fs.IntVar(&o.watchers, "watchers", 1000, "watchers of the watch workload, on one prefix")
	fs.Float64Var(&o.watchPutRate, "watch-put-rate", 20, "puts per second under the watched prefix")
	fs.IntVar(&o.lockClients, "lock-clients", 100, "sessions contending for the lock")
	fs.StringVar(&o.profileDir, "profile-dir", "", "save CPU and allocation profiles of the members here (perturbs the numbers)")
	fs.StringVar(&profile, "profile", "put-1000,txn-4-puts", "workloads to profile when -profile-dir is set")
	fs.BoolVar(&o.keep, "keep", false, "keep the members' data directories and logs")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	o.systems = splitList(systems)
	for _, s := range o.systems {
		if s != "etcd" && s != "synod" {
			return nil, fmt.Errorf("-systems: unknown system %q", s)
		}
	}
	o.workloads = workloadNames()
	if names != "all" {
		o.workloads = splitList(names)
		for _, n := range o.workloads {
			if !slices.Contains(workloadNames(), n) {
				return nil, fmt.Errorf("-workloads: unknown workload %q", n)
			}
		}
	}
	o.profile = splitList(profile)
	if o.clients < 1 || o.conns < 1 || o.watchers < 1 || o.lockClients < 1 || o.watchPutRate <= 0 || o.getKeys < 1 {
		return nil, errors.New("counts and rates must be positive")
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func workloadNames() []string {
	var names []string
	for _, w := range workloads() {
		names = append(names, w.name)
	}
	return names
}

// systemRun is everything measured on one system.
type systemRun struct {
	system     string
	loadBefore string
	results    map[string]*result // by workload name
	// keys is the number of keys written by the whole run (workloads,
	// preloading and watched puts); disk the allocated size of a member's
	// data dir at its end (mean of the members).
	keys int64
	disk int64
	// elapsed is the duration of the system's run; othersCPU the CPU time
	// other processes of the machine used meanwhile (neither this harness
	// nor the members): the interference the numbers suffered.
	elapsed   time.Duration
	othersCPU time.Duration
}

// othersPercent is the share of the machine's CPU other processes used
// during the run.
func (sr *systemRun) othersPercent() float64 {
	if sr.elapsed <= 0 {
		return 0
	}
	return 100 * sr.othersCPU.Seconds() / (sr.elapsed.Seconds() * float64(runtime.NumCPU()))
}

func run(args []string) error {
	o, err := parseOptions(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	work, err := os.MkdirTemp(o.dir, "synod-bench-")
	if err != nil {
		return fmt.Errorf("create work dir: %w", err)
	}
	if o.keep {
		logf("data and logs kept in %s", work)
	} else {
		defer os.RemoveAll(work)
	}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return fmt.Errorf("create profile dir: %w", err)
		}
	}

	started := time.Now()
	logf("measuring the disk: 1,000 sequential 4 KiB write+fdatasync in %s", work)
	mach, err := probeMachine(work)
	if err != nil {
		return err
	}
	logf("fsync: p50 %v, p99 %v", mach.fsync.p50, mach.fsync.p99)

	launchers := map[string]launcher{}
	for _, system := range o.systems {
		var l launcher
		switch system {
		case "etcd":
			l, err = etcdLauncher()
		case "synod":
			logf("building %s", synodMemberPackage)
			l, err = buildSynodMember(ctx, work)
		}
		if err != nil {
			return err
		}
		launchers[system] = l
	}

	var runs []*systemRun
	for _, system := range o.systems {
		sr, err := runSystem(ctx, o, system, filepath.Join(work, system), launchers[system])
		if err != nil {
			return fmt.Errorf("%s: %w", system, err)
		}
		runs = append(runs, sr)
	}
	rep := &report{opts: o, machine: mach, versions: probeVersions(), runs: runs, started: started, took: time.Since(started)}
	md := rep.markdown()
	if o.out == "" {
		fmt.Print(md)
		return nil
	}
	if err := writeGenerated(o.out, md); err != nil {
		return err
	}
	logf("wrote %s", o.out)
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// runSystem starts a cluster of system, runs every workload on it back to
// back and stops it.
func runSystem(ctx context.Context, o *options, system, dir string, l launcher) (*systemRun, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	sr := &systemRun{system: system, loadBefore: loadAverage(), results: map[string]*result{}}
	logf("%s: starting 3 members (load average %s)", system, sr.loadBefore)
	start := time.Now()
	busyBefore, err := busyCPU()
	if err != nil {
		return nil, err
	}
	selfBefore := selfCPU()
	c, err := startCluster(ctx, system, dir, l)
	if err != nil {
		return nil, err
	}
	defer c.stop()
	e, err := newEnv(ctx, o, c)
	if err != nil {
		return nil, err
	}
	defer e.close()

	for _, w := range workloads() {
		if !slices.Contains(o.workloads, w.name) {
			continue
		}
		res, err := runWorkload(ctx, e, w)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("workload %s: %w", w.name, err)
			}
			// A failing workload is a result too: record it, and go on once
			// the cluster has a leader again. A member that died ends the
			// system's run.
			logf("%s %-17s FAILED: %v", system, w.name, err)
			res = &result{na: "failed: " + oneLine(err.Error(), 60)}
			if aliveErr := c.checkAlive(); aliveErr != nil {
				return nil, aliveErr
			}
			if _, lerr := c.waitLeader(ctx, 30*time.Second); lerr != nil {
				return nil, fmt.Errorf("after workload %s failed (%v): %w", w.name, err, lerr)
			}
		}
		sr.results[w.name] = res
		if res.na != "" {
			logf("%s %-17s n/a: %s", system, w.name, res.na)
			continue
		}
		logf("%s %-17s %9.0f ops/s  p50 %-9v p99 %-9v p999 %-9v cpu %.3fs/kop  rss %s  errors %d",
			system, w.name, res.throughput(), round(res.percentile(50)), round(res.percentile(99)),
			round(res.percentile(99.9)), res.cpuPerKOps(), mib(res.peakRSS), res.errors)
	}
	// The members have run only during this system's run: their lifetime
	// CPU is theirs within it.
	members, err := c.stats()
	if err != nil {
		return nil, err
	}
	busyAfter, err := busyCPU()
	if err != nil {
		return nil, err
	}
	sr.elapsed = time.Since(start)
	sr.othersCPU = max(0, (busyAfter-busyBefore)-(selfCPU()-selfBefore)-members.cpu)
	logf("%s: other processes used %.0f%% of the machine meanwhile", system, sr.othersPercent())
	sr.keys = e.extraKeys.Load()
	for _, res := range sr.results {
		sr.keys += res.keys
	}
	if sr.disk, err = c.diskUsage(); err != nil {
		return nil, err
	}
	return sr, nil
}

func newEnv(ctx context.Context, o *options, c *cluster) (_ *env, err error) {
	e := &env{opts: o, cluster: c, value: make([]byte, o.valueSize)}
	for i := range e.value {
		e.value[i] = 'a' + byte(i%26)
	}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	eps := c.endpoints()
	for i := range o.conns {
		cli, err := newClient(eps[i%len(eps)])
		if err != nil {
			return nil, err
		}
		e.conns = append(e.conns, cli)
	}
	lead, err := c.waitLeader(ctx, 30*time.Second)
	if err != nil {
		return nil, err
	}
	if e.leader, err = newClient(eps[lead]); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *env) close() {
	for _, cli := range append(e.conns, e.leader) {
		if cli != nil {
			_ = cli.Close()
		}
	}
}

// runWorkload sets a workload up, measures it and tears it down. A system
// that does not implement it yields a result marked n/a.
func runWorkload(ctx context.Context, e *env, w workload) (*result, error) {
	setupCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	inst, err := w.setup(setupCtx, e)
	cancel()
	if notImplemented(err) {
		return &result{na: "not implemented yet"}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	defer inst.close()
	win := window{cluster: e.cluster, warmup: e.opts.warmup, duration: e.opts.duration}
	if e.opts.profileDir != "" && slices.Contains(e.opts.profile, w.name) {
		win.during = func(ctx context.Context, d time.Duration) {
			if err := profileMembers(ctx, e.cluster, w.name, e.opts.profileDir, d); err != nil {
				logf("profile %s: %v", w.name, err)
			}
		}
	}
	res, err := win.measure(ctx, inst, w.keysPerOp)
	if notImplemented(err) {
		return &result{na: "not implemented yet"}, nil
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

func round(d time.Duration) time.Duration {
	switch {
	case d > 100*time.Millisecond:
		return d.Round(time.Millisecond)
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

func mib(b uint64) string { return commas(int64(math.Round(float64(b)/(1<<20)))) + " MiB" }
