package server

import (
	"bytes"
	"context"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/etcdapi"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/rangedesc"
)

// rangesServer serves synodpb.Ranges: the ranges as this node sees them.
type rangesServer struct {
	synodpb.UnimplementedRangesServer
	s *Server
}

var _ synodpb.RangesServer = rangesServer{}

// ListRanges implements synodpb.RangesServer.
func (rs rangesServer) ListRanges(context.Context, *synodpb.ListRangesRequest) (*synodpb.ListRangesResponse, error) {
	s := rs.s
	return &synodpb.ListRangesResponse{ClusterId: s.id.ClusterID, MemberId: s.id.MemberID, Ranges: s.rangeInfos()}, nil
}

// SplitRange implements synodpb.RangesServer: each key in turn, the highest
// first (the answer keeps the request's order). In ascending order each
// split would cut the range the one before made, which first has to elect
// a leader: about a second a key.
func (rs rangesServer) SplitRange(ctx context.Context, req *synodpb.SplitRangeRequest) (*synodpb.SplitRangeResponse, error) {
	s := rs.s
	if len(req.Keys) == 0 {
		return nil, status.Error(codes.InvalidArgument, "synod: no split key")
	}
	order := make([]int, len(req.Keys))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return bytes.Compare(req.Keys[b], req.Keys[a]) })
	resp := &synodpb.SplitRangeResponse{ClusterId: s.id.ClusterID, MemberId: s.id.MemberID, Splits: make([]*synodpb.RangeSplit, len(req.Keys))}
	for _, i := range order {
		l, r, err := s.SplitRange(ctx, req.Keys[i])
		if err != nil {
			return nil, etcdapi.ToGRPC(ctx, err)
		}
		infos := descriptorInfos([]rangedesc.Descriptor{l, r})
		resp.Splits[i] = &synodpb.RangeSplit{Left: infos[0], Right: infos[1]}
	}
	return resp, nil
}

// rangeInfos describes the ranges this node has a replica of: the system
// range, then the data ranges in key order, with their descriptors and
// what the node's replica of each published.
func (s *Server) rangeInfos() []*synodpb.RangeInfo {
	out := append([]*synodpb.RangeInfo{{Id: uint64(keys.SystemRangeID), System: true}}, descriptorInfos(s.descs.Load().All())...)
	names := map[uint64]string{}
	if ms, err := cluster.ListMembers(s.db); err == nil {
		for _, m := range ms {
			names[m.ID] = m.Name
		}
	}
	kept := out[:0]
	for _, r := range out {
		id := keys.RangeID(r.Id)
		pub := s.rangePublished(id)
		if pub == nil {
			continue
		}
		r.Leader, r.LeaderName, r.RaftTerm, r.AppliedIndex = pub.Lead, names[pub.Lead], pub.Term, pub.Applied
		r.Voters, r.Learners = pub.Voters, pub.Learners
		for _, v := range pub.Voters {
			r.Replicas = append(r.Replicas, &synodpb.RangeReplica{Node: names[v], Id: v, Role: "voter"})
		}
		for _, l := range pub.Learners {
			r.Replicas = append(r.Replicas, &synodpb.RangeReplica{Node: names[l], Id: l, Role: "learner"})
		}
		if !r.System {
			r.Revision = pub.KV.Revision
			if x := datarange.Index(pub.Derived); x != nil {
				r.Keys = int64(x.Len())
			}
		}
		for _, span := range s.spansOf(id) {
			if n, err := s.db.EstimateDiskUsage(span.Start, span.End); err == nil {
				r.SizeBytes += int64(n)
			}
		}
		kept = append(kept, r)
	}
	return kept
}
