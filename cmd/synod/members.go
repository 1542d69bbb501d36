package main

import (
	"context"

	"github.com/spf13/cobra"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (a *app) membersCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "members",
		Aliases: []string{"member-list"},
		Short:   "List the members of the cluster",
		Long: `List the members of the cluster: ID (hex), name, peer URLs, client URLs and
whether the member is a learner. A member that has not started yet has no
name and no client URLs ("-").`,
		Args: argsBetween(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.MemberList(ctx)
				if err != nil {
					return err
				}
				return a.printer(cmd).members((*pb.MemberListResponse)(resp))
			})
		},
	}
}
