package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (a *app) alarmCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "alarm",
		Short: "List or disarm alarms",
		Long: `A member over its storage quota raises NOSPACE: writes that add data are
refused, reads and deletes go on. Free space (delete, compact, defrag), then
disarm.`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the active alarms",
		Args:  argsBetween(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.AlarmList(ctx)
				if err != nil {
					return err
				}
				return a.printAlarms(cmd, (*pb.AlarmResponse)(resp))
			})
		},
	}, &cobra.Command{
		Use:   "disarm",
		Short: "Disarm every active alarm",
		Args:  argsBetween(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.AlarmDisarm(ctx, &clientv3.AlarmMember{})
				if err != nil {
					return err
				}
				return a.printAlarms(cmd, (*pb.AlarmResponse)(resp))
			})
		},
	})
	return cmd
}

func (a *app) printAlarms(cmd *cobra.Command, r *pb.AlarmResponse) error {
	p := a.printer(cmd)
	if p.format == outputJSON {
		return p.json(r)
	}
	var b strings.Builder
	for _, al := range r.Alarms {
		fmt.Fprintf(&b, "memberID:%x alarm:%s\n", al.MemberID, al.Alarm)
	}
	return p.write([]byte(b.String()))
}

func (a *app) defragCmd() *cobra.Command {
	var clusterWide bool
	cmd := &cobra.Command{
		Use:   "defrag",
		Short: "Compact the storage of each endpoint (it keeps serving)",
		Args:  argsBetween(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				eps := a.opts.client.endpoints
				if clusterWide {
					var err error
					if eps, err = clusterEndpoints(ctx, cli); err != nil {
						return err
					}
				}
				var out strings.Builder
				for _, ep := range eps {
					if _, err := cli.Defragment(ctx, ep); err != nil {
						return fmt.Errorf("defragment %s: %w", ep, err)
					}
					fmt.Fprintf(&out, "Finished defragmenting %s\n", ep)
				}
				return a.printer(cmd).write([]byte(out.String()))
			})
		},
	}
	cmd.Flags().BoolVar(&clusterWide, "cluster", false, "defragment every member")
	return cmd
}

func (a *app) moveLeaderCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "move-leader ID",
		Short: "Hand leadership to another voter",
		Args:  argsBetween(1, 1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseMemberID(args[0])
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				if _, err := cli.MoveLeader(ctx, id); err != nil {
					return err
				}
				return a.printer(cmd).write([]byte(fmt.Sprintf("Leadership transferred to %x\n", id)))
			})
		},
	}
}

func (a *app) hashKVCmd() *cobra.Command {
	var rev int64
	var clusterWide bool
	cmd := &cobra.Command{
		Use:   "hashkv",
		Short: "Hash each endpoint's KV state at a revision, to compare members",
		Long: `Hash the KV state of each endpoint at --rev (default: the first endpoint's
current revision). Members that applied the same history report the same
hash at the same revision and compaction revision.`,
		Args: argsBetween(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				eps := a.opts.client.endpoints
				if clusterWide {
					var err error
					if eps, err = clusterEndpoints(ctx, cli); err != nil {
						return err
					}
				}
				r := rev
				var out strings.Builder
				for _, ep := range eps {
					resp, err := cli.HashKV(ctx, ep, r)
					if err != nil {
						return fmt.Errorf("hashkv %s: %w", ep, err)
					}
					r = resp.HashRevision
					fmt.Fprintf(&out, "%s, %d, %d, %d\n", ep, resp.Hash, resp.HashRevision, resp.CompactRevision)
				}
				return a.printer(cmd).write([]byte(out.String()))
			})
		},
	}
	cmd.Flags().Int64Var(&rev, "rev", 0, "revision to hash at")
	cmd.Flags().BoolVar(&clusterWide, "cluster", false, "hash every member")
	return cmd
}
