package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/server"
)

// startOptions are the flags of `synod start`.
type startOptions struct {
	name                 string
	dataDir              string
	clientAddr           string
	peerAddr             string
	advertiseClientURL   string
	advertisePeerURL     string
	peerSourceIP         string
	authToken            string
	authTokenTTL         time.Duration
	bcryptCost           int
	initialCluster       string
	clusterToken         string
	tickInterval         time.Duration
	electionTicks        int
	heartbeatTicks       int
	maxRequestBytes      int
	maxTxnOps            int
	requestTimeout       time.Duration
	logTruncateThreshold uint64
	logKeepEntries       uint64
	join                 []string
	initialClusterState  string
	quotaBackendBytes    int64
	rangeMaxBytes        int64
	testDataRangeSplits  string
	metricsAddr          string
	peerSecretFile       string
	enablePprof          bool
	cors                 []string
	tls                  startTLSOptions
	log                  logOptions
}

func (o *startOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.name, "name", "default", "name of this member, as in --initial-cluster")
	fs.StringVar(&o.dataDir, "data-dir", "", `directory of the node's data (default "<name>.synod")`)
	fs.StringVar(&o.clientAddr, "client-addr", "127.0.0.1:2379", "host:port to serve the etcd client API on")
	fs.StringVar(&o.peerAddr, "peer-addr", "127.0.0.1:2380", "host:port to serve the other members on")
	fs.StringVar(&o.advertiseClientURL, "advertise-client-url", "", "client URL published to the cluster (default http://<client-addr>, or https:// with --cert-file)")
	fs.StringVar(&o.advertisePeerURL, "advertise-peer-url", "", "peer URL the other members reach this node at, when not --peer-addr (a proxy, NAT); this member's URL in --initial-cluster (default http://<peer-addr>)")
	fs.StringVar(&o.peerSourceIP, "peer-source-ip", "", "local IP address to connect to the other members from (default: chosen by the OS)")
	fs.StringVar(&o.authToken, "auth-token", "simple", "auth tokens: simple, or jwt,pub-key=PATH,priv-key=PATH,sign-method=ALG[,ttl=DURATION] (as etcd)")
	fs.DurationVar(&o.authTokenTTL, "auth-token-ttl", 300*time.Second, "how long an unused simple token stays valid")
	fs.IntVar(&o.bcryptCost, "bcrypt-cost", 10, "bcrypt cost of password hashes (4 to 31)")
	fs.StringVar(&o.initialCluster, "initial-cluster", "", `members of a new cluster, "n1=host:port,n2=host:port,..." with peer addresses (empty: a single-node cluster); ignored once the data dir exists`)
	fs.StringVar(&o.clusterToken, "cluster-token", "synod-cluster", "token that keeps the IDs of distinct clusters apart")
	fs.DurationVar(&o.tickInterval, "tick-interval", 100*time.Millisecond, "duration of one Raft tick")
	fs.IntVar(&o.electionTicks, "election-ticks", 10, "election timeout, in ticks")
	fs.IntVar(&o.heartbeatTicks, "heartbeat-ticks", 1, "heartbeat interval, in ticks (less than --election-ticks)")
	fs.IntVar(&o.maxRequestBytes, "max-request-bytes", 1536*1024, "largest client request accepted, in bytes")
	fs.IntVar(&o.maxTxnOps, "max-txn-ops", 128, "most compares, and most operations per branch, of a txn")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 0, "how long a write or linearizable read may wait (default 5s plus two election timeouts)")
	fs.Uint64Var(&o.logTruncateThreshold, "log-truncate-threshold", 10000, "applied Raft entries the log may hold while a member lags, before each member truncates it anyway (while all members keep up, it is truncated every 1,000 entries)")
	fs.Uint64Var(&o.logKeepEntries, "log-keep-entries", 5000, "Raft entries kept when a member lags and the log reaches --log-truncate-threshold")
	fs.StringSliceVar(&o.join, "join", nil, "client endpoints of an existing cluster to join: this node adds itself as a learner, catches up, and is promoted to voter (data dir must be new)")
	fs.StringVar(&o.initialClusterState, "initial-cluster-state", "new", `"new" to bootstrap --initial-cluster, or "existing" for a member added with 'member add' (as etcd)`)
	fs.Int64Var(&o.quotaBackendBytes, "quota-backend-bytes", server.DefaultQuotaBytes, "storage size above which the NOSPACE alarm is raised and writes refused (negative: no quota)")
	fs.Int64Var(&o.rangeMaxBytes, "range-max-bytes", server.DefaultRangeMaxBytes, rangeMaxBytesUsage)
	addTestSplitsFlag(fs, &o.testDataRangeSplits)
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "host:port to serve /metrics, /healthz and /readyz on, plain HTTP (empty: none)")
	fs.StringVar(&o.peerSecretFile, "peer-secret-file", "", "file with the cluster's peer secret ('synod peer-secret new'), with which members authenticate each other without peer TLS: "+
		"needed by a new data dir whose --initial-cluster has several members, and with --initial-cluster-state existing; kept in the data dir")
	fs.BoolVar(&o.enablePprof, "enable-pprof", false, "also serve Go's profiler on /debug/pprof at --metrics-addr")
	fs.StringSliceVar(&o.cors, "cors", nil, `origins whose web pages may read the JSON gateway's answers on the client port, comma-separated ("*": any; default: none, where etcd allows any)`)
	o.tls.addFlags(fs)
	o.log.addFlags(fs, "info")
}

// config checks the flags and returns the node's configuration (without its
// logger).
func (o *startOptions) config() (server.Config, error) {
	if o.name == "" || strings.ContainsAny(o.name, "=, \t") {
		return server.Config{}, usageErrorf("--name must be non-empty without '=', ',' or spaces, got %q", o.name)
	}
	dataDir := o.dataDir
	if dataDir == "" {
		dataDir = o.name + ".synod"
	}
	if err := checkHostPort("client-addr", o.clientAddr); err != nil {
		return server.Config{}, err
	}
	if err := checkHostPort("peer-addr", o.peerAddr); err != nil {
		return server.Config{}, err
	}
	advertise := o.advertiseClientURL
	if advertise != "" {
		u, err := cluster.NormalizeURL(advertise)
		if err != nil {
			return server.Config{}, usageErrorf("--advertise-client-url: %v", err)
		}
		advertise = u
	}
	advertisePeer := o.advertisePeerURL
	if advertisePeer != "" {
		u, err := cluster.NormalizeURL(advertisePeer)
		if err != nil {
			return server.Config{}, usageErrorf("--advertise-peer-url: %v", err)
		}
		advertisePeer = u
	}
	if o.peerSourceIP != "" && net.ParseIP(o.peerSourceIP) == nil {
		return server.Config{}, usageErrorf("--peer-source-ip must be an IP address, got %q", o.peerSourceIP)
	}
	if o.initialCluster != "" && o.initialClusterState != "existing" {
		if err := checkInitialCluster(o.initialCluster, o.name, o.peerAddr, advertisePeer); err != nil {
			return server.Config{}, err
		}
	}
	switch o.initialClusterState {
	case "new":
	case "existing":
		if o.initialCluster == "" {
			return server.Config{}, usageErrorf("--initial-cluster-state existing needs --initial-cluster (as printed by member add)")
		}
	default:
		return server.Config{}, usageErrorf("--initial-cluster-state must be new or existing, got %q", o.initialClusterState)
	}
	for _, ep := range o.join {
		if err := checkEndpoint(ep); err != nil {
			return server.Config{}, usageErrorf("--join: %v", err)
		}
	}
	if len(o.join) > 0 && (o.initialCluster != "" || o.initialClusterState == "existing") {
		return server.Config{}, usageErrorf("--join cannot be combined with --initial-cluster or --initial-cluster-state existing")
	}
	if o.metricsAddr != "" {
		if err := checkHostPort("metrics-addr", o.metricsAddr); err != nil {
			return server.Config{}, err
		}
	} else if o.enablePprof {
		return server.Config{}, usageErrorf("--enable-pprof needs --metrics-addr, where /debug/pprof is served")
	}
	if o.quotaBackendBytes == 0 {
		return server.Config{}, usageErrorf("--quota-backend-bytes must not be 0 (negative disables the quota)")
	}
	if err := checkRangeMaxBytes(o.rangeMaxBytes); err != nil {
		return server.Config{}, err
	}
	splits, err := parseTestSplits(o.testDataRangeSplits)
	if err != nil {
		return server.Config{}, err
	}
	if o.clusterToken == "" {
		return server.Config{}, usageErrorf("--cluster-token must not be empty")
	}
	for _, err := range []error{
		positive("tick-interval", o.tickInterval),
		positive("election-ticks", o.electionTicks),
		positive("heartbeat-ticks", o.heartbeatTicks),
		positive("max-request-bytes", o.maxRequestBytes),
		positive("max-txn-ops", o.maxTxnOps),
		positive("log-truncate-threshold", o.logTruncateThreshold),
		positive("log-keep-entries", o.logKeepEntries),
	} {
		if err != nil {
			return server.Config{}, err
		}
	}
	if o.heartbeatTicks >= o.electionTicks {
		return server.Config{}, usageErrorf("--heartbeat-ticks (%d) must be less than --election-ticks (%d)", o.heartbeatTicks, o.electionTicks)
	}
	if o.requestTimeout < 0 {
		return server.Config{}, usageErrorf("--request-timeout must not be negative, got %s", o.requestTimeout)
	}
	if o.logKeepEntries > o.logTruncateThreshold {
		return server.Config{}, usageErrorf("--log-keep-entries (%d) must not exceed --log-truncate-threshold (%d)", o.logKeepEntries, o.logTruncateThreshold)
	}
	cfg := server.Config{
		Version:              Version,
		Name:                 o.name,
		DataDir:              dataDir,
		ClientAddr:           o.clientAddr,
		PeerAddr:             o.peerAddr,
		AdvertiseClientURL:   advertise,
		AdvertisePeerURL:     advertisePeer,
		PeerSourceIP:         o.peerSourceIP,
		AuthToken:            o.authToken,
		AuthTokenTTL:         o.authTokenTTL,
		BcryptCost:           o.bcryptCost,
		InitialCluster:       o.initialCluster,
		ClusterToken:         o.clusterToken,
		TickInterval:         o.tickInterval,
		ElectionTicks:        o.electionTicks,
		HeartbeatTicks:       o.heartbeatTicks,
		MaxRequestBytes:      o.maxRequestBytes,
		MaxTxnOps:            o.maxTxnOps,
		RequestTimeout:       o.requestTimeout,
		LogTruncateThreshold: o.logTruncateThreshold,
		LogKeepEntries:       o.logKeepEntries,
		Join:                 o.join,
		InitialClusterState:  o.initialClusterState,
		QuotaBackendBytes:    o.quotaBackendBytes,
		RangeMaxBytes:        o.rangeMaxBytes,
		DataRangeSplits:      splits,
		MetricsAddr:          o.metricsAddr,
		EnablePprof:          o.enablePprof,
		CORS:                 o.cors,
	}
	if err := o.tls.apply(&cfg); err != nil {
		return server.Config{}, err
	}
	if o.peerSecretFile != "" {
		secret, err := readPeerSecretFile(o.peerSecretFile)
		if err != nil {
			return server.Config{}, err
		}
		cfg.PeerSecret = secret
	} else if !cfg.PeerTLS.Enabled() && dataDirIsNew(dataDir) {
		if err := o.checkNeedsNoSecret(); err != nil {
			return server.Config{}, err
		}
	}
	return cfg, nil
}

// checkNeedsNoSecret refuses, before a new data dir is made, a start
// without peer TLS that needs the cluster's peer secret and was given none:
// several initial members in separate processes, or a member added with
// member add.
func (o *startOptions) checkNeedsNoSecret() error {
	if o.initialClusterState == "existing" {
		return usageErrorf("--initial-cluster-state existing needs the cluster's --peer-secret-file (write it with 'synod peer-secret get FILE', " +
			"as root when auth is enabled), or peer TLS; or start the node with --join instead")
	}
	if o.initialCluster == "" {
		return nil
	}
	members, err := cluster.ParseInitialCluster(o.initialCluster)
	if err != nil || len(members) < 2 {
		return nil
	}
	return usageErrorf("--initial-cluster has %d members: without peer TLS they authenticate each other with a shared peer secret; "+
		"make one with 'synod peer-secret new FILE', copy it to every member and start each with --peer-secret-file FILE", len(members))
}

// checkHostPort checks that a flag holds host:port with a valid port.
func checkHostPort(flag, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return usageErrorf("--%s must be host:port, got %q", flag, addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return usageErrorf("--%s: bad port %q", flag, port)
	}
	return nil
}

// checkInitialCluster checks that spec parses, names this member and gives
// it the URL it advertises or, without --advertise-peer-url, the port it
// listens on for peers: a data dir bootstrapped from a wrong spec could never
// join its cluster.
func checkInitialCluster(spec, name, peerAddr, advertisePeerURL string) error {
	members, err := cluster.ParseInitialCluster(spec)
	if err != nil {
		return usageErrorf("--initial-cluster: %v", err)
	}
	for _, m := range members {
		if m.Name != name {
			continue
		}
		if advertisePeerURL != "" {
			if m.PeerURLs[0] != advertisePeerURL {
				return usageErrorf("--initial-cluster gives %s the peer URL %s, but --advertise-peer-url is %s", name, m.PeerURLs[0], advertisePeerURL)
			}
			return nil
		}
		hostPort := cluster.HostPort(m.PeerURLs[0])
		_, port, _ := net.SplitHostPort(hostPort)
		_, listenPort, _ := net.SplitHostPort(peerAddr)
		if port != listenPort {
			return usageErrorf("--initial-cluster gives %s the peer address %s, but --peer-addr is %s", name, hostPort, peerAddr)
		}
		return nil
	}
	return usageErrorf("--initial-cluster has no member named %q (--name)", name)
}

func (a *app) startCmd() *cobra.Command {
	var o startOptions
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Run a node",
		Long: `Run one Synod node until SIGINT or SIGTERM.

A new cluster of several nodes starts with the same --initial-cluster and
the same peer secret on every node (without peer TLS, the members prove the
secret to each other on every connection), e.g. for the first of three:

  synod peer-secret new secret.hex    # once; copy the file to every node
  synod start --name n1 --client-addr 127.0.0.1:2379 --peer-addr 127.0.0.1:2380 \
    --initial-cluster n1=127.0.0.1:2380,n2=127.0.0.1:22380,n3=127.0.0.1:32380 \
    --peer-secret-file secret.hex

A node restarted with an existing data dir keeps its identity, membership
and peer secret, and ignores --initial-cluster.

To add a node to a running cluster, start it with a new data dir and
--join (it becomes a learner, catches up by snapshot, and is promoted):

  synod start --name n4 --client-addr 127.0.0.1:42379 --peer-addr 127.0.0.1:42380 \
    --join 127.0.0.1:2379,127.0.0.1:22379

(it fetches the peer secret over the client API: root only when auth is
enabled), or the etcd way: 'member add' (synod or etcdctl), then start the
node with the printed --initial-cluster, --initial-cluster-state existing
and the cluster's --peer-secret-file ('synod peer-secret get FILE').`,
		Args: argsBetween(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.config()
			if err != nil {
				return err
			}
			if cfg.Logger, err = o.log.logger(cmd.ErrOrStderr()); err != nil {
				return err
			}
			if o.peerSecretFile != "" {
				warnLoosePermissions(cfg.Logger, o.peerSecretFile)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			srv, err := server.Open(cfg)
			if err != nil {
				return fmt.Errorf("start node %s: %w", cfg.Name, err)
			}
			select {
			case <-ctx.Done():
				stop() // a second signal ends the process at once
				cfg.Logger.Info("shutting down")
				if err := srv.Close(); err != nil {
					return fmt.Errorf("stop node: %w", err)
				}
				cfg.Logger.Info("stopped")
				return nil
			case err := <-srv.Fatal():
				cfg.Logger.Error("node failed", "err", err)
				_ = srv.Close()
				return fmt.Errorf("node failed: %w", err)
			}
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}
