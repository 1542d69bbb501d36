package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/client"
)

// clientOptions are the flags of the client commands.
type clientOptions struct {
	endpoints      []string
	dialTimeout    time.Duration
	commandTimeout time.Duration
	// TLS, with etcdctl's flag names (see tls.go).
	caFile, certFile, keyFile string
	// user is --user NAME[:PASSWORD] (etcdctl's), for auth-enabled clusters.
	user string
}

func (o *clientOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringSliceVar(&o.endpoints, "endpoints", []string{"127.0.0.1:2379"}, "comma-separated client endpoints (host:port or http://host:port)")
	fs.DurationVar(&o.dialTimeout, "dial-timeout", 5*time.Second, "how long to wait for a connection to an endpoint")
	fs.DurationVar(&o.commandTimeout, "command-timeout", 5*time.Second, "how long to wait for a command to complete")
	fs.StringVar(&o.caFile, "cacert", "", "verify the servers' certificates with this CA bundle (PEM); connects with TLS")
	fs.StringVar(&o.certFile, "cert", "", "client certificate (PEM) to present, for clusters that require one")
	fs.StringVar(&o.keyFile, "key", "", "key of --cert (PEM)")
	fs.StringVar(&o.user, "user", "", "user NAME:PASSWORD for clusters with auth enabled")
}

func (o *clientOptions) validate() error {
	if len(o.endpoints) == 0 {
		return usageErrorf("--endpoints must name at least one endpoint")
	}
	for _, ep := range o.endpoints {
		if err := checkEndpoint(ep); err != nil {
			return usageError{err}
		}
	}
	if err := positive("dial-timeout", o.dialTimeout); err != nil {
		return err
	}
	if err := o.validateTLS(); err != nil {
		return err
	}
	return positive("command-timeout", o.commandTimeout)
}

// checkEndpoint accepts host:port, http://host:port and https://host:port.
func checkEndpoint(ep string) error {
	hostPort := ep
	if scheme, rest, ok := strings.Cut(ep, "://"); ok {
		if scheme != "http" && scheme != "https" {
			return fmt.Errorf("endpoint %q: scheme must be http or https", ep)
		}
		hostPort = strings.TrimSuffix(rest, "/")
	}
	if _, port, err := net.SplitHostPort(hostPort); err != nil || port == "" {
		return fmt.Errorf("endpoint %q: want host:port or http://host:port", ep)
	}
	return nil
}

// connect returns a client of the endpoints once one of them accepts a
// connection; it fails after --dial-timeout.
func (o *clientOptions) connect(ctx context.Context) (*clientv3.Client, error) {
	tlsCfg, err := o.clientTLSConfig()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   o.endpoints,
		DialTimeout: o.dialTimeout,
		Logger:      zap.NewNop(),
		Context:     ctx,
		TLS:         tlsCfg,
		Username:    userName(o.user),
		Password:    userPassword(o.user),
	})
	if err != nil {
		return nil, fmt.Errorf("create client: %w", err)
	}
	dialCtx, cancel := context.WithTimeout(ctx, o.dialTimeout)
	defer cancel()
	if err := client.WaitReady(dialCtx, cli); err != nil {
		cli.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		hint := "is the cluster running? see --endpoints"
		if tlsCfg != nil {
			hint += "; for TLS, --cacert, --cert and --key"
		}
		return nil, fmt.Errorf("cannot connect to %s within %s (%s)",
			strings.Join(o.endpoints, ","), o.dialTimeout, hint)
	}
	return cli, nil
}

// userName and userPassword split --user NAME:PASSWORD.
func userName(u string) string { name, _, _ := strings.Cut(u, ":"); return name }

func userPassword(u string) string { _, pw, _ := strings.Cut(u, ":"); return pw }

// withClient connects to the endpoints and runs fn with a context bounded
// by --command-timeout.
func (a *app) withClient(cmd *cobra.Command, fn func(ctx context.Context, cli *clientv3.Client) error) error {
	cli, err := a.opts.client.connect(cmd.Context())
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), a.opts.client.commandTimeout)
	defer cancel()
	return fn(ctx, cli)
}

// errorMessage turns an error into the message shown to the user: etcd
// errors read as etcdctl prints them ("etcdserver: key is not provided").
func errorMessage(err error) string {
	var ee rpctypes.EtcdError
	if errors.As(rpctypes.Error(err), &ee) {
		return ee.Error()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "context deadline exceeded (the command did not complete within --command-timeout)"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable:
			return "endpoint unavailable: " + st.Message()
		case codes.DeadlineExceeded:
			return "context deadline exceeded (the command did not complete within --command-timeout)"
		case codes.Unimplemented:
			return "not supported by the server: " + st.Message()
		case codes.OK, codes.Unknown:
		default:
			return st.Message()
		}
	}
	return err.Error()
}

// withSynodClient connects and runs fn with Synod's Go client on the
// connection, closed when fn returns.
func (a *app) withSynodClient(ctx context.Context, fn func(c *client.Client) error) error {
	cli, err := a.opts.client.connect(ctx)
	if err != nil {
		return err
	}
	c := client.FromEtcd(cli)
	defer c.Close()
	return fn(c)
}
