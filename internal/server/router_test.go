package server

import (
	"slices"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangedesc"
)

// TestRouteByKey routes writes over three data ranges ([, c) is range 2,
// [c, m) range 3, [m, ...) range 4): a write goes to the range of every
// key it names, a txn or delete over several ranges to each of them (a
// transaction across ranges), as is a put with a lease on a key outside
// the first data range (which keeps the lease table), and commands that
// name no key go where their kind says.
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
		name  string
		kind  raftcmd.Kind
		req   proto.Message
		want  []keys.RangeID
		cross bool
	}{
		{"put in the first range", raftcmd.KindPut, &pb.PutRequest{Key: []byte("a")}, r(2), false},
		{"put in the middle range", raftcmd.KindPut, &pb.PutRequest{Key: []byte("d")}, r(3), false},
		{"put at a boundary", raftcmd.KindPut, &pb.PutRequest{Key: []byte("m")}, r(4), false},
		{"put with a lease in the first range", raftcmd.KindPut, &pb.PutRequest{Key: []byte("a"), Lease: 7}, r(2), false},
		{"put with a lease elsewhere", raftcmd.KindPut, &pb.PutRequest{Key: []byte("x"), Lease: 7}, r(4), true},
		{"delete within a range", raftcmd.KindDeleteRange, &pb.DeleteRangeRequest{Key: []byte("c"), RangeEnd: []byte("m")}, r(3), false},
		{"delete across ranges", raftcmd.KindDeleteRange, &pb.DeleteRangeRequest{Key: []byte("b"), RangeEnd: []byte("d")}, r(2, 3), true},
		{"delete from a key on", raftcmd.KindDeleteRange, &pb.DeleteRangeRequest{Key: []byte("n"), RangeEnd: []byte{0}}, r(4), false},
		{"delete of an empty span", raftcmd.KindDeleteRange, &pb.DeleteRangeRequest{Key: []byte("x"), RangeEnd: []byte("a")}, r(2), false},
		{"txn within a range", raftcmd.KindTxn, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("d")}}, Success: []*pb.RequestOp{put("e")}, Failure: []*pb.RequestOp{get("c", "l")}}, r(3), false},
		{"txn whose failure branch is elsewhere", raftcmd.KindTxn, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("d")}}, Success: []*pb.RequestOp{put("e")}, Failure: []*pb.RequestOp{put("z")}}, r(3, 4), true},
		{"txn with a compare elsewhere", raftcmd.KindTxn, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("a")}}, Success: []*pb.RequestOp{put("e")}}, r(2, 3), true},
		{"nested txn elsewhere", raftcmd.KindTxn, &pb.TxnRequest{Success: []*pb.RequestOp{put("n"), nested(put("a"))}}, r(4, 2), true},
		{"txn across ranges with a lease", raftcmd.KindTxn, &pb.TxnRequest{Success: []*pb.RequestOp{put("n"), leased("a")}}, r(4, 2), true},
		{"txn with a lease in one other range", raftcmd.KindTxn, &pb.TxnRequest{Success: []*pb.RequestOp{put("n"), leased("o")}}, r(4), true},
		{"nested txn within", raftcmd.KindTxn, &pb.TxnRequest{Success: []*pb.RequestOp{put("n"), nested(put("o"), get("p", "\x00"))}}, r(4), false},
		{"empty txn", raftcmd.KindTxn, &pb.TxnRequest{}, r(2), false},
		{"lease grant", raftcmd.KindLeaseGrant, &pb.LeaseGrantRequest{ID: 7, TTL: 5}, r(keys.FirstDataRangeID), false},
		{"alarm", raftcmd.KindAlarm, &pb.AlarmRequest{}, r(keys.SystemRangeID), false},
	} {
		got, cross := route(set, tc.kind, tc.req)
		if !slices.Equal(got, tc.want) || cross != tc.cross {
			t.Errorf("%s: got ranges %v, across ranges %v; want %v, %v", tc.name, got, cross, tc.want, tc.cross)
		}
	}
}
