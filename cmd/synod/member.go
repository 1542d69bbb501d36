package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/server"
)

func (a *app) memberCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "member",
		Short: "Change the membership of the cluster",
		Long: `Add, remove, promote and update members. Changes are Raft configuration
changes made by the leader; a change that would leave the running voters
without a quorum is refused unless --force is given.

To grow a cluster, prefer 'synod start --join', which does all of it.`,
	}
	list := a.membersCmd()
	list.Use, list.Aliases = "list", nil
	cmd.AddCommand(list, a.memberAddCmd(), a.memberRemoveCmd(), a.memberPromoteCmd(), a.memberUpdateCmd())
	return cmd
}

func parseMemberID(s string) (uint64, error) {
	id, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 64)
	if err != nil || id == 0 {
		return 0, usageErrorf("bad member ID %q: want a hexadecimal ID as 'synod members' prints", s)
	}
	return id, nil
}

func withForce(ctx context.Context, force bool) context.Context {
	if !force {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, server.ForceMetadataKey, "true")
}

func (a *app) memberAddCmd() *cobra.Command {
	var peerURLs []string
	var learner, force bool
	cmd := &cobra.Command{
		Use:   "add NAME --peer-urls URL",
		Short: "Add a member, then print how to start it",
		Args:  argsBetween(1, 1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkPeerURLs(peerURLs); err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				ctx = withForce(ctx, force)
				var resp *clientv3.MemberAddResponse
				var err error
				if learner {
					resp, err = cli.MemberAddAsLearner(ctx, peerURLs)
				} else {
					resp, err = cli.MemberAdd(ctx, peerURLs)
				}
				if err != nil {
					return err
				}
				p := a.printer(cmd)
				if p.format == outputJSON {
					return p.json((*pb.MemberAddResponse)(resp))
				}
				var spec []string
				for _, m := range resp.Members {
					name := m.Name
					if m.ID == resp.Member.ID {
						name = args[0]
					}
					for _, u := range m.PeerURLs {
						spec = append(spec, name+"="+u)
					}
				}
				sort.Strings(spec)
				kind := "Member"
				if learner {
					kind = "Learner"
				}
				return p.write([]byte(fmt.Sprintf("%s %x added to cluster %x\n\nStart it with:\n  synod start --name %s --peer-addr %s --initial-cluster-state existing \\\n    --initial-cluster %s \\\n    --peer-secret-file FILE\n"+
					"where FILE holds the cluster's peer secret ('synod peer-secret get FILE'), unless the members use peer TLS.\n",
					kind, resp.Member.ID, resp.Header.ClusterId, args[0], hostPortOf(peerURLs[0]), strings.Join(spec, ","))))
			})
		},
	}
	cmd.Flags().StringSliceVar(&peerURLs, "peer-urls", nil, "peer URLs of the new member (comma-separated)")
	cmd.Flags().BoolVar(&learner, "learner", false, "add as a learner (no vote until promoted)")
	cmd.Flags().BoolVar(&force, "force", false, "skip the quorum safety check")
	return cmd
}

// checkPeerURLs checks --peer-urls as the server will, to say what is wrong
// with a URL (the server answers only etcd's "given member URLs are
// invalid").
func checkPeerURLs(urls []string) error {
	if len(urls) == 0 {
		return usageErrorf("--peer-urls is required")
	}
	for _, u := range urls {
		if _, err := cluster.NormalizeURL(u); err != nil {
			return usageErrorf("--peer-urls: %v", err)
		}
	}
	return nil
}

func hostPortOf(u string) string {
	if _, rest, ok := strings.Cut(u, "://"); ok {
		return rest
	}
	return u
}

func (a *app) memberRemoveCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a member (the leader hands leadership over first)",
		Args:  argsBetween(1, 1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseMemberID(args[0])
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.MemberRemove(withForce(ctx, force), id)
				if err != nil {
					return err
				}
				p := a.printer(cmd)
				if p.format == outputJSON {
					return p.json((*pb.MemberRemoveResponse)(resp))
				}
				return p.write([]byte(fmt.Sprintf("Member %x removed from cluster %x\n", id, resp.Header.ClusterId)))
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove even if the running voters would lose their quorum")
	return cmd
}

func (a *app) memberPromoteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "promote ID",
		Short: "Promote a learner that has caught up to voter",
		Args:  argsBetween(1, 1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseMemberID(args[0])
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.MemberPromote(ctx, id)
				if err != nil {
					return err
				}
				p := a.printer(cmd)
				if p.format == outputJSON {
					return p.json((*pb.MemberPromoteResponse)(resp))
				}
				return p.write([]byte(fmt.Sprintf("Member %x promoted in cluster %x\n", id, resp.Header.ClusterId)))
			})
		},
	}
}

func (a *app) memberUpdateCmd() *cobra.Command {
	var peerURLs []string
	cmd := &cobra.Command{
		Use:   "update ID --peer-urls URL",
		Short: "Change a member's peer URLs",
		Args:  argsBetween(1, 1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseMemberID(args[0])
			if err != nil {
				return err
			}
			if err := checkPeerURLs(peerURLs); err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.MemberUpdate(ctx, id, peerURLs)
				if err != nil {
					return err
				}
				p := a.printer(cmd)
				if p.format == outputJSON {
					return p.json((*pb.MemberUpdateResponse)(resp))
				}
				return p.write([]byte(fmt.Sprintf("Member %x updated in cluster %x\n", id, resp.Header.ClusterId)))
			})
		},
	}
	cmd.Flags().StringSliceVar(&peerURLs, "peer-urls", nil, "new peer URLs (comma-separated)")
	return cmd
}
