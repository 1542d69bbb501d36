package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/connectivity"

	"github.com/synod-io/synod/api/synodpb"
)

// Config configures a Client.
type Config struct {
	// Endpoints are the client addresses of some or all of the cluster's
	// nodes (host:port or http://host:port). Requests are balanced over
	// them and move to another when one fails.
	Endpoints []string
	// DialTimeout bounds the wait for a first connection in New (default
	// 5s).
	DialTimeout time.Duration
	// Logger receives the etcd client's logs (default: none).
	Logger *zap.Logger
}

// Client is a connection to a Synod cluster. The embedded etcd client
// provides KV, Watch, Lease, Cluster and Maintenance with failover across
// the endpoints; the methods of this package add sessions, locks,
// elections and groups. A Client is safe for concurrent use; Close it when
// done.
type Client struct {
	*clientv3.Client
	groups synodpb.GroupsClient
	limits synodpb.LimitsClient
}

// New connects to the cluster: it returns once a connection to one of the
// endpoints is ready, or fails when ctx ends or DialTimeout passes.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("client: no endpoints")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		Logger:      cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if err := WaitReady(dctx, cli); err != nil {
		cli.Close()
		return nil, fmt.Errorf("client: connect to %v: %w", cfg.Endpoints, err)
	}
	return FromEtcd(cli), nil
}

// FromEtcd returns a Client on an existing etcd client, using its
// endpoints, credentials and connection. Close closes cli.
func FromEtcd(cli *clientv3.Client) *Client {
	conn := cli.ActiveConnection()
	return &Client{Client: cli, groups: synodpb.NewGroupsClient(conn), limits: synodpb.NewLimitsClient(conn)}
}

// WaitReady waits until the client's connection to some endpoint is ready:
// clientv3.New dials lazily, so an unreachable cluster would otherwise
// surface only at the first request.
func WaitReady(ctx context.Context, cli *clientv3.Client) error {
	conn := cli.ActiveConnection()
	conn.Connect()
	for {
		st := conn.GetState()
		if st == connectivity.Ready {
			return nil
		}
		if !conn.WaitForStateChange(ctx, st) {
			return ctx.Err()
		}
	}
}

// Close closes the connections. Sessions of the client stop renewing their
// leases (which then expire; close sessions first to revoke them).
func (c *Client) Close() error { return c.Client.Close() }
