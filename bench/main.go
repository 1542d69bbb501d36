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
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == memberCommand {
		os.Exit(runMember(os.Args[2:]))
	}
	run := run
	args := os.Args[1:]
	if len(args) > 0 && args[0] == watchMemoryCommand {
		run, args = runWatchMemory, args[1:]
	}
	if len(args) > 0 && args[0] == limitsCommand {
		run, args = runLimits, args[1:]
	}
	if err := run(args); err != nil {
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
	rounds       int
	clients      int
	conns        int
	valueSize    int
	getKeys      int
	watchers     int
	watchPutRate float64
	lockClients  int
	// dataRanges is the number of static data ranges Synod's members
	// bootstrap (ranges.go); 1 is today's one range over every key.
	dataRanges int
	profileDir string
	profile    []string
	keep       bool

	// The lease scenarios (leasescale.go), run instead of the workloads
	// when leaseScenarios is set.
	leaseScenarios []string
	idleLeases     []int
	idleWindow     time.Duration
	idleSettle     time.Duration
	stormLeases    int
	stormTTL       time.Duration
	stormPutRate   float64
	stormTimeout   time.Duration

	// The idle-ranges scenario (rangesidle.go), run instead of the
	// workloads when rangesIdle is set: the numbers of data ranges,
	// ascending. It shares idleWindow, idleSettle and rounds with the idle
	// lease scenario.
	rangesIdle []int

	// The bulk-load scenario (bulk.go), run instead of the workloads when
	// bulkSizes is set.
	bulkSizes   []int
	bulkBytes   int64
	bulkClients int

	// The etcd-tool mode (etcdtool.go), run instead of the workloads when
	// etcdTool is set.
	etcdTool      []string
	etcdToolScale float64

	args []string // as given, for the report
}

func parseOptions(args []string) (*options, error) {
	o := &options{args: args}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var systems, names, profile string
	fs.StringVar(&o.out, "out", "", "Markdown file to write the results into (its generated section is replaced; empty: standard output)")
	fs.StringVar(&o.dir, "dir", os.TempDir(), "directory on the disk to measure, for the members' data")
	fs.StringVar(&systems, "systems", "etcd,synod", "systems to compare (all run at once; the first to measure alternates)")
	fs.StringVar(&names, "workloads", "all", "comma-separated workloads to run: "+strings.Join(workloadNames(), ", "))
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "load before each measured window")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured window of each workload in each round")
	fs.IntVar(&o.rounds, "rounds", 2, "rounds of each workload per system, interleaved across the systems")
	fs.IntVar(&o.clients, "clients", 1000, "concurrent clients of the many-client workloads")
	fs.IntVar(&o.conns, "conns", 100, "gRPC connections the clients share")
	fs.IntVar(&o.valueSize, "value-size", 256, "bytes per value written")
	fs.IntVar(&o.getKeys, "get-keys", 10000, "keys preloaded for the get workloads")
	fs.IntVar(&o.watchers, "watchers", 1000, "watchers of the watch workload, on one prefix")
	fs.Float64Var(&o.watchPutRate, "watch-put-rate", 20, "puts per second under the watched prefix")
	fs.IntVar(&o.lockClients, "lock-clients", 100, "sessions contending for the lock")
	fs.IntVar(&o.dataRanges, "data-ranges", 1, fmt.Sprintf("static data ranges Synod's members bootstrap (1-%d), split so that the put, get and txn workloads spread their keys over all of them (txn-2-ranges then spans 2 ranges); etcd ignores it (one Raft group holds every key)", maxDataRanges))
	fs.StringVar(&o.profileDir, "profile-dir", "", "save CPU and allocation profiles of the members here (perturbs the numbers)")
	fs.StringVar(&profile, "profile", "put-1000,txn-4-puts", "workloads to profile when -profile-dir is set")
	fs.BoolVar(&o.keep, "keep", false, "keep the members' data directories and logs")
	var leases, idleLeases string
	fs.StringVar(&leases, "leases", "", "lease scenarios to run instead of the workloads: idle, storm or both (comma-separated); -systems may then name synod@<commit> too")
	fs.StringVar(&idleLeases, "idle-leases", "250000,1000000", "idle scenario: the numbers of leases to measure at, ascending")
	fs.DurationVar(&o.idleWindow, "idle-window", 30*time.Second, "idle scenarios (-leases idle, -ranges-idle): each measured window (-rounds of them per number of leases or ranges)")
	fs.DurationVar(&o.idleSettle, "idle-settle", 30*time.Second, "idle scenarios (-leases idle, -ranges-idle): rest after granting or splitting, before measuring")
	var rangesIdle string
	fs.StringVar(&rangesIdle, "ranges-idle", "", "idle-ranges scenario instead of the workloads: comma-separated numbers of data ranges, ascending (e.g. 1,100,1000), each on a new Synod cluster split online; measures Synod only (-systems may name synod@<commit> too; etcd is left out)")
	fs.IntVar(&o.stormLeases, "storm-leases", 100000, "storm scenario: leases expiring together, one key each")
	fs.DurationVar(&o.stormTTL, "storm-ttl", 2*time.Minute, "storm scenario: when the leases expire, from the first grant (granting must finish before)")
	fs.Float64Var(&o.stormPutRate, "storm-put-rate", 100, "storm scenario: puts per second during the storm (open loop)")
	fs.DurationVar(&o.stormTimeout, "storm-timeout", 15*time.Minute, "storm scenario: give up waiting for the deletions after this")
	var bulk, bulkBytes string
	fs.StringVar(&bulk, "bulk", "", "bulk-load scenario instead of the workloads: comma-separated value sizes in bytes (e.g. 4096,32768); -systems may then name synod@<commit> too")
	fs.StringVar(&bulkBytes, "bulk-bytes", "4GiB", "bulk load: bytes of values to write at each size (e.g. 4GiB, 512MiB)")
	fs.IntVar(&o.bulkClients, "bulk-clients", 64, "bulk load: concurrent clients (closed loop)")
	var etcdTool string
	fs.StringVar(&etcdTool, "etcd-tool", "", "run etcd's benchmark tool instead of the workloads: comma-separated commands ("+strings.Join(toolCommandNames(), ", ")+") or all; -systems may then name "+etcd36System+" too")
	fs.Float64Var(&o.etcdToolScale, "etcd-tool-scale", 1, "etcd-tool: scale of every command's --total")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if etcdTool == "all" {
		o.etcdTool = toolCommandNames()
	} else {
		o.etcdTool = splitList(etcdTool)
	}
	for _, n := range o.etcdTool {
		if !slices.Contains(toolCommandNames(), n) {
			return nil, fmt.Errorf("-etcd-tool: unknown command %q", n)
		}
	}
	if o.etcdToolScale <= 0 {
		return nil, errors.New("-etcd-tool-scale must be positive")
	}
	for _, f := range splitList(bulk) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-bulk: %q is not a positive size", f)
		}
		o.bulkSizes = append(o.bulkSizes, n)
	}
	var err error
	if o.bulkBytes, err = parseBytes(bulkBytes); err != nil {
		return nil, fmt.Errorf("-bulk-bytes: %w", err)
	}
	if o.bulkClients < 1 {
		return nil, errors.New("-bulk-clients must be positive")
	}
	for _, f := range splitList(rangesIdle) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > maxIdleRanges || (len(o.rangesIdle) > 0 && n <= o.rangesIdle[len(o.rangesIdle)-1]) {
			return nil, fmt.Errorf("-ranges-idle: %q is not a count of 1 to %s above the one before", f, commas(maxIdleRanges))
		}
		o.rangesIdle = append(o.rangesIdle, n)
	}
	o.leaseScenarios = splitList(leases)
	for _, sc := range o.leaseScenarios {
		if sc != "idle" && sc != "storm" {
			return nil, fmt.Errorf("-leases: unknown scenario %q", sc)
		}
	}
	for _, f := range splitList(idleLeases) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || (len(o.idleLeases) > 0 && n <= o.idleLeases[len(o.idleLeases)-1]) {
			return nil, fmt.Errorf("-idle-leases: %q is not a positive count above the one before", f)
		}
		o.idleLeases = append(o.idleLeases, n)
	}
	if o.stormLeases < 1 || o.stormPutRate <= 0 {
		return nil, errors.New("-storm-leases and -storm-put-rate must be positive")
	}
	o.systems = splitList(systems)
	if len(o.rangesIdle) > 0 {
		if len(o.leaseScenarios) > 0 || len(o.bulkSizes) > 0 || len(o.etcdTool) > 0 {
			return nil, errors.New("-ranges-idle runs alone, not with -leases, -bulk or -etcd-tool")
		}
		// etcd keeps every key in one Raft group: it has no ranges to
		// split.
		o.systems = slices.DeleteFunc(o.systems, func(s string) bool { return s == "etcd" })
		if len(o.systems) == 0 {
			return nil, errors.New("-ranges-idle measures Synod only: -systems names no Synod")
		}
	}
	for _, s := range o.systems {
		if s == etcd36System && len(o.etcdTool) > 0 {
			continue
		}
		if s != "etcd" && s != "synod" && !(strings.HasPrefix(s, "synod@") && len(s) > len("synod@")) {
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
	if o.dataRanges < 1 || o.dataRanges > maxDataRanges {
		return nil, fmt.Errorf("-data-ranges must be between 1 and %d", maxDataRanges)
	}
	if o.dataRanges > 1 && (len(o.leaseScenarios) > 0 || len(o.bulkSizes) > 0 || len(o.etcdTool) > 0 || len(o.rangesIdle) > 0) {
		return nil, errors.New("-data-ranges applies to the workloads only, not to -leases, -bulk, -etcd-tool or -ranges-idle")
	}
	if o.rounds < 1 || o.clients < 1 || o.conns < 1 || o.watchers < 1 || o.lockClients < 1 || o.watchPutRate <= 0 || o.getKeys < 1 {
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
	system string
	// results holds each workload's rounds merged; rounds each round's
	// result, in round order.
	results map[string]*result
	rounds  map[string][]*result
	// keys is the number of keys written by the whole run (workloads,
	// preloading and watched puts); disk the allocated size of a member's
	// data dir at its end (mean of the members).
	keys int64
	disk int64

	cluster *cluster
	env     *env
}

// interference is what the rest of the machine did during the run.
type interference struct {
	loadBefore string
	// elapsed is the duration of the run; othersCPU the CPU time other
	// processes of the machine used meanwhile (neither this harness nor
	// the members of either system).
	elapsed   time.Duration
	othersCPU time.Duration
}

// othersPercent is the share of the machine's CPU other processes used
// during the run.
func (in interference) othersPercent() float64 {
	if in.elapsed <= 0 {
		return 0
	}
	return 100 * in.othersCPU.Seconds() / (in.elapsed.Seconds() * float64(runtime.NumCPU()))
}

// scenarioClusters runs the scenarios that start a cluster of their own for
// each measurement (-leases, -bulk, -ranges-idle), one cluster at a time,
// and measures what the rest of the machine did meanwhile.
type scenarioClusters struct {
	o    *options
	work string
	n    int // clusters started, which names their directories
	// membersCPU is the CPU time the members of the stopped clusters used
	// in their lifetime.
	membersCPU             time.Duration
	loadBefore             string
	start                  time.Time
	busyBefore, selfBefore time.Duration
}

func newScenarioClusters(o *options, work string) (*scenarioClusters, error) {
	s := &scenarioClusters{o: o, work: work, loadBefore: loadAverage(), start: time.Now()}
	var err error
	if s.busyBefore, err = busyCPU(); err != nil {
		return nil, err
	}
	s.selfBefore = selfCPU()
	return s, nil
}

// run starts a cluster of system with l in a new directory, connects to it,
// runs fn and stops the cluster (removing its data unless -keep).
func (s *scenarioClusters) run(ctx context.Context, system string, l launcher, fn func(c *cluster, e *env) error) error {
	s.n++
	dir := filepath.Join(s.work, fmt.Sprintf("%s-%d", strings.ReplaceAll(system, "@", "-"), s.n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	logf("%s: starting 3 members", system)
	c, err := startCluster(ctx, system, dir, l)
	if err != nil {
		return fmt.Errorf("%s: %w", system, err)
	}
	e, err := newEnv(ctx, s.o, c)
	if err == nil {
		err = fn(c, e)
		e.close()
	}
	if st, serr := c.stats(); serr == nil {
		s.membersCPU += st.cpu
	}
	c.stop()
	if !s.o.keep {
		_ = os.RemoveAll(dir)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", system, err)
	}
	return nil
}

// interference is what other processes than this one and the members did
// since newScenarioClusters.
func (s *scenarioClusters) interference() (interference, error) {
	busyAfter, err := busyCPU()
	if err != nil {
		return interference{}, err
	}
	in := interference{loadBefore: s.loadBefore, elapsed: time.Since(s.start)}
	in.othersCPU = max(0, (busyAfter-s.busyBefore)-(selfCPU()-s.selfBefore)-s.membersCPU)
	logf("other processes used %.0f%% of the machine meanwhile", in.othersPercent())
	return in, nil
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
		case etcd36System:
			logf("building etcd 3.6")
			l, err = etcd36Launcher(ctx, work)
		case "synod":
			logf("building %s", synodMemberPackage)
			l, err = buildSynodMember(ctx, work)
			l.dataRangeSplits = dataRangeSplits(o.dataRanges)
		default: // synod@<commit>
			logf("building %s against %s", synodMemberPackage, system)
			l, err = buildSynodMemberAt(ctx, work, strings.TrimPrefix(system, "synod@"))
			l.dataRangeSplits = dataRangeSplits(o.dataRanges)
		}
		if err != nil {
			return err
		}
		launchers[system] = l
	}

	if len(o.etcdTool) > 0 {
		rep, err := runEtcdTool(ctx, o, work, launchers)
		if err != nil {
			return err
		}
		rep.machine, rep.version, rep.started, rep.took = mach, probeVersions(), started, time.Since(started)
		return output(o, etcdToolBeginMarker, etcdToolEndMarker, rep.markdown())
	}

	if len(o.bulkSizes) > 0 {
		rep, err := runBulk(ctx, o, work, launchers)
		if err != nil {
			return err
		}
		rep.machine, rep.version, rep.started, rep.took = mach, probeVersions(), started, time.Since(started)
		return output(o, bulkBeginMarker, bulkEndMarker, rep.markdown())
	}

	if len(o.rangesIdle) > 0 {
		rep, err := runRangesIdle(ctx, o, work, launchers)
		if err != nil {
			return err
		}
		rep.machine, rep.version, rep.started, rep.took = mach, probeVersions(), started, time.Since(started)
		return output(o, rangesBeginMarker, rangesEndMarker, rep.markdown())
	}

	if len(o.leaseScenarios) > 0 {
		rep, err := runLeaseScenarios(ctx, o, work, launchers)
		if err != nil {
			return err
		}
		rep.machine, rep.version, rep.started, rep.took = mach, probeVersions(), started, time.Since(started)
		return output(o, leaseBeginMarker, leaseEndMarker, rep.markdown())
	}

	runs, in, err := runInterleaved(ctx, o, work, launchers)
	if err != nil {
		return err
	}
	rep := &report{opts: o, machine: mach, versions: probeVersions(), runs: runs, interference: in, started: started, took: time.Since(started)}
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

// output writes a scenario's section, between its markers begin and end,
// into the -out file, or prints it when there is none.
func output(o *options, begin, end, md string) error {
	if o.out == "" {
		fmt.Print(md)
		return nil
	}
	if err := writeSection(o.out, begin, end, md); err != nil {
		return err
	}
	logf("wrote %s", o.out)
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// runInterleaved starts a cluster of every system and keeps them all up
// while it runs each workload on one system after the other. The host's
// speed drifts by 10-20% over minutes; measuring the systems minutes apart,
// as running one system's workloads back to back did, put that drift into
// the ratios. Interleaved, the two measurements of a workload are one window
// apart, and the system that goes first alternates from round to round (and
// from workload to workload), so that a steady drift favours neither.
func runInterleaved(ctx context.Context, o *options, work string, launchers map[string]launcher) (_ []*systemRun, in interference, err error) {
	in.loadBefore = loadAverage()
	start := time.Now()
	busyBefore, err := busyCPU()
	if err != nil {
		return nil, in, err
	}
	selfBefore := selfCPU()

	var runs []*systemRun
	defer func() {
		for _, sr := range runs {
			if sr.env != nil {
				sr.env.close()
			}
			sr.cluster.stop()
		}
	}()
	for _, system := range o.systems {
		dir := filepath.Join(work, system)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, in, fmt.Errorf("create data dir: %w", err)
		}
		logf("%s: starting 3 members", system)
		l := launchers[system]
		// Synod's members serve /metrics for the oracle's counters.
		l.metrics = isSynod(system)
		c, err := startCluster(ctx, system, dir, l)
		if err != nil {
			return nil, in, fmt.Errorf("%s: %w", system, err)
		}
		sr := &systemRun{system: system, cluster: c, results: map[string]*result{}, rounds: map[string][]*result{}}
		runs = append(runs, sr)
		if sr.env, err = newEnv(ctx, o, c); err != nil {
			return nil, in, fmt.Errorf("%s: %w", system, err)
		}
	}

	i := 0
	for _, w := range workloads() {
		if !slices.Contains(o.workloads, w.name) {
			continue
		}
		for round := range o.rounds {
			for k := range runs {
				sr := runs[(i+round+k)%len(runs)]
				res, err := runOnSystem(ctx, sr, w)
				if err != nil {
					return nil, in, fmt.Errorf("%s: %w", sr.system, err)
				}
				sr.rounds[w.name] = append(sr.rounds[w.name], res)
			}
		}
		for _, sr := range runs {
			sr.results[w.name] = mergeRounds(sr.rounds[w.name])
		}
		i++
	}

	// The members have run only during this run: their lifetime CPU is
	// theirs within it.
	var membersCPU time.Duration
	for _, sr := range runs {
		st, err := sr.cluster.stats()
		if err != nil {
			return nil, in, err
		}
		membersCPU += st.cpu
		sr.keys = sr.env.extraKeys.Load()
		for _, res := range sr.results {
			sr.keys += res.keys
		}
		if sr.disk, err = sr.cluster.diskUsage(); err != nil {
			return nil, in, err
		}
	}
	busyAfter, err := busyCPU()
	if err != nil {
		return nil, in, err
	}
	in.elapsed = time.Since(start)
	in.othersCPU = max(0, (busyAfter-busyBefore)-(selfCPU()-selfBefore)-membersCPU)
	logf("other processes used %.0f%% of the machine meanwhile", in.othersPercent())
	return runs, in, nil
}

// runOnSystem runs one round of a workload on one system. A failing
// workload is a result too; only a member that died, or a cluster that finds
// no leader again, ends the run.
func runOnSystem(ctx context.Context, sr *systemRun, w workload) (*result, error) {
	res, err := runWorkload(ctx, sr.env, w)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("workload %s: %w", w.name, err)
		}
		logf("%s %-17s FAILED: %v", sr.system, w.name, err)
		res = &result{na: "failed: " + oneLine(err.Error(), 60)}
		if aliveErr := sr.cluster.checkAlive(); aliveErr != nil {
			return nil, aliveErr
		}
		if _, lerr := sr.cluster.waitLeader(ctx, 30*time.Second); lerr != nil {
			return nil, fmt.Errorf("after workload %s failed (%v): %w", w.name, err, lerr)
		}
		return res, nil
	}
	if res.na != "" {
		logf("%s %-17s n/a: %s", sr.system, w.name, res.na)
		return res, nil
	}
	logf("%s %-17s %9.0f ops/s  p50 %-9v p99 %-9v p999 %-9v cpu %.3fs/kop  rss %s  errors %d",
		sr.system, w.name, res.throughput(), round(res.percentile(50)), round(res.percentile(99)),
		round(res.percentile(99.9)), res.cpuPerKOps(), mib(res.peakRSS), res.errors)
	return res, nil
}

// mergeRounds combines the rounds of a workload into one result: the
// operations and windows add up (so its throughput is the mean over the
// rounds' time), the latencies are pooled. A round that did not run makes
// the whole result that round's.
func mergeRounds(rounds []*result) *result {
	m := &result{}
	for i, r := range rounds {
		if r.na != "" {
			return r
		}
		m.ops += r.ops
		m.errors += r.errors
		if m.firstErr == nil {
			m.firstErr = r.firstErr
		}
		m.window += r.window
		m.lat = append(m.lat, r.lat...)
		m.serverCPU += r.serverCPU
		m.clientCPU += r.clientCPU
		m.peakRSS = max(m.peakRSS, r.peakRSS)
		m.diskDelta += r.diskDelta
		m.keys += r.keys
		if i == 0 {
			m.oracle = r.oracle
		} else {
			m.oracle = m.oracle.plus(r.oracle)
		}
	}
	slices.Sort(m.lat)
	return m
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
	if res.ops == 0 {
		// Pooled with the other rounds, a stalled round would only look
		// like a slow one.
		return nil, fmt.Errorf("no operation completed in the %s window (%d errors)", win.duration, res.errors)
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
