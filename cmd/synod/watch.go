package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// watchOptions are the flags of watch.
type watchOptions struct {
	prefix         bool
	fromKey        bool
	rev            int64
	prevKV         bool
	progressNotify bool
	filter         string
	maxEvents      int
}

func (a *app) watchCmd() *cobra.Command {
	var o watchOptions
	cmd := &cobra.Command{
		Use:   "watch KEY [RANGE_END]",
		Short: "Print the changes of a key or range as they happen",
		Long: `Print the changes of a key or range as they happen: for each event its type
(PUT or DELETE), the key and the value, as etcdctl does. With --rev, history
from that revision comes first. Runs until interrupted, or until
--max-events events have been printed.`,
		Args: argsBetween(1, 2, "KEY [RANGE_END]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := o.clientOptions(args)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cli, err := a.opts.client.connect(ctx)
			if err != nil {
				return err
			}
			defer cli.Close()
			return a.watch(ctx, cmd, cli, args[0], opts, o.maxEvents)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.prefix, "prefix", false, "watch every key with the prefix KEY")
	f.BoolVar(&o.fromKey, "from-key", false, "watch every key >= KEY")
	f.Int64Var(&o.rev, "rev", 0, "start at this revision (history first)")
	f.BoolVar(&o.prevKV, "prev-kv", false, "print the previous key-value pair of each event")
	f.BoolVar(&o.progressNotify, "progress-notify", false, "ask for periodic progress notifications")
	f.StringVar(&o.filter, "filter", "", "leave out events of a type: put or delete")
	f.IntVar(&o.maxEvents, "max-events", 0, "exit after this many events (0: never)")
	return cmd
}

func (o *watchOptions) clientOptions(args []string) ([]clientv3.OpOption, error) {
	var opts []clientv3.OpOption
	switch {
	case len(args) == 2 && (o.prefix || o.fromKey):
		return nil, usageErrorf("RANGE_END cannot be combined with --prefix or --from-key")
	case o.prefix && o.fromKey:
		return nil, usageErrorf("--prefix and --from-key cannot be used together")
	case len(args) == 2:
		opts = append(opts, clientv3.WithRange(args[1]))
	case o.prefix:
		opts = append(opts, clientv3.WithPrefix())
	case o.fromKey:
		opts = append(opts, clientv3.WithFromKey())
	}
	if o.rev < 0 || o.maxEvents < 0 {
		return nil, usageErrorf("--rev and --max-events must not be negative")
	}
	if o.rev > 0 {
		opts = append(opts, clientv3.WithRev(o.rev))
	}
	if o.prevKV {
		opts = append(opts, clientv3.WithPrevKV())
	}
	if o.progressNotify {
		opts = append(opts, clientv3.WithProgressNotify())
	}
	switch o.filter {
	case "":
	case "put":
		opts = append(opts, clientv3.WithFilterPut())
	case "delete":
		opts = append(opts, clientv3.WithFilterDelete())
	default:
		return nil, usageErrorf("--filter must be put or delete, got %q", o.filter)
	}
	return opts, nil
}

func (a *app) watch(ctx context.Context, cmd *cobra.Command, cli *clientv3.Client, key string, opts []clientv3.OpOption, maxEvents int) error {
	p := a.printer(cmd)
	n := 0
	for wr := range cli.Watch(clientv3.WithRequireLeader(ctx), key, opts...) {
		if err := wr.Err(); err != nil {
			return err
		}
		if wr.IsProgressNotify() {
			if err := p.progress(wr.Header.Revision); err != nil {
				return err
			}
			continue
		}
		for _, ev := range wr.Events {
			if err := p.event(ev); err != nil {
				return err
			}
			n++
			if maxEvents > 0 && n >= maxEvents {
				return nil
			}
		}
	}
	if ctx.Err() != nil {
		return nil // interrupted
	}
	return fmt.Errorf("watch closed by the server")
}

// event prints one watch event: type, key and value lines (and the previous
// pair), as etcdctl does.
func (p *printer) event(ev *clientv3.Event) error {
	if p.format == outputJSON {
		return p.json((*mvccpb.Event)(ev))
	}
	out := fmt.Sprintf("%s\n", ev.Type)
	if ev.PrevKv != nil {
		out += fmt.Sprintf("%s\n%s\n", ev.PrevKv.Key, ev.PrevKv.Value)
	}
	out += fmt.Sprintf("%s\n%s\n", ev.Kv.Key, ev.Kv.Value)
	return p.write([]byte(out))
}

func (p *printer) progress(rev int64) error {
	if p.format == outputJSON {
		return p.json(&pb.WatchResponse{Header: &pb.ResponseHeader{Revision: rev}})
	}
	return p.write([]byte(fmt.Sprintf("progress notify: revision %d\n", rev)))
}
