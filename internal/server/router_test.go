package server

import (
	"slices"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangedesc"
)

// TestRouteByKey routes writes over three data ranges ([, c) is range 2,
// [c, m) range 3, [m, ...) range 4): a write goes to the range of every
// key it names, a txn or delete over several ranges to each of them (a
// transaction across ranges), a lease on a key outside the first data
// range, or in a txn across ranges, is refused as not supported yet, and
// commands that name no key go where their kind says.
func TestRouteByKey(t *testing.T) {
	t.Parallel()
	set, err := rangedesc.NewSet([]rangedesc.Descriptor{
		{RangeID: 2, End: []byte("c")},
		{RangeID: 3, Start: []byte("c"), End: []byte("m")},
		{RangeID: 4, Start: []byte("m")},
	})
	if err != nil {
		t.Fatal(err)
	}
	put := func(k string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k)}}}
	}
	get := func(k, end string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(k), RangeEnd: []byte(end)}}}
	}
	leased := func(k string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Lease: 7}}}
	}
	r := func(ids ...keys.RangeID) []keys.RangeID { return ids }
	nested := func(ops ...*pb.RequestOp) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Success: ops}}}
	}
	for _, tc := range []struct {
		name string
		kind raftcmd.Kind
		req  proto.Message
		want []keys.RangeID // nil: refused
	}{
		{"put in the first range", raftcmd.KindPut, &pb.PutRequest{Key: []byte("a")}, r(2)},
		{"put in the middle range", raftcmd.KindPut, &pb.PutRequest{Key: []byte("d")}, r(3)},
		{"put at a boundary", raftcmd.KindPut, &pb.PutRequest{Key: []byte("m")}, r(4)},
		{"put with a lease in the first range", raftcmd.KindPut, &pb.PutRequest{Key: []byte("a"), Lease: 7}, r(2)},
		{"put with a lease elsewhere", raftcmd.KindPut, &pb.PutRequest{Key: []byte("x"), Lease: 7}, nil},
		{"delete within a range", raftcmd.KindDeleteRange, &pb.DeleteRangeRequest{Key: []byte("c"), RangeEnd: []byte("m")}, r(3)},
		{"delete across ranges", raftcmd.KindDeleteRange, &pb.DeleteRangeRequest{Key: []byte("b"), RangeEnd: []byte("d")}, r(2, 3)},
		{"delete from a key on", raftcmd.KindDeleteRange, &pb.DeleteRangeRequest{Key: []byte("n"), RangeEnd: []byte{0}}, r(4)},
		{"delete of an empty span", raftcmd.KindDeleteRange, &pb.DeleteRangeRequest{Key: []byte("x"), RangeEnd: []byte("a")}, r(2)},
		{"txn within a range", raftcmd.KindTxn, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("d")}}, Success: []*pb.RequestOp{put("e")}, Failure: []*pb.RequestOp{get("c", "l")}}, r(3)},
		{"txn whose failure branch is elsewhere", raftcmd.KindTxn, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("d")}}, Success: []*pb.RequestOp{put("e")}, Failure: []*pb.RequestOp{put("z")}}, r(3, 4)},
		{"txn with a compare elsewhere", raftcmd.KindTxn, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("a")}}, Success: []*pb.RequestOp{put("e")}}, r(2, 3)},
		{"nested txn elsewhere", raftcmd.KindTxn, &pb.TxnRequest{Success: []*pb.RequestOp{put("n"), nested(put("a"))}}, r(4, 2)},
		{"txn across ranges with a lease", raftcmd.KindTxn, &pb.TxnRequest{Success: []*pb.RequestOp{put("n"), leased("a")}}, nil},
		{"nested txn within", raftcmd.KindTxn, &pb.TxnRequest{Success: []*pb.RequestOp{put("n"), nested(put("o"), get("p", "\x00"))}}, r(4)},
		{"empty txn", raftcmd.KindTxn, &pb.TxnRequest{}, r(2)},
		{"lease grant", raftcmd.KindLeaseGrant, &pb.LeaseGrantRequest{ID: 7, TTL: 5}, r(keys.FirstDataRangeID)},
		{"alarm", raftcmd.KindAlarm, &pb.AlarmRequest{}, r(keys.SystemRangeID)},
	} {
		got, err := route(set, tc.kind, tc.req)
		if tc.want == nil {
			if status.Code(err) != codes.Unimplemented {
				t.Errorf("%s: got ranges %v, error %v; want codes.Unimplemented", tc.name, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: got ranges %v, error %v; want ranges %v", tc.name, got, err, tc.want)
		}
	}
}
