package kv

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keyindex"
)

func seedBytes(f *testing.F, msgs ...proto.Message) {
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzRangeRequest feeds arbitrary RangeRequests to validation and, when
// accepted, to Range on a small store: no panic, and nothing malformed is
// accepted.
func FuzzRangeRequest(f *testing.F) {
	seedBytes(f,
		&pb.RangeRequest{Key: []byte("a")},
		&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), Limit: 2, SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_CREATE},
		&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, CountOnly: true, Revision: 3},
		&pb.RangeRequest{Key: []byte("k"), SortOrder: 7},
		&pb.RangeRequest{},
	)
	f.Add([]byte{0xff, 0x01})
	db := openDB(f)
	a := Applier{Batch: db.NewIndexedBatch(), Meta: &Meta{}, Leases: newFakeLeases()}
	for _, k := range []string{"a", "b", "k", "z"} {
		if _, err := a.Put(&pb.PutRequest{Key: []byte(k), Value: []byte("v")}); err != nil {
			f.Fatal(err)
		}
	}
	if err := a.Batch.Commit(nil); err != nil {
		f.Fatal(err)
	}
	meta := *a.Meta
	idx, err := BuildIndex(db, meta.Revision)
	if err != nil {
		f.Fatal(err)
	}
	snap := idx.Snapshot()
	f.Fuzz(func(t *testing.T, data []byte) {
		var r pb.RangeRequest
		if proto.Unmarshal(data, &r) != nil {
			return
		}
		if err := ValidateRange(&r); err != nil {
			return
		}
		if len(r.Key) == 0 {
			t.Fatalf("accepted range with empty key: got nil error, want ErrGRPCEmptyKey")
		}
		if _, ok := pb.RangeRequest_SortOrder_name[int32(r.SortOrder)]; !ok {
			t.Fatalf("accepted sort order %d: got nil error, want ErrGRPCInvalidSortOption", r.SortOrder)
		}
		if _, ok := pb.RangeRequest_SortTarget_name[int32(r.SortTarget)]; !ok {
			t.Fatalf("accepted sort target %d: got nil error, want ErrGRPCInvalidSortOption", r.SortTarget)
		}
		resp, err := Range(db, nil, meta, &r)
		if err == nil && r.Limit > 0 && int64(len(resp.Kvs)) > r.Limit {
			t.Fatalf("range with limit %d: got %d kvs, want at most the limit", r.Limit, len(resp.Kvs))
		}
		indexed, ierr := Range(db, snap, meta, &r)
		if (ierr == nil) != (err == nil) || (err == nil && !proto.Equal(indexed, resp)) {
			t.Fatalf("range %v through the index: got %v, %v, want %v, %v", &r, indexed, ierr, resp, err)
		}
	})
}

// wellFormedTxn checks, independently of ValidateTxn, what an accepted txn
// must satisfy.
func wellFormedTxn(r *pb.TxnRequest, maxOps int) bool {
	if len(r.Compare) > maxOps || len(r.Success) > maxOps || len(r.Failure) > maxOps {
		return false
	}
	for _, c := range r.Compare {
		if len(c.Key) == 0 {
			return false
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			switch o := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				if len(o.RequestRange.GetKey()) == 0 {
					return false
				}
			case *pb.RequestOp_RequestPut:
				if len(o.RequestPut.GetKey()) == 0 {
					return false
				}
			case *pb.RequestOp_RequestDeleteRange:
				if len(o.RequestDeleteRange.GetKey()) == 0 {
					return false
				}
			case *pb.RequestOp_RequestTxn:
				if o.RequestTxn == nil || !wellFormedTxn(o.RequestTxn, maxOps) {
					return false
				}
			default:
				return false
			}
		}
	}
	return true
}

// FuzzTxnRequest feeds arbitrary TxnRequests to validation and, when
// accepted, applies them to a small store: no panic, no malformed txn
// accepted.
func FuzzTxnRequest(f *testing.F) {
	put := func(k string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte("v")}}}
	}
	del := func(k, end string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(k), RangeEnd: []byte(end)}}}
	}
	seedBytes(f,
		&pb.TxnRequest{Success: []*pb.RequestOp{put("a")}},
		&pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte("a"), Target: pb.Compare_VERSION, Result: pb.Compare_GREATER}}, Success: []*pb.RequestOp{put("a"), del("b", "c")}, Failure: []*pb.RequestOp{{}}},
		&pb.TxnRequest{Success: []*pb.RequestOp{put("a"), put("a")}},
		&pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Success: []*pb.RequestOp{put("x")}}}}}},
	)
	const maxOps = 8
	db := openDB(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var r pb.TxnRequest
		if proto.Unmarshal(data, &r) != nil {
			return
		}
		if err := ValidateTxn(&r, Limits{MaxTxnOps: maxOps}); err != nil {
			return
		}
		if !wellFormedTxn(&r, maxOps) {
			t.Fatalf("accepted malformed txn %v: got nil error, want a validation error", &r)
		}
		b := db.NewIndexedBatch()
		defer b.Close()
		// The index is that of the empty store, as the batch is.
		a := Applier{Batch: b, Live: keyindex.New(0), Meta: &Meta{}, Leases: newFakeLeases()}
		_, _ = a.Txn(&r) // must not panic; the batch is discarded
	})
}
