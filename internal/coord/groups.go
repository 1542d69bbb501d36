package coord

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/watch"
)

// GroupsPrefix is the prefix of every group's keys.
const GroupsPrefix = "synod/groups/"

// maxGroupID bounds the length of group names and member IDs.
const maxGroupID = 256

// groupPrefix is the prefix of group g's keys (members and leave markers).
func groupPrefix(g string) []byte { return []byte(GroupsPrefix + g + "/") }

// MembersPrefix is the prefix of the member keys of group g.
func MembersPrefix(g string) string { return GroupsPrefix + g + "/members/" }

// MemberKey is the key of member m of group g.
func MemberKey(g, m string) string { return MembersPrefix(g) + m }

// leftKey is the marker Leave writes with the deletion of m's key.
func leftKey(g, m string) string { return GroupsPrefix + g + "/left/" + m }

// checkID validates a group name or member ID.
func checkID(what, id string) error {
	switch {
	case id == "":
		return status.Errorf(codes.InvalidArgument, "%s is empty", what)
	case len(id) > maxGroupID:
		return status.Errorf(codes.InvalidArgument, "%s is longer than %d bytes", what, maxGroupID)
	case strings.Contains(id, "/"):
		return status.Errorf(codes.InvalidArgument, "%s %q contains '/'", what, id)
	}
	return nil
}

// groupsServer implements synodpb.GroupsServer.
type groupsServer struct {
	synodpb.UnimplementedGroupsServer
	s *Services
}

func memberOf(kv *mvccpb.KeyValue, id string) *synodpb.Member {
	return &synodpb.Member{Id: id, Metadata: kv.Value, Lease: kv.Lease,
		CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision}
}

func putOp(key string, value []byte, lease int64) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: value, Lease: lease}}}
}

func deleteOp(key string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(key)}}}
}

func getOp(key string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(key)}}}
}

// Join implements GroupsServer.
func (gs *groupsServer) Join(ctx context.Context, req *synodpb.JoinRequest) (*synodpb.JoinResponse, error) {
	if err := checkID("group", req.Group); err != nil {
		return nil, err
	}
	if err := checkID("member", req.Member); err != nil {
		return nil, err
	}
	s := gs.s
	lease := req.Lease
	if lease == 0 {
		if req.Ttl <= 0 {
			return nil, status.Error(codes.InvalidArgument, "a member needs a lease or a ttl")
		}
		g, err := s.b.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: req.Ttl})
		if err != nil {
			return nil, rpcError(err)
		}
		lease = g.ID
	}
	key, left := MemberKey(req.Group, req.Member), leftKey(req.Group, req.Member)
	write := []*pb.RequestOp{putOp(key, req.Metadata, lease), deleteOp(left)}
	// A new member, or the same member (same lease) joining again; a
	// member ID held under another lease is refused. A few rounds settle
	// a race with a concurrent leave or expiry.
	for range 3 {
		resp, err := s.b.Txn(ctx, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte(key), Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
				TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 0}}},
			Success: write,
			Failure: []*pb.RequestOp{getOp(key)},
		})
		if err != nil {
			return nil, rpcError(err)
		}
		if resp.Succeeded {
			rev := resp.Header.Revision
			return &synodpb.JoinResponse{Header: resp.Header, Member: &synodpb.Member{
				Id: req.Member, Metadata: req.Metadata, Lease: lease, CreateRevision: rev, ModRevision: rev}}, nil
		}
		kvs := resp.Responses[0].GetResponseRange().GetKvs()
		if len(kvs) == 0 {
			continue
		}
		if kvs[0].Lease != lease {
			return nil, status.Errorf(codes.AlreadyExists, "member %q of group %q is held under another lease (%x)", req.Member, req.Group, kvs[0].Lease)
		}
		created := kvs[0].CreateRevision
		resp, err = s.b.Txn(ctx, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte(key), Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
				TargetUnion: &pb.Compare_CreateRevision{CreateRevision: created}}},
			Success: write,
		})
		if err != nil {
			return nil, rpcError(err)
		}
		if resp.Succeeded {
			return &synodpb.JoinResponse{Header: resp.Header, Member: &synodpb.Member{
				Id: req.Member, Metadata: req.Metadata, Lease: lease, CreateRevision: created, ModRevision: resp.Header.Revision}}, nil
		}
	}
	return nil, status.Errorf(codes.Aborted, "member %q of group %q changed concurrently; try again", req.Member, req.Group)
}

// Leave implements GroupsServer: it deletes the member key and, in the same
// revision, writes the leave marker on the member's lease.
func (gs *groupsServer) Leave(ctx context.Context, req *synodpb.LeaveRequest) (*synodpb.LeaveResponse, error) {
	if err := checkID("group", req.Group); err != nil {
		return nil, err
	}
	if err := checkID("member", req.Member); err != nil {
		return nil, err
	}
	s := gs.s
	key := MemberKey(req.Group, req.Member)
	for range 3 {
		cur, err := s.b.Range(ctx, &pb.RangeRequest{Key: []byte(key)})
		if err != nil {
			return nil, rpcError(err)
		}
		if len(cur.Kvs) == 0 || (req.Lease != 0 && cur.Kvs[0].Lease != req.Lease) {
			return &synodpb.LeaveResponse{Header: cur.Header}, nil
		}
		kv := cur.Kvs[0]
		resp, err := s.b.Txn(ctx, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte(key), Target: pb.Compare_MOD, Result: pb.Compare_EQUAL,
				TargetUnion: &pb.Compare_ModRevision{ModRevision: kv.ModRevision}}},
			Success: []*pb.RequestOp{deleteOp(key), putOp(leftKey(req.Group, req.Member), nil, kv.Lease)},
		})
		if errors.Is(err, rpctypes.ErrGRPCLeaseNotFound) {
			continue // the lease ended meanwhile, and took the member with it
		}
		if err != nil {
			return nil, rpcError(err)
		}
		if resp.Succeeded {
			return &synodpb.LeaveResponse{Header: resp.Header, Left: true}, nil
		}
	}
	return nil, status.Errorf(codes.Aborted, "member %q of group %q changed concurrently; try again", req.Member, req.Group)
}

// List implements GroupsServer.
func (gs *groupsServer) List(ctx context.Context, req *synodpb.ListRequest) (*synodpb.ListResponse, error) {
	if err := checkID("group", req.Group); err != nil {
		return nil, err
	}
	pfx := MembersPrefix(req.Group)
	resp, err := gs.s.b.Range(ctx, &pb.RangeRequest{Key: []byte(pfx), RangeEnd: keys.PrefixRangeEnd([]byte(pfx)), Revision: req.Revision})
	if err != nil {
		return nil, rpcError(err)
	}
	out := &synodpb.ListResponse{Header: resp.Header}
	if req.Revision > 0 {
		out.Header.Revision = req.Revision
	}
	for _, kv := range resp.Kvs {
		out.Members = append(out.Members, memberOf(kv, string(kv.Key[len(pfx):])))
	}
	return out, nil
}

// Watch implements GroupsServer: a watcher of the group's prefix on the hub,
// whose events are turned into group events one revision at a time.
func (gs *groupsServer) Watch(req *synodpb.GroupWatchRequest, stream grpc.ServerStreamingServer[synodpb.GroupWatchResponse]) error {
	if err := checkID("group", req.Group); err != nil {
		return err
	}
	ctx := stream.Context()
	s := gs.s
	pfx := groupPrefix(req.Group)
	start := req.StartRevision
	if start <= 0 {
		// From the revision after every write acknowledged before the call.
		cur, err := s.b.Range(ctx, &pb.RangeRequest{Key: pfx, RangeEnd: keys.PrefixRangeEnd(pfx), CountOnly: true})
		if err != nil {
			return rpcError(err)
		}
		start = cur.Header.Revision + 1
	}
	hw := s.watch(watch.Options{Key: pfx, RangeEnd: keys.PrefixRangeEnd(pfx), StartRevision: start, PrevKV: true}, nil)
	defer hw.close()
	if err := stream.Send(&synodpb.GroupWatchResponse{Header: s.header(start - 1)}); err != nil {
		return err
	}
	members, markers := []byte(MembersPrefix(req.Group)), []byte(leftKey(req.Group, ""))
	for {
		resp, err := hw.next(ctx)
		if err != nil {
			return rpcError(err)
		}
		if resp.CompactRevision > 0 {
			return rpctypes.ErrGRPCCompacted
		}
		evs, err := groupEvents(resp.Events, members, markers)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if len(evs) == 0 {
			continue
		}
		if err := stream.Send(&synodpb.GroupWatchResponse{Header: s.header(resp.Revision), Events: evs}); err != nil {
			return err
		}
	}
}

// groupEvents turns the events of a group's prefix (whole revisions, in
// order) into group events. A member key deleted in the revision that writes
// its leave marker left; deleted otherwise, its lease ended.
func groupEvents(evs []*mvccpb.Event, members, markers []byte) ([]*synodpb.GroupEvent, error) {
	var out []*synodpb.GroupEvent
	for i := 0; i < len(evs); {
		rev := evs[i].Kv.ModRevision
		j := i
		left := map[string]bool{}
		for j < len(evs) && evs[j].Kv.ModRevision == rev {
			if ev := evs[j]; ev.Type == mvccpb.PUT && bytes.HasPrefix(ev.Kv.Key, markers) {
				left[string(ev.Kv.Key[len(markers):])] = true
			}
			j++
		}
		for _, ev := range evs[i:j] {
			if !bytes.HasPrefix(ev.Kv.Key, members) {
				continue
			}
			id := string(ev.Kv.Key[len(members):])
			switch {
			case ev.Type == mvccpb.PUT && ev.Kv.Version == 1:
				out = append(out, &synodpb.GroupEvent{Type: synodpb.GroupEvent_JOIN, Member: memberOf(ev.Kv, id), Revision: rev})
			case ev.Type == mvccpb.PUT:
				out = append(out, &synodpb.GroupEvent{Type: synodpb.GroupEvent_UPDATE, Member: memberOf(ev.Kv, id), Revision: rev})
			default:
				if ev.PrevKv == nil {
					return nil, fmt.Errorf("delete of %q at revision %d without its previous value", ev.Kv.Key, rev)
				}
				t := synodpb.GroupEvent_EXPIRE
				if left[id] {
					t = synodpb.GroupEvent_LEAVE
				}
				out = append(out, &synodpb.GroupEvent{Type: t, Member: memberOf(ev.PrevKv, id), Revision: rev})
			}
		}
		i = j
	}
	return out, nil
}
