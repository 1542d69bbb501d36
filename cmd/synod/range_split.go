package main

import (
	"bytes"
	"context"
	"fmt"
	"math"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/api/synodpb"
)

func (a *app) rangeSplitCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "split KEY [KEY...]",
		Short: "Split the data ranges at keys",
		Long: `Split the data range holding each KEY at that key: the range keeps the keys
below KEY, and a new range, on the same members, takes the rest. Splitting
at an existing boundary succeeds and changes nothing. Keys must sort above
Synod's reserved keys ($'\x01synod/' and below). Requests go on during a
split: none fails because of it. A split waits (up to the request timeout)
while transactions across ranges hold keys above KEY, and is refused while
a key above KEY in the first range is attached to a lease (leases hold keys
of the first range only, for now). With auth enabled only root may split.
Prints each split's two ranges; with -w json, the server's response (an
object with a "splits" array, each with "left" and "right" ranges).`,
		Args: argsBetween(1, math.MaxInt, "KEY [KEY...]"),
		RunE: a.splitRanges,
	}
}

func (a *app) splitRanges(cmd *cobra.Command, args []string) error {
	return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
		req := &synodpb.SplitRangeRequest{}
		for _, k := range args {
			req.Keys = append(req.Keys, []byte(k))
		}
		resp, err := synodpb.NewRangesClient(cli.ActiveConnection()).SplitRange(ctx, req)
		if err != nil {
			return err
		}
		p := a.printer(cmd)
		if p.format == outputJSON {
			return p.json(resp)
		}
		var b bytes.Buffer
		for _, sp := range resp.Splits {
			fmt.Fprintf(&b, "split at %q: range %d [%s, %s) and range %d [%s, %s)\n",
				sp.Right.StartKey, sp.Left.Id, spanEdge(sp.Left, sp.Left.StartKey), spanEdge(sp.Left, sp.Left.EndKey),
				sp.Right.Id, spanEdge(sp.Right, sp.Right.StartKey), spanEdge(sp.Right, sp.Right.EndKey))
		}
		return p.write(b.Bytes())
	})
}
