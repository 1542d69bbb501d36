package main

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// getOptions are the flags of get, also accepted by get lines in a txn.
type getOptions struct {
	prefix         bool
	fromKey        bool
	rev            int64
	limit          int64
	sortBy         string
	order          string
	keysOnly       bool
	countOnly      bool
	printValueOnly bool
	consistency    string
	minModRev      int64
	maxModRev      int64
	minCreateRev   int64
	maxCreateRev   int64
}

func (o *getOptions) addFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.prefix, "prefix", false, "get the keys that start with KEY")
	fs.BoolVar(&o.fromKey, "from-key", false, "get the keys greater than or equal to KEY")
	fs.Int64Var(&o.rev, "rev", 0, "read at this revision (0: the latest)")
	fs.Int64Var(&o.limit, "limit", 0, "return at most this many keys (0: no limit)")
	fs.StringVar(&o.sortBy, "sort-by", "", "sort by KEY, VERSION, CREATE, MODIFY or VALUE")
	fs.StringVar(&o.order, "order", "", "sort order: ASCEND or DESCEND")
	fs.BoolVar(&o.keysOnly, "keys-only", false, "get keys without values")
	fs.BoolVar(&o.countOnly, "count-only", false, "print only the number of keys")
	fs.BoolVar(&o.printValueOnly, "print-value-only", false, "print values without their keys")
	fs.StringVar(&o.consistency, "consistency", "l", "l for a linearizable read, s for a serializable one")
	fs.Int64Var(&o.minModRev, "min-mod-rev", 0, "only keys last modified at or after this revision")
	fs.Int64Var(&o.maxModRev, "max-mod-rev", 0, "only keys last modified at or before this revision")
	fs.Int64Var(&o.minCreateRev, "min-create-rev", 0, "only keys created at or after this revision")
	fs.Int64Var(&o.maxCreateRev, "max-create-rev", 0, "only keys created at or before this revision")
}

// sortTargets maps --sort-by values to sort targets.
var sortTargets = map[string]clientv3.SortTarget{
	"KEY":     clientv3.SortByKey,
	"VERSION": clientv3.SortByVersion,
	"CREATE":  clientv3.SortByCreateRevision,
	"MODIFY":  clientv3.SortByModRevision,
	"VALUE":   clientv3.SortByValue,
}

// op builds the range read of args (KEY [RANGE_END]).
func (o *getOptions) op(args []string) (clientv3.Op, error) {
	opts, err := rangeOptions("get", args, o.prefix, o.fromKey)
	if err != nil {
		return clientv3.Op{}, err
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"rev", o.rev}, {"limit", o.limit},
		{"min-mod-rev", o.minModRev}, {"max-mod-rev", o.maxModRev},
		{"min-create-rev", o.minCreateRev}, {"max-create-rev", o.maxCreateRev},
	} {
		if f.v < 0 {
			return clientv3.Op{}, usageErrorf("--%s must not be negative, got %d", f.name, f.v)
		}
	}
	if o.rev > 0 {
		opts = append(opts, clientv3.WithRev(o.rev))
	}
	if o.limit > 0 {
		opts = append(opts, clientv3.WithLimit(o.limit))
	}
	if o.sortBy != "" || o.order != "" {
		target := clientv3.SortByKey
		if o.sortBy != "" {
			t, ok := sortTargets[strings.ToUpper(o.sortBy)]
			if !ok {
				return clientv3.Op{}, usageErrorf("--sort-by must be KEY, VERSION, CREATE, MODIFY or VALUE, got %q", o.sortBy)
			}
			target = t
		}
		order := clientv3.SortAscend
		switch strings.ToUpper(o.order) {
		case "", "ASCEND":
		case "DESCEND":
			order = clientv3.SortDescend
		default:
			return clientv3.Op{}, usageErrorf("--order must be ASCEND or DESCEND, got %q", o.order)
		}
		opts = append(opts, clientv3.WithSort(target, order))
	}
	switch o.consistency {
	case "l", "":
	case "s":
		opts = append(opts, clientv3.WithSerializable())
	default:
		return clientv3.Op{}, usageErrorf("--consistency must be l (linearizable) or s (serializable), got %q", o.consistency)
	}
	if o.keysOnly {
		opts = append(opts, clientv3.WithKeysOnly())
	}
	if o.countOnly {
		opts = append(opts, clientv3.WithCountOnly())
	}
	if o.minModRev > 0 {
		opts = append(opts, clientv3.WithMinModRev(o.minModRev))
	}
	if o.maxModRev > 0 {
		opts = append(opts, clientv3.WithMaxModRev(o.maxModRev))
	}
	if o.minCreateRev > 0 {
		opts = append(opts, clientv3.WithMinCreateRev(o.minCreateRev))
	}
	if o.maxCreateRev > 0 {
		opts = append(opts, clientv3.WithMaxCreateRev(o.maxCreateRev))
	}
	return clientv3.OpGet(args[0], opts...), nil
}

func (o *getOptions) style() getStyle {
	return getStyle{valueOnly: o.printValueOnly, countOnly: o.countOnly}
}

// rangeOptions turns KEY [RANGE_END], --prefix and --from-key into the
// options of a get or del.
func rangeOptions(verb string, args []string, prefix, fromKey bool) ([]clientv3.OpOption, error) {
	if len(args) < 1 || len(args) > 2 {
		return nil, usageErrorf("%s takes KEY [RANGE_END], got %d arguments", verb, len(args))
	}
	switch {
	case prefix && fromKey:
		return nil, usageErrorf("--prefix and --from-key cannot be used together")
	case prefix && len(args) == 2:
		return nil, usageErrorf("RANGE_END cannot be given with --prefix")
	case fromKey && len(args) == 2:
		return nil, usageErrorf("RANGE_END cannot be given with --from-key")
	case prefix:
		return []clientv3.OpOption{clientv3.WithPrefix()}, nil
	case fromKey:
		return []clientv3.OpOption{clientv3.WithFromKey()}, nil
	case len(args) == 2:
		return []clientv3.OpOption{clientv3.WithRange(args[1])}, nil
	}
	return nil, nil
}

func (a *app) getCmd() *cobra.Command {
	var o getOptions
	cmd := &cobra.Command{
		Use:   "get KEY [RANGE_END]",
		Short: "Get a key or a range of keys",
		Long: `Get a key, the keys in [KEY, RANGE_END), the keys with prefix KEY (--prefix)
or the keys from KEY on (--from-key). Prints each key and then its value on
the next line.`,
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
				return a.printer(cmd).get((*pb.RangeResponse)(resp.Get()), o.style())
			})
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}
