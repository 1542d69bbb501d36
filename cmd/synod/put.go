package main

import (
	"context"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// putOptions are the flags of put, also accepted by put lines in a txn.
type putOptions struct {
	lease       string
	prevKV      bool
	ignoreValue bool
	ignoreLease bool
}

func (o *putOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.lease, "lease", "", "attach the key to this lease (hex ID)")
	fs.BoolVar(&o.prevKV, "prev-kv", false, "print the previous key-value pair")
	fs.BoolVar(&o.ignoreValue, "ignore-value", false, "keep the current value (give no VALUE)")
	fs.BoolVar(&o.ignoreLease, "ignore-lease", false, "keep the current lease")
}

// op builds the put of args (KEY VALUE, or KEY with --ignore-value).
func (o *putOptions) op(args []string) (clientv3.Op, error) {
	if o.ignoreValue {
		if len(args) != 1 {
			return clientv3.Op{}, usageErrorf("put takes only KEY with --ignore-value, got %d arguments", len(args))
		}
		args = append(args, "")
	} else if len(args) != 2 {
		return clientv3.Op{}, usageErrorf("put takes KEY VALUE, got %d argument%s", len(args), plural(len(args)))
	}
	var opts []clientv3.OpOption
	if o.lease != "" {
		if o.ignoreLease {
			return clientv3.Op{}, usageErrorf("--lease and --ignore-lease cannot be used together")
		}
		id, err := parseLeaseID(o.lease)
		if err != nil {
			return clientv3.Op{}, err
		}
		opts = append(opts, clientv3.WithLease(id))
	}
	if o.prevKV {
		opts = append(opts, clientv3.WithPrevKV())
	}
	if o.ignoreValue {
		opts = append(opts, clientv3.WithIgnoreValue())
	}
	if o.ignoreLease {
		opts = append(opts, clientv3.WithIgnoreLease())
	}
	return clientv3.OpPut(args[0], args[1], opts...), nil
}

// parseLeaseID parses a lease ID in hex, as etcdctl prints them.
func parseLeaseID(s string) (clientv3.LeaseID, error) {
	id, err := strconv.ParseInt(strings.TrimPrefix(s, "0x"), 16, 64)
	if err != nil || id < 0 {
		return 0, usageErrorf("bad lease ID %q: want a hexadecimal ID such as 694d77aa9e38260f", s)
	}
	return clientv3.LeaseID(id), nil
}

func (a *app) putCmd() *cobra.Command {
	var o putOptions
	cmd := &cobra.Command{
		Use:   "put KEY VALUE",
		Short: "Put a key-value pair",
		Long: `Put a key-value pair. Prints OK, then the previous key and value with
--prev-kv. A VALUE that starts with '-' goes after '--': synod put -- key -value.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if o.ignoreValue {
				return argsBetween(1, 1, "only KEY with --ignore-value")(cmd, args)
			}
			return argsBetween(2, 2, "KEY VALUE")(cmd, args)
		},
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
				return a.printer(cmd).put((*pb.PutResponse)(resp.Put()))
			})
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}
