package main

import (
	"context"
	"strconv"

	"github.com/spf13/cobra"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (a *app) compactCmd() *cobra.Command {
	var physical bool
	cmd := &cobra.Command{
		Use:   "compact REV",
		Short: "Discard the history of keys before a revision",
		Long: `Discard every version of every key older than revision REV, except the
latest version of each key at REV. Reads at an older revision then fail.
With --physical, wait until the discarded versions are removed from disk.`,
		Args: argsBetween(1, 1, "REV"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rev, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || rev <= 0 {
				return usageErrorf("REV must be a positive revision, got %q", args[0])
			}
			var opts []clientv3.CompactOption
			if physical {
				opts = append(opts, clientv3.WithCompactPhysical())
			}
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.Compact(ctx, rev, opts...)
				if err != nil {
					return err
				}
				return a.printer(cmd).compact((*pb.CompactionResponse)(resp), rev)
			})
		},
	}
	cmd.Flags().BoolVar(&physical, "physical", false, "wait until the compacted versions are removed from disk")
	return cmd
}
