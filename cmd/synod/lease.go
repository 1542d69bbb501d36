package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (a *app) leaseCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lease",
		Short: "Grant, renew, inspect and revoke leases",
		Long: `Leases are TTLs that keys can be attached to (synod put --lease ID): when a
lease expires or is revoked, its keys are deleted. IDs are hexadecimal, as
etcdctl prints them.`,
	}
	cmd.AddCommand(a.leaseGrantCmd(), a.leaseRevokeCmd(), a.leaseKeepAliveCmd(), a.leaseTimeToLiveCmd(), a.leaseListCmd())
	return cmd
}

func (a *app) leaseGrantCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "grant TTL",
		Short: "Grant a lease of TTL seconds",
		Args:  argsBetween(1, 1, "TTL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ttl, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || ttl <= 0 {
				return usageErrorf("bad TTL %q: want a positive number of seconds", args[0])
			}
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.Grant(ctx, ttl)
				if err != nil {
					return err
				}
				p := a.printer(cmd)
				if p.format == outputJSON {
					return p.json(&pb.LeaseGrantResponse{Header: resp.ResponseHeader, ID: int64(resp.ID), TTL: resp.TTL})
				}
				return p.write([]byte(fmt.Sprintf("lease %016x granted with TTL(%ds)\n", resp.ID, resp.TTL)))
			})
		},
	}
}

func (a *app) leaseRevokeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a lease, deleting its keys",
		Args:  argsBetween(1, 1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseLeaseID(args[0])
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.Revoke(ctx, id)
				if err != nil {
					return err
				}
				p := a.printer(cmd)
				if p.format == outputJSON {
					return p.json((*pb.LeaseRevokeResponse)(resp))
				}
				return p.write([]byte(fmt.Sprintf("lease %016x revoked\n", id)))
			})
		},
	}
}

func (a *app) leaseKeepAliveCmd() *cobra.Command {
	var once bool
	cmd := &cobra.Command{
		Use:   "keep-alive ID",
		Short: "Keep a lease alive until interrupted (or renew it once with --once)",
		Args:  argsBetween(1, 1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseLeaseID(args[0])
			if err != nil {
				return err
			}
			p := a.printer(cmd)
			print := func(r *clientv3.LeaseKeepAliveResponse) error {
				if p.format == outputJSON {
					return p.json(&pb.LeaseKeepAliveResponse{Header: r.ResponseHeader, ID: int64(r.ID), TTL: r.TTL})
				}
				return p.write([]byte(fmt.Sprintf("lease %016x keepalived with TTL(%d)\n", r.ID, r.TTL)))
			}
			if once {
				return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
					resp, err := cli.KeepAliveOnce(ctx, id)
					if err != nil {
						return err
					}
					return print(resp)
				})
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cli, err := a.opts.client.connect(ctx)
			if err != nil {
				return err
			}
			defer cli.Close()
			ch, err := cli.KeepAlive(ctx, id)
			if err != nil {
				return err
			}
			for resp := range ch {
				if err := print(resp); err != nil {
					return err
				}
			}
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("lease %016x expired or was revoked", id)
		},
	}
	cmd.Flags().BoolVar(&once, "once", false, "renew once and exit")
	return cmd
}

func (a *app) leaseTimeToLiveCmd() *cobra.Command {
	var withKeys bool
	cmd := &cobra.Command{
		Use:   "timetolive ID",
		Short: "Show a lease's remaining TTL (and its keys with --keys)",
		Args:  argsBetween(1, 1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseLeaseID(args[0])
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				var opts []clientv3.LeaseOption
				if withKeys {
					opts = append(opts, clientv3.WithAttachedKeys())
				}
				resp, err := cli.TimeToLive(ctx, id, opts...)
				if err != nil {
					return err
				}
				p := a.printer(cmd)
				if p.format == outputJSON {
					return p.json(&pb.LeaseTimeToLiveResponse{Header: resp.ResponseHeader, ID: int64(resp.ID),
						TTL: resp.TTL, GrantedTTL: resp.GrantedTTL, Keys: resp.Keys})
				}
				if resp.TTL == -1 {
					return p.write([]byte(fmt.Sprintf("lease %016x already expired\n", id)))
				}
				line := fmt.Sprintf("lease %016x granted with TTL(%ds), remaining(%ds)", id, resp.GrantedTTL, resp.TTL)
				if withKeys {
					ks := make([]string, len(resp.Keys))
					for i, k := range resp.Keys {
						ks[i] = string(k)
					}
					line += fmt.Sprintf(", attached keys([%s])", strings.Join(ks, " "))
				}
				return p.write([]byte(line + "\n"))
			})
		},
	}
	cmd.Flags().BoolVar(&withKeys, "keys", false, "also list the keys attached to the lease")
	return cmd
}

func (a *app) leaseListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the leases",
		Args:  argsBetween(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.Leases(ctx)
				if err != nil {
					return err
				}
				p := a.printer(cmd)
				if p.format == outputJSON {
					out := &pb.LeaseLeasesResponse{Header: resp.ResponseHeader}
					for _, l := range resp.Leases {
						out.Leases = append(out.Leases, &pb.LeaseStatus{ID: int64(l.ID)})
					}
					return p.json(out)
				}
				out := fmt.Sprintf("found %d leases\n", len(resp.Leases))
				for _, l := range resp.Leases {
					out += fmt.Sprintf("%016x\n", l.ID)
				}
				return p.write([]byte(out))
			})
		},
	}
}
