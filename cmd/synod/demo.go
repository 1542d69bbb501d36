package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/synod-io/synod/internal/certgen"
	"github.com/synod-io/synod/internal/peerauth"
	"github.com/synod-io/synod/internal/server"
)

// Default ports of `synod demo`, one per node.
var (
	demoClientPorts = []int{2379, 22379, 32379}
	demoPeerPorts   = []int{2380, 22380, 32380}
)

// demoOptions are the flags of `synod demo`.
type demoOptions struct {
	nodes        int
	clientPorts  []int
	peerPorts    []int
	dataDir      string
	tickInterval time.Duration
	readyTimeout time.Duration
	tls          bool
	log          logOptions
	// Test settings (hidden flags): the bootstrapped data ranges and
	// their size limit.
	testDataRangeSplits string
	rangeMaxBytes       int64
}

// demoNode is one node of the demo cluster.
type demoNode struct {
	name        string
	metricsAddr string
	dataDir     string
	clientLis   net.Listener
	peerLis     net.Listener
	srv         *server.Server
	clientAddr  string
	peerAddr    string
	tls         bool // client and peer traffic use TLS
}

func (a *app) demoCmd() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a local three-node cluster to try Synod",
		Long: `Run a local cluster in this process: three nodes by default, listening on
127.0.0.1 with client ports 2379, 22379 and 32379 and peer ports 2380, 22380
and 32380. The data lives in a fresh temporary directory removed on exit,
unless --data-dir names a directory to use and keep. Prints the nodes and
example commands once a leader is elected, then runs until interrupted
(Ctrl-C).`,
		Args: argsBetween(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, cmd.Flags().Changed("client-ports"), cmd.Flags().Changed("peer-ports"))
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&o.nodes, "nodes", 3, "number of nodes (the port lists must have as many ports)")
	fs.IntSliceVar(&o.clientPorts, "client-ports", demoClientPorts, "client port of each node, comma-separated (0: any free port)")
	fs.IntSliceVar(&o.peerPorts, "peer-ports", demoPeerPorts, "peer port of each node, comma-separated (0: any free port)")
	fs.StringVar(&o.dataDir, "data-dir", "", "directory to keep the nodes' data in (default: a temporary directory removed on exit)")
	fs.DurationVar(&o.tickInterval, "tick-interval", 100*time.Millisecond, "duration of one Raft tick")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 30*time.Second, "how long to wait for a leader")
	fs.BoolVar(&o.tls, "tls", false, "generate a throwaway CA and certificates (in <data dir>/certs) and use TLS for clients (certificate required) and peers")
	o.log.addFlags(fs, "warn")
	addTestSplitsFlag(fs, &o.testDataRangeSplits)
	fs.Int64Var(&o.rangeMaxBytes, "range-max-bytes", server.DefaultRangeMaxBytes, rangeMaxBytesUsage)
	_ = fs.MarkHidden("range-max-bytes")
	return cmd
}

// ports checks the flags and returns the client and peer port of each node.
func (o *demoOptions) ports(clientSet, peerSet bool) (client, peer []int, err error) {
	if o.nodes < 1 {
		return nil, nil, usageErrorf("--nodes must be at least 1, got %d", o.nodes)
	}
	client, peer = o.clientPorts, o.peerPorts
	// Fewer nodes than the defaults take the first default ports.
	if !clientSet && o.nodes < len(client) {
		client = client[:o.nodes]
	}
	if !peerSet && o.nodes < len(peer) {
		peer = peer[:o.nodes]
	}
	if len(client) != o.nodes || len(peer) != o.nodes {
		return nil, nil, usageErrorf("--nodes is %d but --client-ports has %d ports and --peer-ports %d: give one client and one peer port per node",
			o.nodes, len(client), len(peer))
	}
	seen := map[int]string{}
	for i := range o.nodes {
		for _, p := range []struct {
			kind string
			port int
		}{{"client", client[i]}, {"peer", peer[i]}} {
			if p.port < 0 || p.port > 65535 {
				return nil, nil, usageErrorf("%s port %d of n%d is not a port number", p.kind, p.port, i+1)
			}
			if p.port == 0 {
				continue
			}
			what := fmt.Sprintf("%s port of n%d", p.kind, i+1)
			if prev, ok := seen[p.port]; ok {
				return nil, nil, usageErrorf("port %d is both the %s and the %s", p.port, prev, what)
			}
			seen[p.port] = what
		}
	}
	return client, peer, nil
}

func (o *demoOptions) run(cmd *cobra.Command, clientSet, peerSet bool) (err error) {
	clientPorts, peerPorts, err := o.ports(clientSet, peerSet)
	if err != nil {
		return err
	}
	if err := positive("tick-interval", o.tickInterval); err != nil {
		return err
	}
	if err := positive("ready-timeout", o.readyTimeout); err != nil {
		return err
	}
	if err := checkRangeMaxBytes(o.rangeMaxBytes); err != nil {
		return err
	}
	splits, err := parseTestSplits(o.testDataRangeSplits)
	if err != nil {
		return err
	}
	logger, err := o.log.logger(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Bind every port first: a port in use fails the demo before any data
	// is written, with a message that names it.
	nodes := make([]*demoNode, o.nodes)
	removeDir := ""
	defer func() {
		for _, n := range nodes {
			if n != nil {
				_ = n.close() // closed already unless the demo failed
			}
		}
		if removeDir == "" {
			return
		}
		if rmErr := os.RemoveAll(removeDir); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove data dir: %w", rmErr))
		}
	}()
	for i := range nodes {
		n := &demoNode{name: fmt.Sprintf("n%d", i+1)}
		nodes[i] = n
		if n.clientLis, err = listenPort("client", n.name, clientPorts[i]); err != nil {
			return err
		}
		// With the default ports, metrics go two ports above the client
		// port (2381, as etcd's customary one); otherwise on any free port.
		n.metricsAddr = "127.0.0.1:0"
		if !clientSet {
			n.metricsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(clientPorts[i]+2))
		}
		if n.peerLis, err = listenPort("peer", n.name, peerPorts[i]); err != nil {
			return err
		}
		n.clientAddr, n.peerAddr = n.clientLis.Addr().String(), n.peerLis.Addr().String()
	}

	root, keep := o.dataDir, o.dataDir != ""
	if keep {
		if err := os.MkdirAll(root, 0o755); err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
	} else {
		if root, err = os.MkdirTemp("", "synod-demo-"); err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
		removeDir = root
	}

	spec := make([]string, len(nodes))
	for i, n := range nodes {
		n.dataDir = filepath.Join(root, n.name)
		n.tls = o.tls
		spec[i] = n.name + "=" + demoScheme(n.tls) + n.peerAddr
	}
	var certs certgen.Paths
	if o.tls {
		if certs, err = certgen.WriteDir(filepath.Join(root, "certs"), nil, "root"); err != nil {
			return fmt.Errorf("generate demo certificates: %w", err)
		}
	}
	where := "removed on exit"
	if keep {
		where = "kept on exit"
	}
	fmt.Fprintf(out, "Starting a %d-node Synod cluster; data in %s (%s).\n\n", len(nodes), root, where)
	var table bytes.Buffer
	formatTable(&table, demoColumns, nodes)
	_, _ = out.Write(table.Bytes())
	fmt.Fprintln(out)

	// One process bootstraps every member: they share one new peer secret.
	secret, err := peerauth.NewSecret()
	if err != nil {
		return err
	}
	fatal := make(chan error, len(nodes))
	for _, n := range nodes {
		n.srv, err = server.Open(server.Config{
			Name:            n.name,
			DataDir:         n.dataDir,
			ClientListener:  n.clientLis,
			PeerListener:    n.peerLis,
			InitialCluster:  strings.Join(spec, ","),
			TickInterval:    o.tickInterval,
			MetricsAddr:     n.metricsAddr,
			Logger:          logger.With("node", n.name),
			ClientTLS:       demoTLSFiles(o.tls, certs.ServerCert, certs.ServerKey, certs.CA),
			ClientCertAuth:  o.tls,
			PeerTLS:         demoTLSFiles(o.tls, certs.PeerCert, certs.PeerKey, certs.PeerCA),
			PeerSecret:      secret,
			Version:         Version,
			RangeMaxBytes:   o.rangeMaxBytes,
			DataRangeSplits: splits,
		})
		if err != nil {
			return fmt.Errorf("start %s: %w", n.name, err)
		}
		go forwardFatal(ctx, n, fatal)
	}

	start := time.Now()
	leader, err := waitDemoReady(ctx, nodes, o.readyTimeout)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(out, "interrupted before the cluster was ready")
			return nil
		}
		return err
	}
	endpoints := make([]string, len(nodes))
	for i, n := range nodes {
		endpoints[i] = n.clientAddr
	}
	eps := strings.Join(endpoints, ",")
	fmt.Fprintf(out, "ready: %s is the leader (elected in %s)\n\n", leader, time.Since(start).Round(time.Millisecond))
	if o.tls {
		flags := etcdctlTLSFlags(certs)
		fmt.Fprintf(out, "TLS is on: clients must present a certificate of the demo CA (%s).\n", certs.CA)
		fmt.Fprintf(out, "Try:\n  synod put hello world --endpoints %s %s\n  ETCDCTL_API=3 etcdctl --endpoints %s %s put hello world\n\n",
			eps, flags, httpsEndpoints(endpoints), flags)
	} else {
		fmt.Fprintf(out, "Try:\n  synod put hello world --endpoints %s\n  ETCDCTL_API=3 etcdctl --endpoints %s put hello world\n\n", eps, eps)
	}
	fmt.Fprintf(out, "Web console: %s%s/ui/\n", demoScheme(o.tls), nodes[0].clientAddr)
	if o.tls {
		fmt.Fprintf(out, "  (the browser must present a client certificate of the demo CA: %s and %s)\n", certs.ClientCert, certs.ClientKey)
	}
	fmt.Fprintf(out, "Metrics and health: http://%s/metrics, /healthz, /readyz\n\n", nodes[0].srv.HTTPAddr())
	fmt.Fprintln(out, "Press Ctrl-C to stop.")

	select {
	case <-ctx.Done():
		stop() // a second Ctrl-C ends the process at once
		fmt.Fprintln(out, "\nstopping...")
	case ferr := <-fatal:
		return ferr
	}
	for _, n := range nodes {
		if cerr := n.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("stop %s: %w", n.name, cerr))
		}
	}
	if err == nil {
		fmt.Fprintln(out, "stopped")
	}
	return err
}

var demoColumns = []column[*demoNode]{
	{"NAME", func(n *demoNode) string { return n.name }},
	{"CLIENT URL", func(n *demoNode) string { return demoScheme(n.tls) + n.clientAddr }},
	{"PEER URL", func(n *demoNode) string { return demoScheme(n.tls) + n.peerAddr }},
	{"DATA DIR", func(n *demoNode) string { return n.dataDir }},
}

// close stops the node, or closes its listeners if it never started.
func (n *demoNode) close() error {
	if n.srv != nil {
		return n.srv.Close() // also closes the listeners
	}
	for _, l := range []net.Listener{n.clientLis, n.peerLis} {
		if l != nil {
			_ = l.Close()
		}
	}
	return nil
}

func listenPort(kind, node string, port int) (net.Listener, error) {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("cannot use %s port %d for %s (is another synod or etcd running? choose other ports with --%s-ports): %w",
			kind, port, node, kind, err)
	}
	return l, nil
}

func forwardFatal(ctx context.Context, n *demoNode, fatal chan<- error) {
	select {
	case err := <-n.srv.Fatal():
		fatal <- fmt.Errorf("%s failed: %w", n.name, err)
	case <-ctx.Done():
	}
}

// waitDemoReady waits until every node knows the same leader and every
// member has published its client URL, and returns the leader's name.
func waitDemoReady(ctx context.Context, nodes []*demoNode, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if leader, ok := demoLeader(ctx, nodes); ok {
			return leader, nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return "", fmt.Errorf("no leader elected within %s", timeout)
			}
			return "", ctx.Err()
		case <-tick.C:
		}
	}
}

func demoLeader(ctx context.Context, nodes []*demoNode) (string, bool) {
	lead := nodes[0].srv.Published().Lead
	if lead == 0 {
		return "", false
	}
	name := ""
	for _, n := range nodes {
		if n.srv.Published().Lead != lead {
			return "", false
		}
		if n.srv.MemberID() == lead {
			name = n.name
		}
		members, err := n.srv.Members(ctx, false)
		if err != nil {
			return "", false
		}
		for _, m := range members {
			if len(m.ClientURLs) == 0 {
				return "", false
			}
		}
	}
	return name, name != ""
}
