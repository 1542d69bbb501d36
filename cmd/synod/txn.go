package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (a *app) txnCmd() *cobra.Command {
	var interactive bool
	cmd := &cobra.Command{
		Use:   "txn",
		Short: "Run a transaction read from standard input",
		Long: `Run a transaction read from standard input, in etcdctl's format:

  compare lines, one per line
  (blank line)
  requests run if every compare holds (success), one per line
  (blank line)
  requests run otherwise (failure), one per line

A compare is TARGET("KEY") OP "VALUE" with TARGET one of value, version,
create, mod or lease (a hexadecimal lease ID) and OP one of =, !=, > or <.
A request is put, get or del with the arguments and flags of the command of
the same name. Words are split at spaces; double quotes (with Go escapes)
or single quotes keep spaces in a word.

Prints SUCCESS or FAILURE, then the response of each request after a blank
line.

Example:
  printf 'mod("counter") = "0"\n\nput counter 1\n\nget counter\n' | synod txn`,
		Args: argsBetween(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var prompt func(string)
			if interactive {
				prompt = func(s string) { fmt.Fprintln(cmd.OutOrStdout(), s) }
			}
			spec, err := parseTxn(cmd.InOrStdin(), prompt)
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.Txn(ctx).
					If(spec.compares...).
					Then(opsOf(spec.success)...).
					Else(opsOf(spec.failure)...).
					Commit()
				if err != nil {
					return err
				}
				return a.printer(cmd).txn((*pb.TxnResponse)(resp), spec.styles(resp.Succeeded))
			})
		},
	}
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "prompt for each section of the transaction")
	return cmd
}
