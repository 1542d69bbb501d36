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
		Short:   "List the members of the cluster, with their role and health",
		Long: `List the members of the cluster: ID (hex), name, role (leader, follower,
learner), peer and client URLs, last Raft index, lag behind the leader,
database size and health. Each member that has a client URL is asked for its
status. A member that has not started yet has no name and no client URLs
("-"). With -w json, prints the member list as the server returns it.`,
		Args: argsBetween(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.MemberList(ctx)
				if err != nil {
					return err
				}
				return a.printer(cmd).members((*pb.MemberListResponse)(resp), memberStatuses(ctx, cli, resp.Members))
			})
		},
	}
}

// memberStatuses asks each member with a client URL for its status.
func memberStatuses(ctx context.Context, cli *clientv3.Client, ms []*pb.Member) []memberStatus {
	var eps []string
	for _, m := range ms {
		if len(m.ClientURLs) > 0 {
			eps = append(eps, m.ClientURLs[0])
		}
	}
	rows := endpointStatuses(ctx, cli, eps)
	fillLag(rows)
	out := make([]memberStatus, len(ms))
	j := 0
	for i, m := range ms {
		out[i].M = m
		if len(m.ClientURLs) > 0 {
			out[i].Status = rows[j]
			j++
		}
	}
	return out
}
