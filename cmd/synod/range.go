package main

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/api/synodpb"
)

const rangesLong = `List every range as the member answering sees it: ID, kind (system or data),
span of user keys [START, END) (quoted; END "" is the end of the keyspace),
live keys, estimated size on disk, leader (name), replicas (name:role),
generation, Raft term, the member's applied index and, for a data range,
its revision. With auth enabled only root may list ranges. With -w json,
prints the response as the server returns it: an object with a "ranges"
array, each range with "id", "start_key", "end_key" (base64), "leader",
"leader_name", "keys", "size_bytes" and "replicas" (objects with "node",
"id" and "role").`

func (a *app) rangesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ranges",
		Short: "List the ranges with their spans, sizes, leaders and replicas",
		Long:  rangesLong,
		Args:  argsBetween(0, 0, ""),
		RunE:  a.listRanges,
	}
}

func (a *app) rangeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "range",
		Short: "Show and split the ranges of the keyspace",
		Long: `The keyspace is served by ranges, each its own Raft group: the system range
(members, auth, the revision oracle, the data ranges' descriptors) and data
ranges, each over a span of user keys.`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the ranges (as synod ranges)",
		Long:  rangesLong,
		Args:  argsBetween(0, 0, ""),
		RunE:  a.listRanges,
	})
	cmd.AddCommand(a.rangeSplitCmd())
	return cmd
}

func (a *app) listRanges(cmd *cobra.Command, _ []string) error {
	return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
		resp, err := synodpb.NewRangesClient(cli.ActiveConnection()).ListRanges(ctx, &synodpb.ListRangesRequest{})
		if err != nil {
			return err
		}
		return a.printer(cmd).ranges(resp)
	})
}

// rangeColumns are the columns of `synod range list`.
var rangeColumns = []column[*synodpb.RangeInfo]{
	{"ID", func(r *synodpb.RangeInfo) string { return strconv.FormatUint(r.Id, 10) }},
	{"KIND", func(r *synodpb.RangeInfo) string {
		if r.System {
			return "system"
		}
		return "data"
	}},
	{"START", func(r *synodpb.RangeInfo) string { return spanEdge(r, r.StartKey) }},
	{"END", func(r *synodpb.RangeInfo) string { return spanEdge(r, r.EndKey) }},
	{"KEYS", func(r *synodpb.RangeInfo) string {
		if r.System {
			return "-"
		}
		return strconv.FormatInt(r.Keys, 10)
	}},
	{"SIZE", func(r *synodpb.RangeInfo) string { return formatBytes(r.SizeBytes) }},
	{"LEADER", func(r *synodpb.RangeInfo) string { return orDash(r.LeaderName) }},
	{"REPLICAS", func(r *synodpb.RangeInfo) string { return orDash(replicaList(r.Replicas)) }},
	{"GEN", func(r *synodpb.RangeInfo) string { return orDash(genString(r)) }},
	{"TERM", func(r *synodpb.RangeInfo) string { return strconv.FormatUint(r.RaftTerm, 10) }},
	{"APPLIED", func(r *synodpb.RangeInfo) string { return strconv.FormatUint(r.AppliedIndex, 10) }},
	{"REVISION", func(r *synodpb.RangeInfo) string {
		if r.System {
			return "-"
		}
		return strconv.FormatInt(r.Revision, 10)
	}},
}

func (p *printer) ranges(r *synodpb.ListRangesResponse) error {
	if p.format == outputJSON {
		return p.json(r)
	}
	var b bytes.Buffer
	formatTable(&b, rangeColumns, r.Ranges)
	return p.write(b.Bytes())
}

func spanEdge(r *synodpb.RangeInfo, key []byte) string {
	if r.System {
		return "-"
	}
	return strconv.Quote(string(key))
}

func genString(r *synodpb.RangeInfo) string {
	if r.System {
		return ""
	}
	return strconv.FormatUint(r.Generation, 10)
}

// replicaList shows replicas as name:role (the member ID in hex when it has
// no name yet).
func replicaList(rs []*synodpb.RangeReplica) string {
	out := make([]string, len(rs))
	for i, r := range rs {
		name := r.Node
		if name == "" {
			name = fmt.Sprintf("%x", r.Id)
		}
		out[i] = name + ":" + r.Role
	}
	return strings.Join(out, ",")
}
