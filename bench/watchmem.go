package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// watchMemoryCommand is the subcommand that measures the memory a member
// spends on watchers whose clients stopped reading:
//
//	cd bench && go run . watch-memory
//
// For each system and round it starts a fresh 3-member cluster, opens
// -watchers watchers of one prefix on a follower, spread over -conns gRPC
// connections (one Watch stream each), and once every watcher is created
// stops reading those connections' sockets: the clients are stuck readers,
// so everything the member sends them stays in its own memory once the
// HTTP/2 windows and the kernel's socket buffers are full. Then -puts puts
// of -value-size bytes under the prefix go to the leader from -writers
// concurrent clients, and the member idles for -idle. It reports the watched
// member's resident memory (VmRSS) before the writes, at their end and at
// each -after offset from their end, and its peak (VmHWM, reset when the
// writes start, read at the last offset), beside the same for the other follower, which has
// no watchers and so shows what the writes alone cost.
const watchMemoryCommand = "watch-memory"

type watchMemOptions struct {
	dir         string
	systems     []string
	rounds      int
	watchers    int
	conns       int
	puts        int
	writers     int
	valueSize   int
	after       []time.Duration
	synodMember string
}

func parseWatchMemOptions(args []string) (*watchMemOptions, error) {
	o := &watchMemOptions{}
	fs := flag.NewFlagSet(watchMemoryCommand, flag.ContinueOnError)
	var systems, after string
	fs.StringVar(&o.dir, "dir", os.TempDir(), "directory for the members' data")
	fs.StringVar(&systems, "systems", "etcd,synod", "systems to measure, one after the other in each round")
	fs.IntVar(&o.rounds, "rounds", 2, "fresh clusters per system")
	fs.IntVar(&o.watchers, "watchers", 1000, "watchers of the prefix, on one follower")
	fs.IntVar(&o.conns, "conns", 10, "gRPC connections (one Watch stream each) the watchers share")
	fs.IntVar(&o.puts, "puts", 30000, "puts of new keys under the watched prefix")
	fs.IntVar(&o.writers, "writers", 16, "concurrent writing clients")
	fs.IntVar(&o.valueSize, "value-size", 4096, "bytes per value")
	fs.StringVar(&after, "after", "30s,2m", "offsets from the end of the writes at which to read the memory")
	fs.StringVar(&o.synodMember, "synod-member", "", "prebuilt synodmember binary to run (empty: build the one of this tree)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	o.systems = splitList(systems)
	for _, s := range o.systems {
		if s != "etcd" && s != "synod" {
			return nil, fmt.Errorf("-systems: unknown system %q", s)
		}
	}
	for _, a := range splitList(after) {
		d, err := time.ParseDuration(a)
		if err != nil || d < 0 || (len(o.after) > 0 && d <= o.after[len(o.after)-1]) {
			return nil, fmt.Errorf("-after: want increasing durations, got %q", after)
		}
		o.after = append(o.after, d)
	}
	if o.rounds < 1 || o.watchers < 1 || o.conns < 1 || o.puts < 1 || o.writers < 1 || o.valueSize < 1 {
		return nil, errors.New("counts must be positive")
	}
	return o, nil
}

// watchMemResult is one round on one system.
type watchMemResult struct {
	system string
	round  int
	writes time.Duration
	// Of the watched follower, then of the other one; the peaks are from
	// the start of the writes to the last reading.
	before, peak, end uint64
	after             []uint64
	otherPeak         uint64
	otherAfter        []uint64
}

func runWatchMemory(args []string) error {
	o, err := parseWatchMemOptions(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	work, err := os.MkdirTemp(o.dir, "synod-watchmem-")
	if err != nil {
		return fmt.Errorf("create work dir: %w", err)
	}
	defer os.RemoveAll(work)

	launchers := map[string]launcher{}
	for _, system := range o.systems {
		switch {
		case system == "etcd":
			launchers[system], err = etcdLauncher()
		case o.synodMember != "":
			launchers[system] = launcher{path: o.synodMember}
		default:
			logf("building %s", synodMemberPackage)
			launchers[system], err = buildSynodMember(ctx, work)
		}
		if err != nil {
			return err
		}
	}
	var results []*watchMemResult
	for round := range o.rounds {
		for k := range o.systems {
			system := o.systems[(round+k)%len(o.systems)]
			dir := filepath.Join(work, fmt.Sprintf("%s-%d", system, round))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("create data dir: %w", err)
			}
			res, err := watchMemRound(ctx, o, system, dir, launchers[system])
			if err != nil {
				return fmt.Errorf("%s round %d: %w", system, round+1, err)
			}
			res.round = round + 1
			results = append(results, res)
			_ = os.RemoveAll(dir)
		}
	}
	fmt.Print(watchMemMarkdown(o, results))
	return nil
}

func watchMemRound(ctx context.Context, o *watchMemOptions, system, dir string, l launcher) (*watchMemResult, error) {
	logf("%s: starting 3 members", system)
	c, err := startCluster(ctx, system, dir, l)
	if err != nil {
		return nil, err
	}
	defer c.stop()
	lead, err := c.waitLeader(ctx, 30*time.Second)
	if err != nil {
		return nil, err
	}
	watched, other := (lead+1)%clusterSize, (lead+2)%clusterSize
	wm, om := c.members[watched], c.members[other]
	res := &watchMemResult{system: system}

	prefix := "/watchmem/"
	streams, err := openStuckWatchers(ctx, wm.args.ClientAddr, prefix, o.watchers, o.conns)
	defer func() {
		for _, s := range streams {
			s.close()
		}
	}()
	if err != nil {
		return nil, err
	}
	for _, s := range streams {
		s.conn.stall()
	}
	if res.before, err = statusField(wm.cmd.Process.Pid, "VmRSS"); err != nil {
		return nil, err
	}
	for _, m := range []*memberProc{wm, om} {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", m.cmd.Process.Pid), []byte("5"), 0); err != nil {
			return nil, fmt.Errorf("reset peak rss: %w", err)
		}
	}
	logf("%s: %d watchers on member %s (pprof on %s) stuck; %d puts of %d bytes", system, o.watchers, wm.args.Name, wm.args.PprofAddr, o.puts, o.valueSize)
	leader, err := newClient(c.members[lead].args.ClientAddr)
	if err != nil {
		return nil, err
	}
	defer leader.Close()
	start := time.Now()
	if err := putMany(ctx, leader.KV, prefix, o.puts, o.writers, o.valueSize); err != nil {
		return nil, err
	}
	res.writes = time.Since(start)
	end := time.Now()
	if res.end, err = statusField(wm.cmd.Process.Pid, "VmRSS"); err != nil {
		return nil, err
	}
	logf("%s: writes took %v; watched member rss %s", system, res.writes.Round(time.Millisecond), mib(res.end))
	for _, d := range o.after {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Until(end.Add(d))):
		}
		if err := c.checkAlive(); err != nil {
			return nil, err
		}
		rss, err := statusField(wm.cmd.Process.Pid, "VmRSS")
		if err != nil {
			return nil, err
		}
		orss, err := statusField(om.cmd.Process.Pid, "VmRSS")
		if err != nil {
			return nil, err
		}
		res.after, res.otherAfter = append(res.after, rss), append(res.otherAfter, orss)
		logf("%s: %v after the writes: watched member rss %s, other follower %s", system, d, mib(rss), mib(orss))
	}
	// The peaks cover the idle time too: catching up may go on after the
	// writes.
	if res.peak, err = statusField(wm.cmd.Process.Pid, "VmHWM"); err != nil {
		return nil, err
	}
	if res.otherPeak, err = statusField(om.cmd.Process.Pid, "VmHWM"); err != nil {
		return nil, err
	}
	return res, nil
}

// putMany writes n new keys under prefix from writers concurrent goroutines.
func putMany(ctx context.Context, kv clientv3.KV, prefix string, n, writers, size int) error {
	b := make([]byte, size)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	value := string(b)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := kv.Put(pctx, fmt.Sprintf("%s%08d", prefix, i), value)
				cancel()
				if err != nil {
					errs <- fmt.Errorf("put: %w", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// stuckStream is one connection and its Watch stream, whose reader can be
// stopped.
type stuckStream struct {
	conn   *stallConn
	cc     *grpc.ClientConn
	cancel context.CancelFunc
}

func (s *stuckStream) close() {
	s.cancel()
	if s.conn != nil {
		_ = s.conn.Close()
	}
	_ = s.cc.Close()
}

// openStuckWatchers opens watchers of prefix on addr over conns connections,
// one Watch stream each, and waits until every watcher is created.
func openStuckWatchers(ctx context.Context, addr, prefix string, watchers, conns int) ([]*stuckStream, error) {
	var streams []*stuckStream
	rangeEnd := []byte(prefix)
	rangeEnd[len(rangeEnd)-1]++
	for i := range conns {
		n := watchers / conns
		if i < watchers%conns {
			n++
		}
		s := &stuckStream{}
		dialed := make(chan *stallConn, 1)
		cc, err := grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, "tcp", a)
				if err != nil {
					return nil, err
				}
				sc := &stallConn{Conn: c, closed: make(chan struct{})}
				select {
				case dialed <- sc:
				default:
				}
				return sc, nil
			}))
		if err != nil {
			return streams, fmt.Errorf("connect to %s: %w", addr, err)
		}
		s.cc = cc
		var sctx context.Context
		sctx, s.cancel = context.WithCancel(ctx)
		streams = append(streams, s)
		stream, err := pb.NewWatchClient(cc).Watch(sctx)
		if err != nil {
			return streams, fmt.Errorf("open watch stream: %w", err)
		}
		for range n {
			req := &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
				Key: []byte(prefix), RangeEnd: rangeEnd,
			}}}
			if err := stream.Send(req); err != nil {
				return streams, fmt.Errorf("create watcher: %w", err)
			}
		}
		for created := 0; created < n; {
			resp, err := stream.Recv()
			if err != nil {
				return streams, fmt.Errorf("wait for watchers: %w", err)
			}
			if resp.Created {
				created++
			}
		}
		select {
		case s.conn = <-dialed:
		default:
			return streams, errors.New("watch stream without a dialed connection")
		}
	}
	return streams, nil
}

// stallConn is a connection whose reads block, once stalled, until it is
// closed: the socket is no longer read, as by a client that hangs.
type stallConn struct {
	net.Conn
	stalled   atomic.Bool
	closeOnce sync.Once
	closed    chan struct{}
}

func (c *stallConn) stall() { c.stalled.Store(true) }

func (c *stallConn) Read(p []byte) (int, error) {
	if c.stalled.Load() {
		<-c.closed
		return 0, io.EOF
	}
	return c.Conn.Read(p)
}

func (c *stallConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

func watchMemMarkdown(o *watchMemOptions, results []*watchMemResult) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("`go run . %s` with %d watchers over %d stuck connections on one follower, %d puts of %d bytes by %d writers; %s.",
		watchMemoryCommand, o.watchers, o.conns, o.puts, o.valueSize, o.writers, machineLine())
	p("")
	head := "| system | round | writes took | watched: RSS before | peak | at end of writes |"
	sep := "|---|---|---|---|---|---|"
	for _, d := range o.after {
		head += fmt.Sprintf(" %v after |", d)
		sep += "---|"
	}
	head += " other follower: peak |"
	sep += "---|"
	for _, d := range o.after {
		head += fmt.Sprintf(" %v after |", d)
		sep += "---|"
	}
	p("%s", head)
	p("%s", sep)
	for _, r := range results {
		row := fmt.Sprintf("| %s | %d | %.1f s | %s | %s | %s |", r.system, r.round, r.writes.Seconds(), mib(r.before), mib(r.peak), mib(r.end))
		for _, v := range r.after {
			row += " " + mib(v) + " |"
		}
		row += " " + mib(r.otherPeak) + " |"
		for _, v := range r.otherAfter {
			row += " " + mib(v) + " |"
		}
		p("%s", row)
	}
	return b.String()
}

// machineLine describes the host in a few words.
func machineLine() string {
	total, err := statusLine("/proc/meminfo", "MemTotal")
	if err != nil {
		return fmt.Sprintf("%d CPUs", runtime.NumCPU())
	}
	return fmt.Sprintf("%d CPUs, %s of memory", runtime.NumCPU(), mib(total))
}
