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

// electOptions are the flags of elect.
type electOptions struct {
	listen bool
	ttl    int
}

func (a *app) electCmd() *cobra.Command {
	var o electOptions
	cmd := &cobra.Command{
		Use:   "elect NAME PROPOSAL | elect -l NAME",
		Short: "Campaign in a leader election, or observe its leaders",
		Long: `Campaign in the election NAME (the same election etcdctl elect and etcd's
concurrency package use) with the value PROPOSAL, on a session whose lease
lives --ttl seconds after its last renewal. Once elected, print the leader
key, PROPOSAL and the fencing token of the leadership, and lead until
interrupted (then resign); exit 1 if the leadership is lost.

With -l, print the election's leader, then every new leader (key, then
value, as etcdctl does), until interrupted.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if o.listen {
				return argsBetween(1, 1, "NAME with -l")(cmd, args)
			}
			return argsBetween(2, 2, "NAME PROPOSAL")(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := positive("ttl", o.ttl); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if o.listen {
				return a.observe(ctx, cmd, args[0])
			}
			return a.withSession(ctx, o.ttl, func(s *client.Session) error {
				return a.campaign(ctx, cmd, s, args[0], args[1])
			})
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.listen, "listen", "l", false, "observe the election's leaders instead of campaigning")
	f.IntVar(&o.ttl, "ttl", 10, "TTL in seconds of the session's lease: a leader that stops loses the leadership this long after")
	return cmd
}

func (a *app) campaign(ctx context.Context, cmd *cobra.Command, s *client.Session, name, proposal string) error {
	e := client.NewElection(s, name)
	if err := e.Campaign(ctx, proposal); err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while campaigning
		}
		return fmt.Errorf("campaign in %s: %w", name, err)
	}
	lost := e.Lost()
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.opts.client.commandTimeout)
		defer cancel()
		_ = e.Resign(rctx) // a lost leadership has nothing to resign
	}()
	p := a.printer(cmd)
	var err error
	if p.format == outputJSON {
		err = p.jsonValue(map[string]any{"key": e.Key(), "value": proposal, "token": e.Token()})
	} else {
		err = p.write(fmt.Appendf(nil, "%s\n%s\ntoken %d\n", e.Key(), proposal, e.Token()))
	}
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return nil
	case <-lost:
		return errors.New("leadership lost: its session's lease ended or its key was deleted")
	}
}

func (a *app) observe(ctx context.Context, cmd *cobra.Command, name string) error {
	return a.withSynodClient(ctx, func(c *client.Client) error {
		p := a.printer(cmd)
		for l := range c.ObserveElection(ctx, name) {
			var err error
			if p.format == outputJSON {
				err = p.jsonValue(map[string]any{"key": l.Key, "value": string(l.Value), "token": l.Token, "revision": l.Revision})
			} else {
				err = p.write(fmt.Appendf(nil, "%s\n%s\n", l.Key, l.Value))
			}
			if err != nil {
				return err
			}
		}
		return nil // ctx ended: interrupted
	})
}
