package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/grpc"
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
	// custom dialer to cut a node off the network).
	PeerDialOptions []grpc.DialOption
	// AdvertiseClientURL is the client URL published to other members
	// (default http://<client listener address>).
	AdvertiseClientURL string

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

	// LogTruncateThreshold and LogKeepEntries control Raft log truncation
	// (defaults 10,000 and 5,000 entries).
	LogTruncateThreshold uint64
	LogKeepEntries       uint64

	Logger *slog.Logger
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
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	if c.DataDir == "" {
		return errors.New("data dir is required")
	}
	if c.HeartbeatTicks >= c.ElectionTicks {
		return fmt.Errorf("election ticks (%d) must exceed heartbeat ticks (%d)", c.ElectionTicks, c.HeartbeatTicks)
	}
	if c.MaxRequestBytes < 0 || c.MaxTxnOps < 0 {
		return errors.New("limits must not be negative")
	}
	return nil
}
