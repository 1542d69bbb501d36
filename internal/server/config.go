package server

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/grpc"

	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/peerauth"
	"github.com/synod-io/synod/internal/replica"
	"github.com/synod-io/synod/internal/tlsconfig"
	"github.com/synod-io/synod/internal/transport"
)

// Config configures a node. Zero values take the defaults documented per field.
type Config struct {
	// Name is this member's name in the initial cluster (default "default").
	Name string
	// DataDir holds the node's Pebble instance.
	DataDir string
	// FS overrides the filesystem (tests use vfs.NewStrictMem).
	FS vfs.FS

	// ClientAddr is the host:port the etcd-compatible gRPC API listens on
	// (default 127.0.0.1:2379); PeerAddr the one for other nodes (default
	// 127.0.0.1:2380). A listener may be passed instead (tests bind port 0).
	ClientAddr     string
	PeerAddr       string
	ClientListener net.Listener
	PeerListener   net.Listener
	// PeerDialOptions are added to every connection to a peer (tests use a
	// custom dialer to cut a node off the network). They come after the
	// dialer PeerSourceIP sets up, so a dialer here replaces it.
	PeerDialOptions []grpc.DialOption
	// PeerInterceptor, if set, sees every outgoing Raft message and snapshot
	// first (tests inject network faults with it; see transport.Interceptor).
	PeerInterceptor transport.Interceptor
	// AdvertiseClientURL is the client URL published to other members
	// (default http://<client listener address>, https:// with ClientTLS).
	AdvertiseClientURL string
	// AdvertisePeerURL is the URL other members reach this node's peer
	// service at, when it differs from where it listens (a proxy, NAT; as
	// etcd's --initial-advertise-peer-urls). Default http://<peer listener
	// address> (https:// with PeerTLS). It is this member's URL in InitialCluster.
	AdvertisePeerURL string
	// PeerSourceIP, if set, is the local IP address connections to peers are
	// made from (default: chosen by the OS). Tests give each node its own
	// loopback address so that a proxy can tell the nodes' traffic apart.
	PeerSourceIP string

	// ClientTLS, when it names a certificate, serves the client API over
	// TLS (client URLs are then https://). With ClientCertAuth, clients must
	// present a certificate that chains to ClientTLS.TrustedCAFile (mutual
	// TLS); the verified certificate is in the gRPC peer's AuthInfo. A node
	// joining with Join dials the cluster with ClientTLS too.
	ClientTLS      tlsconfig.Files
	ClientCertAuth bool
	// PeerTLS, when it names a certificate, secures node-to-node traffic in
	// both directions: every peer connection presents a certificate that
	// must chain to PeerTLS.TrustedCAFile (required), and a peer without one
	// cannot join, send Raft messages or snapshots, or read anything.
	// Both are reloaded when their files change.
	PeerTLS tlsconfig.Files
	// PeerSecret is the cluster's peer secret (at least peerauth.SecretLen
	// bytes). Without PeerTLS, every peer connection, in both directions,
	// must prove that it holds it (internal/peerauth) before any peer
	// service answers. It is stored in the data dir with the node's
	// identity, never replicated; once stored it may be omitted, and must
	// match if given. It is needed to bootstrap a cluster of several members
	// in separate processes (all with the same secret) and to start a member
	// added with MemberAdd (InitialClusterState "existing"); a single-member
	// cluster makes its own, and a node started with Join fetches the
	// cluster's over the client API. With PeerTLS, certificates
	// authenticate and the secret is not needed.
	PeerSecret []byte

	// CORS lists the origins whose web pages may read the JSON gateway's
	// answers (etcd's --cors; "*": any). Empty: none (etcd's default is any).
	CORS []string

	// Version is the version of the Synod build, shown by the web console
	// (other members ask for it with the member's status). Empty: unknown.
	Version string

	// AuthToken is etcd's --auth-token: "simple" (the default) or
	// "jwt,pub-key=<path>,priv-key=<path>,sign-method=<alg>[,ttl=<d>]".
	AuthToken string
	// AuthTokenTTL is how long an unused simple token lives (default 300 s).
	AuthTokenTTL time.Duration
	// BcryptCost is the cost of password hashes (default bcrypt's 10).
	BcryptCost int
	// AuthLoginBackoff and AuthLoginMaxBackoff throttle failed logins per
	// user name and per client address: after three failures in a row, the
	// next attempt waits AuthLoginBackoff (default 100ms), doubled with every
	// further failure up to AuthLoginMaxBackoff (default 10s); see
	// auth.LoginConfig. A negative AuthLoginBackoff turns throttling off.
	AuthLoginBackoff    time.Duration
	AuthLoginMaxBackoff time.Duration

	// InitialCluster lists the members of a new cluster,
	// "n1=127.0.0.1:2380,n2=...". Empty means a single-node cluster of this
	// node. It is read only when the data dir is empty; afterwards the
	// stored membership wins.
	InitialCluster string
	// ClusterToken makes IDs distinct between clusters built from the same
	// initial cluster string (default "synod-cluster").
	ClusterToken string

	// TickInterval is one Raft tick (default 100ms). The election timeout is
	// ElectionTicks ticks (default 10) and the heartbeat HeartbeatTicks
	// (default 1).
	TickInterval   time.Duration
	ElectionTicks  int
	HeartbeatTicks int

	// MaxRequestBytes bounds a request (default 1.5 MiB, as etcd).
	MaxRequestBytes int
	// MaxTxnOps bounds the operations of a txn (default 128, as etcd).
	MaxTxnOps int
	// RequestTimeout bounds the wait for a write or linearizable read
	// (default 5s plus two election timeouts, as etcd).
	RequestTimeout time.Duration

	// LogTruncateThreshold, LogKeepEntries and LogTruncateStep control Raft
	// log truncation (defaults 10,000, 5,000 and 1,000 entries; see
	// replica.Config).
	LogTruncateThreshold uint64
	LogKeepEntries       uint64
	LogTruncateStep      uint64

	// Join lists client endpoints of an existing cluster: a node with an
	// empty data dir adds itself as a learner through them, catches up by
	// snapshot, and is promoted to voter once caught up.
	Join []string
	// InitialClusterState is "new" (bootstrap a cluster from
	// InitialCluster) or "existing" (this member was added with MemberAdd;
	// its IDs are fetched from the members in InitialCluster), as etcd's
	// --initial-cluster-state.
	InitialClusterState string
	// QuotaBackendBytes is the storage size above which the member raises
	// the NOSPACE alarm (default DefaultQuotaBytes; negative: no quota).
	QuotaBackendBytes int64
	// RangeMaxBytes is the size (its keys' versions on disk, as Pebble
	// estimates it) above which a data range splits by itself, at its
	// middle live key (default DefaultRangeMaxBytes; negative: never).
	RangeMaxBytes int64
	// MetricsAddr, if set, serves /metrics, /healthz and /readyz (and
	// /debug/pprof with EnablePprof) over HTTP at this address.
	MetricsAddr string
	// EnablePprof serves Go's profiler on /debug/pprof at MetricsAddr (as
	// etcd's --enable-pprof). Off by default: profiles reveal the process's
	// command line and internals, and CPU profiles and traces cost CPU.
	EnablePprof bool

	// LeaseCheckpointInterval is how often the leader checkpoints the
	// remaining TTL of leases nobody renews (default 1s): after a failover,
	// such a lease lives at most this much longer than it should.
	LeaseCheckpointInterval time.Duration
	// WatchProgressNotifyInterval is how often watchers that asked for
	// progress notifications get one (default 10 minutes, as etcd).
	WatchProgressNotifyInterval time.Duration
	// WatchMaxStreamBytes bounds the watch events queued on the node for
	// one Watch stream, and WatchMaxQueuedBytes those for all of them
	// (defaults 16 MiB and 64 MiB; see watch.Config): a watcher over the
	// budget drops what it had queued and catches up from history once its
	// client reads again.
	WatchMaxStreamBytes int
	WatchMaxQueuedBytes int

	Logger *slog.Logger

	// OracleWindow is how far above the revisions it hands out the
	// revision oracle raises its stored ceiling (default
	// oracle.DefaultWindow); tests make it small to raise it often.
	OracleWindow uint64

	// DataRangeSplits, a test setting, bootstraps a new cluster with a data
	// range per span between these user keys (sorted, each above every
	// reserved key, keys.ReservedPrefix) instead of one over every key
	// (issue 15, step 2: static data ranges). Writes go to the range of
	// their keys and may not span ranges; reads over any span are served
	// at a revision from the oracle (ReadsAtOracleRevision); watches see
	// every range (watchmerge.go); leases, the job queues and the rate
	// limiters stay in the first range. Nodes that join later, and
	// restores, are not supported with it yet.
	DataRangeSplits [][]byte

	// ReadsAtOracleRevision serves linearizable reads (Range, read-only
	// Txn) at a revision taken from the oracle, after a read fence on
	// every data range (readfence.go): the way reads over several ranges
	// will be served. With one data range it is only slower (an oracle
	// round and a fence per read); tests turn it on to exercise the path.
	ReadsAtOracleRevision bool

	// TestingBeforeApply, if set, runs on the range's goroutine before the
	// node acts on an applied batch of a range (its lease, watch and
	// membership effects). Tests hold a member's apply back with it;
	// production leaves it nil.
	TestingBeforeApply func(keys.RangeID, replica.ApplyOutput)
}

func (c *Config) setDefaults() {
	if c.Name == "" {
		c.Name = "default"
	}
	if c.ClientAddr == "" {
		c.ClientAddr = "127.0.0.1:2379"
	}
	if c.PeerAddr == "" {
		c.PeerAddr = "127.0.0.1:2380"
	}
	if c.ClusterToken == "" {
		c.ClusterToken = "synod-cluster"
	}
	if c.TickInterval == 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 10
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = 1
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = 1536 * 1024
	}
	if c.MaxTxnOps == 0 {
		c.MaxTxnOps = 128
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 5*time.Second + 2*time.Duration(c.ElectionTicks)*c.TickInterval
	}
	if c.InitialClusterState == "" {
		c.InitialClusterState = "new"
	}
	if c.QuotaBackendBytes == 0 {
		c.QuotaBackendBytes = DefaultQuotaBytes
	}
	if c.RangeMaxBytes == 0 {
		c.RangeMaxBytes = DefaultRangeMaxBytes
	}
	if c.LeaseCheckpointInterval == 0 {
		c.LeaseCheckpointInterval = time.Second
	}
	if c.WatchProgressNotifyInterval == 0 {
		c.WatchProgressNotifyInterval = 10 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// CheckDataRangeSplits checks split keys of Config.DataRangeSplits: sorted,
// distinct, each above every reserved key (keys.ReservedPrefix).
func CheckDataRangeSplits(splits [][]byte) error {
	for i, k := range splits {
		if bytes.Compare(k, keys.ReservedEnd) < 0 {
			return fmt.Errorf("data range split %q: splits must sort above every reserved key (%q...)", k, keys.ReservedPrefix)
		}
		if i > 0 && bytes.Compare(k, splits[i-1]) <= 0 {
			return fmt.Errorf("data range splits must be sorted and distinct: %q after %q", k, splits[i-1])
		}
	}
	return nil
}

// maxRecvMsgSize is the largest message the client API receives: a
// request over MaxRequestBytes but within it gets etcd's "request is too
// large"; gRPC itself refuses larger ones with ResourceExhausted, as etcd's
// server does.
func (c *Config) maxRecvMsgSize() int { return c.MaxRequestBytes + 512*1024 }

func (c *Config) validate() error {
	if c.DataDir == "" {
		return errors.New("data dir is required")
	}
	if c.HeartbeatTicks >= c.ElectionTicks {
		return fmt.Errorf("election ticks (%d) must exceed heartbeat ticks (%d)", c.ElectionTicks, c.HeartbeatTicks)
	}
	if c.MaxRequestBytes < 0 || c.MaxTxnOps < 0 || c.WatchMaxStreamBytes < 0 || c.WatchMaxQueuedBytes < 0 {
		return errors.New("limits must not be negative")
	}
	if c.InitialClusterState != "new" && c.InitialClusterState != "existing" {
		return fmt.Errorf("initial cluster state must be new or existing, got %q", c.InitialClusterState)
	}
	if c.InitialClusterState == "existing" && c.InitialCluster == "" && len(c.Join) == 0 {
		return errors.New("initial cluster state existing needs the initial cluster (as printed by member add)")
	}
	if c.AdvertisePeerURL != "" {
		u, err := cluster.NormalizeURL(c.AdvertisePeerURL)
		if err != nil {
			return fmt.Errorf("advertise peer url: %w", err)
		}
		c.AdvertisePeerURL = u
	}
	if c.PeerSourceIP != "" && net.ParseIP(c.PeerSourceIP) == nil {
		return fmt.Errorf("peer source ip: %q is not an IP address", c.PeerSourceIP)
	}
	if c.ClientTLS.Enabled() && c.ClientTLS.CertFile == "" {
		return errors.New("client tls: a trusted ca without a certificate and key: give the cert and key files")
	}
	if c.ClientCertAuth && (c.ClientTLS.CertFile == "" || c.ClientTLS.TrustedCAFile == "") {
		return errors.New("client cert auth needs the client cert, key and trusted ca files")
	}
	if c.PeerSecret != nil {
		if err := peerauth.CheckSecret(c.PeerSecret); err != nil {
			return fmt.Errorf("peer secret: %w", err)
		}
	}
	if err := CheckDataRangeSplits(c.DataRangeSplits); err != nil {
		return err
	}
	if c.PeerTLS.Enabled() && (c.PeerTLS.CertFile == "" || c.PeerTLS.TrustedCAFile == "") {
		return errors.New("peer tls needs the peer cert, key and trusted ca files (peers always verify each other)")
	}
	return nil
}
