package server

import (
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
// key it names, a write over several ranges and a lease on a key outside
// the first data range are refused as not supported yet, and commands
// that name no key go where their kind says.
func TestRouteByKey(t *testing.T) {
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
	nested := func(ops ...*pb.RequestOp) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Success: ops}}}
	}
	for _, tc := range []struct {
		name string
		kind raftcmd.Kind
		req  proto.Message
		want keys.RangeID // 0: refused
	}{
		{"put in the first range", raftcmd.KindPut, &pb.PutRequest{Key: []byte("a")}, 2},
		{"put in the middle range", raftcmd.KindPut, &pb.PutRequest{Key: []byte("d")}, 3},
		{"put at a boundary", raftcmd.KindPut, &pb.PutRequest{Key: []byte("m")}, 4},
		{"put with a lease in the first range", raftcmd.KindPut, &pb.PutRequest{Key: []byte("a"), Lease: 7}, 2},
		{"put with a lease elsewhere", raftcmd.KindPut, &pb.PutRequest{Key: []byte("x"), Lease: 7}, 0},
		{"delete within a range", raftcmd.KindDeleteRange, &pb.DeleteRangeRequest{Key: []byte("c"), RangeEnd: []byte("m")}, 3},
		{"delete across ranges", raftcmd.KindDeleteRange, &pb.DeleteRangeRequest{Key: []byte("b"), RangeEnd: []byte("d")}, 0},
		{"delete from a key on", raftcmd.KindDeleteRange, &pb.DeleteRangeRequest{Key: []byte("n"), RangeEnd: []byte{0}}, 4},
		{"delete of an empty span", raftcmd.KindDeleteRange, &pb.DeleteRangeRequest{Key: []byte("x"), RangeEnd: []byte("a")}, 2},
		{"txn within a range", raftcmd.KindTxn, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("d")}}, Success: []*pb.RequestOp{put("e")}, Failure: []*pb.RequestOp{get("c", "l")}}, 3},
		{"txn whose failure branch is elsewhere", raftcmd.KindTxn, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("d")}}, Success: []*pb.RequestOp{put("e")}, Failure: []*pb.RequestOp{put("z")}}, 0},
		{"txn with a compare elsewhere", raftcmd.KindTxn, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("a")}}, Success: []*pb.RequestOp{put("e")}}, 0},
		{"nested txn elsewhere", raftcmd.KindTxn, &pb.TxnRequest{Success: []*pb.RequestOp{put("n"), nested(put("a"))}}, 0},
		{"nested txn within", raftcmd.KindTxn, &pb.TxnRequest{Success: []*pb.RequestOp{put("n"), nested(put("o"), get("p", "\x00"))}}, 4},
		{"empty txn", raftcmd.KindTxn, &pb.TxnRequest{}, 2},
		{"lease grant", raftcmd.KindLeaseGrant, &pb.LeaseGrantRequest{ID: 7, TTL: 5}, keys.FirstDataRangeID},
		{"alarm", raftcmd.KindAlarm, &pb.AlarmRequest{}, keys.SystemRangeID},
	} {
		got, err := route(set, tc.kind, tc.req)
		if tc.want == 0 {
			if status.Code(err) != codes.Unimplemented {
				t.Errorf("%s: got range %d, error %v; want codes.Unimplemented", tc.name, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got range %d, error %v; want range %d", tc.name, got, err, tc.want)
		}
	}
}
