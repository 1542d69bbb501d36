package testcluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/synod-io/synod/internal/peerauth"
	"github.com/synod-io/synod/internal/server"
)

// Options configures a cluster. Zero values take test-friendly defaults.
type Options struct {
	// Nodes is the cluster size (default 3).
	Nodes int
	// TickInterval is the Raft tick (default 10ms: elections in ~100ms).
	TickInterval time.Duration
	// OnDisk keeps data in t.TempDir() instead of crashable memory.
	OnDisk bool
	// LogTruncateThreshold and LogKeepEntries override the log truncation
	// policy (small values force snapshots).
	LogTruncateThreshold uint64
	LogKeepEntries       uint64
	// Configure, if set, adjusts each node's configuration before Open.
	Configure func(i int, cfg *server.Config)
	// ClientTLS, if set, is the TLS configuration of the clients Client
	// returns (for nodes Configure gives client TLS).
	ClientTLS *tls.Config
	// Rand drives the random choices of link faults (SetLinkFaults); a test
	// seeds it to replay a run (default: seeded with 1).
	Rand *rand.Rand
}

// Cluster is a set of in-process nodes.
type Cluster struct {
	t     testing.TB
	opts  Options
	spec  string
	nodes []*Node
	net   *network
	// secret is the peer secret of the initial members (a node added later
	// fetches it from the cluster, as --join does).
	secret []byte
}

// Node is one member of a test cluster.
type Node struct {
	c          *Cluster
	Index      int
	Name       string
	PeerAddr   string
	ClientAddr string
	dir        string

	// join, for a node added after the cluster started, lists the client
	// endpoints it joins through.
	join []string

	mu  sync.Mutex
	fs  *vfs.MemFS // nil when on disk
	sw  *netSwitch
	srv *server.Server
}

// New starts a cluster and registers its shutdown with t.Cleanup.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.TickInterval == 0 {
		opts.TickInterval = 10 * time.Millisecond
	}
	if opts.Rand == nil {
		opts.Rand = rand.New(rand.NewPCG(1, 1))
	}
	secret, err := peerauth.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, opts: opts, net: newNetwork(opts.Rand), secret: secret}
	var spec []string
	var peerLis, clientLis []net.Listener
	for i := 0; i < opts.Nodes; i++ {
		pl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		cl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		n := &Node{
			c: c, Index: i, Name: fmt.Sprintf("n%d", i+1),
			PeerAddr: pl.Addr().String(), ClientAddr: cl.Addr().String(),
			sw: newNetSwitch(),
		}
		if opts.OnDisk {
			n.dir = filepath.Join(t.TempDir(), n.Name)
		} else {
			n.dir = "/" + n.Name
			n.fs = vfs.NewCrashableMem()
		}
		c.nodes = append(c.nodes, n)
		c.net.setAddr(n.PeerAddr, i)
		peerLis, clientLis = append(peerLis, pl), append(clientLis, cl)
		spec = append(spec, n.Name+"="+n.PeerAddr)
	}
	c.spec = strings.Join(spec, ",")
	t.Cleanup(c.Close)
	for i, n := range c.nodes {
		if err := n.open(peerLis[i], clientLis[i]); err != nil {
			t.Fatalf("start %s: %v", n.Name, err)
		}
	}
	return c
}

func testLogger(name string) *slog.Logger {
	var level slog.Level
	switch os.Getenv("SYNOD_TEST_LOG") {
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	case "warn":
		level = slog.LevelWarn
	default:
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("node", name)
}

func (n *Node) open(pl, cl net.Listener) error {
	n.sw.restore()
	cfg := server.Config{
		Name:                 n.Name,
		DataDir:              n.dir,
		PeerListener:         &switchedListener{Listener: pl, s: n.sw},
		ClientListener:       &switchedListener{Listener: cl, s: n.sw},
		PeerDialOptions:      []grpc.DialOption{grpc.WithContextDialer(n.sw.dial), grpc.WithChainUnaryInterceptor(n.c.net.unaryInterceptor(n.Index))},
		PeerInterceptor:      interceptor{n: n.c.net, from: n.Index},
		InitialCluster:       n.c.spec,
		PeerSecret:           n.c.secret,
		Join:                 n.join,
		TickInterval:         n.c.opts.TickInterval,
		LogTruncateThreshold: n.c.opts.LogTruncateThreshold,
		LogKeepEntries:       n.c.opts.LogKeepEntries,
		Logger:               testLogger(n.Name),
	}
	if n.fs != nil {
		cfg.FS = n.fs
	}
	if n.join != nil {
		cfg.InitialCluster, cfg.PeerSecret = "", nil
	}
	if n.c.opts.Configure != nil {
		n.c.opts.Configure(n.Index, &cfg)
	}
	srv, err := server.Open(cfg)
	if err != nil {
		pl.Close()
		cl.Close()
		return err
	}
	n.c.net.setID(srv.MemberID(), n.Index)
	n.mu.Lock()
	n.srv = srv
	n.mu.Unlock()
	return nil
}

// Server returns the node's running server, or nil if it is down.
func (n *Node) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// DataDir is the node's data dir, on FS.
func (n *Node) DataDir() string { return n.dir }

// FS is the file system of the node's data dir: its own in-memory one, or
// the operating system's with OnDisk. Tests delete or damage data with it.
func (n *Node) FS() vfs.FS {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fs == nil {
		return vfs.Default
	}
	return n.fs
}

// Running reports whether the node is up.
func (n *Node) Running() bool { return n.Server() != nil }

// Stop shuts the node down cleanly.
func (n *Node) Stop() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv == nil {
		return
	}
	if err := srv.Close(); err != nil {
		n.c.t.Errorf("close %s: %v", n.Name, err)
	}
}

// Crash stops the node as a power failure would: it is cut off the network
// at once and restarts later with only the data it had synced.
func (n *Node) Crash() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv == nil {
		return
	}
	n.sw.cut()
	if n.fs != nil {
		crashed := n.fs.CrashClone(vfs.CrashCloneCfg{})
		_ = srv.Close() // writes after the clone do not reach crashed
		n.mu.Lock()
		n.fs = crashed
		n.mu.Unlock()
		return
	}
	_ = srv.Close()
}

// CrashAnd crashes the node as Crash does, and calls fn once the data the
// node had synced is taken, before the node is closed: a test releases
// there an apply it holds (a held node cannot close), so that what the
// held range applies next never reaches the restarted node's data.
func (n *Node) CrashAnd(fn func()) {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv == nil {
		fn()
		return
	}
	n.sw.cut()
	if n.fs != nil {
		crashed := n.fs.CrashClone(vfs.CrashCloneCfg{})
		fn()
		_ = srv.Close()
		n.mu.Lock()
		n.fs = crashed
		n.mu.Unlock()
		return
	}
	fn()
	_ = srv.Close()
}

// Restart starts a stopped or crashed node again from its data, failing the
// test if it cannot. Call it from the test's goroutine; other goroutines use
// Start.
func (n *Node) Restart() {
	n.c.t.Helper()
	if err := n.Start(); err != nil {
		n.c.t.Fatal(err)
	}
}

// Start starts a stopped or crashed node again from its data.
func (n *Node) Start() error {
	if n.Running() {
		return fmt.Errorf("restart %s: still running", n.Name)
	}
	var pl, cl net.Listener
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		pl, err = net.Listen("tcp", n.PeerAddr)
		if err == nil {
			cl, err = net.Listen("tcp", n.ClientAddr)
			if err != nil {
				pl.Close()
			}
		}
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the port is being released by the old server
	}
	if err != nil {
		return fmt.Errorf("restart %s: listen: %w", n.Name, err)
	}
	if err := n.open(pl, cl); err != nil {
		return fmt.Errorf("restart %s: %w", n.Name, err)
	}
	return nil
}

// AddNode starts a new node that joins the cluster through the client
// endpoints of the running nodes, as `synod start --join` does: it is added
// as a learner, catches up by snapshot and asks for its promotion to voter.
func (c *Cluster) AddNode() (*Node, error) {
	var join []string
	for _, n := range c.nodes {
		if n.Running() {
			join = append(join, n.ClientAddr)
		}
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pl.Close()
		return nil, err
	}
	i := len(c.nodes)
	n := &Node{
		c: c, Index: i, Name: fmt.Sprintf("n%d", i+1),
		PeerAddr: pl.Addr().String(), ClientAddr: cl.Addr().String(),
		sw: newNetSwitch(), join: join,
	}
	if c.opts.OnDisk {
		n.dir = filepath.Join(c.t.TempDir(), n.Name)
	} else {
		n.dir = "/" + n.Name
		n.fs = vfs.NewCrashableMem()
	}
	c.nodes = append(c.nodes, n)
	c.net.setAddr(n.PeerAddr, i)
	if err := n.open(pl, cl); err != nil {
		return nil, fmt.Errorf("start %s: %w", n.Name, err)
	}
	return n, nil
}

// Close stops every node and the delayed deliveries of faulty links.
func (c *Cluster) Close() {
	for _, n := range c.nodes {
		n.Stop()
	}
	c.net.close()
}

// Nodes returns the nodes.
func (c *Cluster) Nodes() []*Node { return c.nodes }

// Node returns node i.
func (c *Cluster) Node(i int) *Node { return c.nodes[i] }

// WaitLeader waits until every running node agrees on a leader that is
// itself running, and returns the leader's node.
func (c *Cluster) WaitLeader() *Node {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if n := c.agreedLeader(); n != nil {
			return n
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.t.Fatalf("no leader agreed on within 15s")
	return nil
}

// Leader returns the node the running nodes agree is the leader, or nil
// when they do not agree (yet). Unlike WaitLeader it never fails the test.
func (c *Cluster) Leader() *Node { return c.agreedLeader() }

// SomeLeader returns a running node that believes it is the leader, or nil.
// During a partition an old leader may still believe so; the node of the
// highest term is returned.
func (c *Cluster) SomeLeader() *Node {
	var best *Node
	var term uint64
	for _, n := range c.nodes {
		srv := n.Server()
		if srv == nil {
			continue
		}
		pub := srv.Published()
		if pub.Lead == srv.MemberID() && pub.Term >= term {
			best, term = n, pub.Term
		}
	}
	return best
}

func (c *Cluster) agreedLeader() *Node {
	var lead uint64
	for _, n := range c.nodes {
		srv := n.Server()
		if srv == nil {
			continue
		}
		l := srv.Leader() // the same member leads every range
		if l == 0 || (lead != 0 && l != lead) {
			return nil
		}
		lead = l
	}
	for _, n := range c.nodes {
		if srv := n.Server(); srv != nil && srv.MemberID() == lead {
			return n
		}
	}
	return nil
}

// Followers returns the running nodes other than the leader.
func (c *Cluster) Followers(leader *Node) []*Node {
	var out []*Node
	for _, n := range c.nodes {
		if n != leader && n.Running() {
			out = append(out, n)
		}
	}
	return out
}

// Client returns an etcd client connected to the given nodes (all nodes if
// none are given), closed at the end of the test.
func (c *Cluster) Client(nodes ...*Node) *clientv3.Client {
	c.t.Helper()
	if len(nodes) == 0 {
		nodes = c.nodes
	}
	var eps []string
	for _, n := range nodes {
		eps = append(eps, n.ClientAddr)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		TLS:         c.opts.ClientTLS,
	})
	if err != nil {
		c.t.Fatalf("client: %v", err)
	}
	c.t.Cleanup(func() { cli.Close() })
	return cli
}

// Context returns a context that ends with the test or after d.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
