package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/spf13/cobra"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (a *app) statusCmd() *cobra.Command {
	var clusterWide bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the status of each endpoint",
		Long: `Show one row per endpoint: its member ID, role (leader, follower, learner),
version, database size, Raft term, last Raft index, applied index, lag behind
the leader (entries), health and errors. With --cluster, the endpoints are the
client URLs of every member. Fails if an endpoint does not answer (its row
shows why).`,
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
				rows := endpointStatuses(ctx, cli, eps)
				fillLag(rows)
				if err := a.printer(cmd).status(rows); err != nil {
					return err
				}
				failed := 0
				for _, r := range rows {
					if r.Err != nil {
						failed++
					}
				}
				if failed > 0 {
					return fmt.Errorf("%d of %d endpoints did not answer", failed, len(rows))
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&clusterWide, "cluster", false, "ask every member of the cluster (from the member list)")
	return cmd
}

// clusterEndpoints returns the client URLs of every member.
func clusterEndpoints(ctx context.Context, cli *clientv3.Client) ([]string, error) {
	ml, err := cli.MemberList(ctx)
	if err != nil {
		return nil, err
	}
	var eps []string
	for _, m := range ml.Members {
		for _, u := range m.ClientURLs {
			if !slices.Contains(eps, u) {
				eps = append(eps, u)
			}
		}
	}
	if len(eps) == 0 {
		return nil, errors.New("no member has published a client URL yet")
	}
	return eps, nil
}

// endpointStatuses asks every endpoint for its status, in parallel.
func endpointStatuses(ctx context.Context, cli *clientv3.Client, eps []string) []endpointStatus {
	rows := make([]endpointStatus, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Go(func() {
			resp, err := cli.Status(ctx, ep)
			rows[i] = endpointStatus{Endpoint: ep, Err: err}
			if err == nil {
				rows[i].Resp = (*pb.StatusResponse)(resp)
			}
		})
	}
	wg.Wait()
	return rows
}
