package main

import (
	"context"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// delOptions are the flags of del, also accepted by del lines in a txn.
type delOptions struct {
	prefix  bool
	fromKey bool
	prevKV  bool
}

func (o *delOptions) addFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.prefix, "prefix", false, "delete the keys that start with KEY")
	fs.BoolVar(&o.fromKey, "from-key", false, "delete the keys greater than or equal to KEY")
	fs.BoolVar(&o.prevKV, "prev-kv", false, "print the deleted key-value pairs")
}

// op builds the delete of args (KEY [RANGE_END]).
func (o *delOptions) op(args []string) (clientv3.Op, error) {
	opts, err := rangeOptions("del", args, o.prefix, o.fromKey)
	if err != nil {
		return clientv3.Op{}, err
	}
	if o.prevKV {
		opts = append(opts, clientv3.WithPrevKV())
	}
	return clientv3.OpDelete(args[0], opts...), nil
}

func (a *app) delCmd() *cobra.Command {
	var o delOptions
	cmd := &cobra.Command{
		Use:     "del KEY [RANGE_END]",
		Aliases: []string{"delete"},
		Short:   "Delete a key or a range of keys",
		Long: `Delete a key, the keys in [KEY, RANGE_END), the keys with prefix KEY
(--prefix) or the keys from KEY on (--from-key). Prints the number of keys
deleted, then the deleted pairs with --prev-kv.`,
		Args: argsBetween(1, 2, "KEY [RANGE_END]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			op, err := o.op(args)
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.Do(ctx, op)
				if err != nil {
					return err
				}
				return a.printer(cmd).del((*pb.DeleteRangeResponse)(resp.Del()))
			})
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}
