package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/synod-io/synod/client"
)

func (a *app) groupCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "group",
		Short: "Join, list and watch membership groups",
		Long: `A membership group is a set of live members, each with an ID and metadata,
kept on a lease: a member whose process dies disappears when its lease
expires. Members are the keys synod/groups/<group>/members/<member>, which any
etcd client can read.`,
	}
	cmd.AddCommand(a.groupJoinCmd(), a.groupLeaveCmd(), a.groupListCmd(), a.groupWatchCmd())
	return cmd
}

func (a *app) groupJoinCmd() *cobra.Command {
	var ttl int
	cmd := &cobra.Command{
		Use:   "join GROUP MEMBER [METADATA]",
		Short: "Join a group and stay a member until interrupted",
		Long: `Join GROUP as MEMBER with METADATA, on a session whose lease lives --ttl
seconds after its last renewal, and stay a member until interrupted (then
leave). Exits 1 if the membership is lost (the lease ended).`,
		Args: argsBetween(2, 3, "GROUP MEMBER [METADATA]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := positive("ttl", ttl); err != nil {
				return err
			}
			var metadata []byte
			if len(args) == 3 {
				metadata = []byte(args[2])
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return a.withSession(ctx, ttl, func(s *client.Session) error {
				jctx, cancel := context.WithTimeout(ctx, a.opts.client.commandTimeout)
				m, err := s.Client().Group(args[0]).Join(jctx, s, args[1], metadata)
				cancel()
				if err != nil {
					return fmt.Errorf("join %s as %s: %w", args[0], args[1], err)
				}
				defer func() {
					lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.opts.client.commandTimeout)
					defer cancel()
					_ = m.Leave(lctx) // closing the session removes it anyway
				}()
				if err := a.printMembers(cmd, []client.Member{m.Member()}); err != nil {
					return err
				}
				select {
				case <-ctx.Done():
					return nil
				case <-s.Done():
					return errors.New("membership lost: the session's lease ended")
				}
			})
		},
	}
	cmd.Flags().IntVar(&ttl, "ttl", 10, "TTL in seconds of the membership's lease")
	return cmd
}

func (a *app) groupLeaveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "leave GROUP MEMBER",
		Short: "Remove a member from a group",
		Args:  argsBetween(2, 2, "GROUP MEMBER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), a.opts.client.commandTimeout)
			defer cancel()
			return a.withSynodClient(ctx, func(c *client.Client) error {
				left, err := c.Group(args[0]).Leave(ctx, args[1])
				if err != nil {
					return fmt.Errorf("leave %s: %w", args[0], err)
				}
				if !left {
					return fmt.Errorf("%s is not a member of %s", args[1], args[0])
				}
				return a.printer(cmd).write(fmt.Appendf(nil, "%s left %s\n", args[1], args[0]))
			})
		},
	}
}

func (a *app) groupListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list GROUP",
		Short: "List a group's members: ID, metadata and lease",
		Args:  argsBetween(1, 1, "GROUP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), a.opts.client.commandTimeout)
			defer cancel()
			return a.withSynodClient(ctx, func(c *client.Client) error {
				members, _, err := c.Group(args[0]).Members(ctx)
				if err != nil {
					return fmt.Errorf("list %s: %w", args[0], err)
				}
				return a.printMembers(cmd, members)
			})
		},
	}
}

// printMembers prints one line per member: ID, metadata, lease.
func (a *app) printMembers(cmd *cobra.Command, members []client.Member) error {
	p := a.printer(cmd)
	for _, m := range members {
		var err error
		if p.format == outputJSON {
			err = p.jsonValue(memberJSON(m))
		} else {
			err = p.write(fmt.Appendf(nil, "%s %q lease=%s\n", m.ID, m.Metadata, leaseIDOf(m.Lease)))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func memberJSON(m client.Member) map[string]any {
	return map[string]any{"id": m.ID, "metadata": string(m.Metadata), "lease": leaseIDOf(m.Lease),
		"create_revision": m.CreateRevision, "mod_revision": m.ModRevision}
}

func (a *app) groupWatchCmd() *cobra.Command {
	var rev int64
	var maxEvents int
	cmd := &cobra.Command{
		Use:   "watch GROUP",
		Short: "Print a group's joins, updates, leaves and expiries as they happen",
		Long: `Print one line per change of GROUP: JOIN, UPDATE, LEAVE or EXPIRE, the member,
its metadata and the revision of the change, in revision order and without
gaps. With --rev, the changes from that revision come first. Runs until
interrupted, or until --max-events changes have been printed.`,
		Args: argsBetween(1, 1, "GROUP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if rev < 0 || maxEvents < 0 {
				return usageErrorf("--rev and --max-events must not be negative")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return a.withSynodClient(ctx, func(c *client.Client) error {
				wctx, cancel := context.WithCancel(ctx)
				defer cancel()
				p := a.printer(cmd)
				n := 0
				for resp := range c.Group(args[0]).Watch(wctx, rev) {
					if resp.Err != nil {
						return fmt.Errorf("watch %s: %w", args[0], resp.Err)
					}
					for _, ev := range resp.Events {
						var err error
						if p.format == outputJSON {
							j := memberJSON(ev.Member)
							j["type"], j["revision"] = ev.Type.String(), ev.Revision
							err = p.jsonValue(j)
						} else {
							err = p.write(fmt.Appendf(nil, "%s %s %q rev=%d\n", ev.Type, ev.Member.ID, ev.Member.Metadata, ev.Revision))
						}
						if err != nil {
							return err
						}
						if n++; maxEvents > 0 && n >= maxEvents {
							return nil
						}
					}
				}
				return nil // interrupted
			})
		},
	}
	cmd.Flags().Int64Var(&rev, "rev", 0, "start at this revision (history first)")
	cmd.Flags().IntVar(&maxEvents, "max-events", 0, "exit after this many changes (0: never)")
	return cmd
}
