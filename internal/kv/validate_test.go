package kv

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"
)

func TestValidateRange(t *testing.T) {
	tests := []struct {
		name string
		req  *pb.RangeRequest
		want error
	}{
		{"ok", &pb.RangeRequest{Key: []byte("a")}, nil},
		{"nil", nil, rpctypes.ErrGRPCEmptyKey},
		{"empty key", &pb.RangeRequest{RangeEnd: []byte("z")}, rpctypes.ErrGRPCEmptyKey},
		{"all sort options", &pb.RangeRequest{Key: []byte("a"), SortOrder: pb.RangeRequest_DESCEND,
			SortTarget: pb.RangeRequest_VALUE}, nil},
		{"bad sort order", &pb.RangeRequest{Key: []byte("a"), SortOrder: 3}, rpctypes.ErrGRPCInvalidSortOption},
		{"negative sort order", &pb.RangeRequest{Key: []byte("a"), SortOrder: -1}, rpctypes.ErrGRPCInvalidSortOption},
		{"bad sort target", &pb.RangeRequest{Key: []byte("a"), SortTarget: 5}, rpctypes.ErrGRPCInvalidSortOption},
	}
	for _, tt := range tests {
		wantErr(t, tt.name, ValidateRange(tt.req), tt.want)
	}
}

func TestValidatePut(t *testing.T) {
	tests := []struct {
		name string
		req  *pb.PutRequest
		want error
	}{
		{"ok", &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), Lease: 3}, nil},
		{"nil", nil, rpctypes.ErrGRPCEmptyKey},
		{"empty key", &pb.PutRequest{Value: []byte("v")}, rpctypes.ErrGRPCEmptyKey},
		{"ignore value ok", &pb.PutRequest{Key: []byte("a"), IgnoreValue: true}, nil},
		{"ignore value with value", &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreValue: true},
			rpctypes.ErrGRPCValueProvided},
		{"ignore lease ok", &pb.PutRequest{Key: []byte("a"), IgnoreLease: true}, nil},
		{"ignore lease with lease", &pb.PutRequest{Key: []byte("a"), Lease: 1, IgnoreLease: true},
			rpctypes.ErrGRPCLeaseProvided},
	}
	for _, tt := range tests {
		wantErr(t, tt.name, ValidatePut(tt.req), tt.want)
	}
}

func TestValidateDeleteRange(t *testing.T) {
	wantErr(t, "ok", ValidateDeleteRange(&pb.DeleteRangeRequest{Key: []byte("a")}), nil)
	wantErr(t, "empty key", ValidateDeleteRange(&pb.DeleteRangeRequest{RangeEnd: []byte("\x00")}),
		rpctypes.ErrGRPCEmptyKey)
	wantErr(t, "nil", ValidateDeleteRange(nil), rpctypes.ErrGRPCEmptyKey)
}

func TestValidateCompaction(t *testing.T) {
	wantErr(t, "any", ValidateCompaction(&pb.CompactionRequest{Revision: -3}), nil)
}

func cmpOp(key string) *pb.Compare {
	return &pb.Compare{Key: []byte(key), Target: pb.Compare_VERSION}
}

func nOps(n int, op func(i int) *pb.RequestOp) []*pb.RequestOp {
	out := make([]*pb.RequestOp, n)
	for i := range out {
		out[i] = op(i)
	}
	return out
}

func TestValidateTxn(t *testing.T) {
	get := func(int) *pb.RequestOp { return getOp("a", "") }
	limits := Limits{MaxTxnOps: 4}
	tests := []struct {
		name string
		req  *pb.TxnRequest
		want error
	}{
		{"empty", &pb.TxnRequest{}, nil},
		{"nil", nil, nil},
		{"at limit", &pb.TxnRequest{Compare: []*pb.Compare{cmpOp("a"), cmpOp("b"), cmpOp("c"), cmpOp("d")},
			Success: nOps(4, get), Failure: nOps(4, get)}, nil},
		{"too many compares", &pb.TxnRequest{Compare: []*pb.Compare{cmpOp("a"), cmpOp("b"), cmpOp("c"),
			cmpOp("d"), cmpOp("e")}}, rpctypes.ErrGRPCTooManyOps},
		{"too many success", &pb.TxnRequest{Success: nOps(5, get)}, rpctypes.ErrGRPCTooManyOps},
		{"too many failure", &pb.TxnRequest{Failure: nOps(5, get)}, rpctypes.ErrGRPCTooManyOps},
		{"nested budget is what the parent leaves", &pb.TxnRequest{Success: ops(getOp("a", ""), getOp("b", ""),
			txnOp(&pb.TxnRequest{Success: nOps(2, get)}))}, rpctypes.ErrGRPCTooManyOps},
		{"nested within budget", &pb.TxnRequest{Success: ops(getOp("a", ""),
			txnOp(&pb.TxnRequest{Success: nOps(2, get)}))}, nil},
		{"empty compare key", &pb.TxnRequest{Compare: []*pb.Compare{{Target: pb.Compare_VALUE}}},
			rpctypes.ErrGRPCEmptyKey},
		{"empty range key", &pb.TxnRequest{Success: ops(getOp("", "z"))}, rpctypes.ErrGRPCEmptyKey},
		{"bad sort in txn", &pb.TxnRequest{Failure: ops(rangeOp(&pb.RangeRequest{Key: []byte("a"), SortTarget: 9}))},
			rpctypes.ErrGRPCInvalidSortOption},
		{"empty put key", &pb.TxnRequest{Success: ops(putOp("", "v"))}, rpctypes.ErrGRPCEmptyKey},
		{"put value provided", &pb.TxnRequest{Success: ops(putReqOp(&pb.PutRequest{Key: []byte("a"),
			Value: []byte("v"), IgnoreValue: true}))}, rpctypes.ErrGRPCValueProvided},
		{"put lease provided", &pb.TxnRequest{Success: ops(putReqOp(&pb.PutRequest{Key: []byte("a"),
			Lease: 2, IgnoreLease: true}))}, rpctypes.ErrGRPCLeaseProvided},
		{"empty delete key", &pb.TxnRequest{Failure: ops(delOp("", ""))}, rpctypes.ErrGRPCEmptyKey},
		{"empty op", &pb.TxnRequest{Success: ops(&pb.RequestOp{})}, rpctypes.ErrGRPCKeyNotFound},
		{"nil op", &pb.TxnRequest{Success: ops(nil)}, rpctypes.ErrGRPCKeyNotFound},
		{"nested empty compare key", &pb.TxnRequest{Success: ops(txnOp(&pb.TxnRequest{
			Compare: []*pb.Compare{{}}}))}, rpctypes.ErrGRPCEmptyKey},
		{"deeply nested empty put key", &pb.TxnRequest{Success: ops(txnOp(&pb.TxnRequest{
			Failure: ops(txnOp(&pb.TxnRequest{Success: ops(putOp("", ""))}))}))}, rpctypes.ErrGRPCEmptyKey},
		{"nested too many ops", &pb.TxnRequest{Success: ops(txnOp(&pb.TxnRequest{
			Failure: nOps(4, get)}))}, rpctypes.ErrGRPCTooManyOps},

		{"two puts same key", &pb.TxnRequest{Success: ops(putOp("a", "1"), putOp("a", "2"))},
			rpctypes.ErrGRPCDuplicateKey},
		{"two puts same key in failure", &pb.TxnRequest{Failure: ops(putOp("a", "1"), putOp("a", "2"))},
			rpctypes.ErrGRPCDuplicateKey},
		{"puts in different branches", &pb.TxnRequest{Success: ops(putOp("a", "1")),
			Failure: ops(putOp("a", "2"))}, nil},
		{"put then delete of same key", &pb.TxnRequest{Success: ops(putOp("a", "1"), delOp("a", ""))},
			rpctypes.ErrGRPCDuplicateKey},
		{"delete then put of same key", &pb.TxnRequest{Success: ops(delOp("a", ""), putOp("a", "1"))},
			rpctypes.ErrGRPCDuplicateKey},
		{"put inside deleted range", &pb.TxnRequest{Success: ops(delOp("a", "c"), putOp("b", "1"))},
			rpctypes.ErrGRPCDuplicateKey},
		{"put at range end", &pb.TxnRequest{Success: ops(delOp("a", "c"), putOp("c", "1"))}, nil},
		{"put below range", &pb.TxnRequest{Success: ops(delOp("b", "c"), putOp("a", "1"))}, nil},
		{"overlapping deletes", &pb.TxnRequest{Success: ops(delOp("a", "c"), delOp("b", "d"), delOp("b", ""))}, nil},
		{"range and put same key", &pb.TxnRequest{Success: ops(getOp("a", ""), putOp("a", "1"))}, nil},
		{"delete to \\x00 does not cover puts (etcd)", &pb.TxnRequest{Success: ops(delOp("a", "\x00"),
			putOp("b", "1"))}, nil},
		{"nested put vs parent put", &pb.TxnRequest{Success: ops(putOp("a", "1"),
			txnOp(&pb.TxnRequest{Success: ops(putOp("a", "2"))}))}, rpctypes.ErrGRPCDuplicateKey},
		{"nested failure put vs parent put", &pb.TxnRequest{Success: ops(
			txnOp(&pb.TxnRequest{Failure: ops(putOp("a", "2"))}), putOp("a", "1"))}, rpctypes.ErrGRPCDuplicateKey},
		{"nested put vs parent delete", &pb.TxnRequest{Success: ops(delOp("a", "b"),
			txnOp(&pb.TxnRequest{Success: ops(putOp("a", "2"))}))}, rpctypes.ErrGRPCDuplicateKey},
		{"nested delete vs parent put", &pb.TxnRequest{Success: ops(putOp("a", "1"),
			txnOp(&pb.TxnRequest{Failure: ops(delOp("a", ""))}))}, rpctypes.ErrGRPCDuplicateKey},
		{"nested branches may put the same key", &pb.TxnRequest{Success: ops(
			txnOp(&pb.TxnRequest{Success: ops(putOp("a", "1")), Failure: ops(putOp("a", "2"))}))}, nil},
		{"two nested txns put the same key", &pb.TxnRequest{Success: ops(
			txnOp(&pb.TxnRequest{Success: ops(putOp("a", "1"))}),
			txnOp(&pb.TxnRequest{Failure: ops(putOp("a", "2"))}))}, rpctypes.ErrGRPCDuplicateKey},
		{"nested delete then nested put", &pb.TxnRequest{Success: ops(
			txnOp(&pb.TxnRequest{Success: ops(delOp("a", "z"))}),
			txnOp(&pb.TxnRequest{Success: ops(putOp("b", "1"))}))}, rpctypes.ErrGRPCDuplicateKey},
		{"nested put then nested delete (etcd allows)", &pb.TxnRequest{Success: ops(
			txnOp(&pb.TxnRequest{Success: ops(putOp("b", "1"))}),
			txnOp(&pb.TxnRequest{Success: ops(delOp("a", "z"))}))}, nil},
		{"duplicate inside nested branch", &pb.TxnRequest{Failure: ops(
			txnOp(&pb.TxnRequest{Failure: ops(putOp("x", "1"), putOp("x", "2"))}))}, rpctypes.ErrGRPCDuplicateKey},
		{"nested else put vs its own then delete", &pb.TxnRequest{Success: ops(
			txnOp(&pb.TxnRequest{Success: ops(delOp("a", "")), Failure: ops(putOp("a", "1"))}))}, nil},
	}
	for _, tt := range tests {
		wantErr(t, tt.name, ValidateTxn(tt.req, limits), tt.want)
	}
}

func TestValidateTxnDefaultLimit(t *testing.T) {
	get := func(int) *pb.RequestOp { return getOp("a", "") }
	wantErr(t, "128 ops", ValidateTxn(&pb.TxnRequest{Success: nOps(DefaultMaxTxnOps, get)}, Limits{}), nil)
	wantErr(t, "129 ops", ValidateTxn(&pb.TxnRequest{Success: nOps(DefaultMaxTxnOps+1, get)}, Limits{}),
		rpctypes.ErrGRPCTooManyOps)
}

// seedTxn is a txn exercising every kind of operation, for the fuzz corpus.
func seedTxn() *pb.TxnRequest {
	return &pb.TxnRequest{
		Compare: []*pb.Compare{{Key: []byte("a"), RangeEnd: []byte("b"), Target: pb.Compare_VALUE,
			TargetUnion: &pb.Compare_Value{Value: []byte("v")}}},
		Success: ops(putOp("a", "1"), delOp("b", "c"), getOp("a", "\x00"),
			txnOp(&pb.TxnRequest{Success: ops(putOp("x", "")), Failure: ops(putOp("x", ""), delOp("y", ""))})),
		Failure: ops(&pb.RequestOp{}, putReqOp(&pb.PutRequest{Key: []byte("k"), IgnoreValue: true})),
	}
}

func addSeeds(f *testing.F, msgs ...proto.Message) {
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatalf("marshal seed: %v", err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x12, 0x02, 0x0a, 0x00})
}

func FuzzValidateTxn(f *testing.F) {
	addSeeds(f, seedTxn(), &pb.TxnRequest{Success: ops(putOp("a", ""), putOp("a", ""))})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &pb.TxnRequest{}
		if proto.Unmarshal(data, r) != nil {
			return
		}
		_ = ValidateTxn(r, Limits{MaxTxnOps: 8})
		_ = ValidateTxn(r, Limits{})
	})
}

func FuzzValidateRange(f *testing.F) {
	addSeeds(f, &pb.RangeRequest{Key: []byte("a"), SortOrder: 2, SortTarget: 4})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &pb.RangeRequest{}
		if proto.Unmarshal(data, r) != nil {
			return
		}
		_ = ValidateRange(r)
	})
}

func FuzzValidatePut(f *testing.F) {
	addSeeds(f, &pb.PutRequest{Key: []byte("a"), IgnoreLease: true, Lease: 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &pb.PutRequest{}
		if proto.Unmarshal(data, r) != nil {
			return
		}
		_ = ValidatePut(r)
	})
}

func FuzzValidateDeleteRange(f *testing.F) {
	addSeeds(f, &pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte("\x00")})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &pb.DeleteRangeRequest{}
		if proto.Unmarshal(data, r) != nil {
			return
		}
		_ = ValidateDeleteRange(r)
	})
}

// FuzzApplyTxn applies arbitrary txns, validated or not, to a small store:
// apply must never panic, and a failing txn must leave no write (env.apply
// checks that).
func FuzzApplyTxn(f *testing.F) {
	addSeeds(f, seedTxn())
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &pb.TxnRequest{}
		if proto.Unmarshal(data, r) != nil {
			return
		}
		e := newEnv(t)
		e.put("a", "1")
		e.put("k", "2")
		_, _ = e.txn(r)
	})
}

func TestReservedKeysAreNotWritable(t *testing.T) {
	q := []byte("\x01synod/queue/q/state/1")
	wantErr(t, "put", ValidatePut(&pb.PutRequest{Key: q}), ErrGRPCReservedKey)
	wantErr(t, "delete key", ValidateDeleteRange(&pb.DeleteRangeRequest{Key: q}), ErrGRPCReservedKey)
	wantErr(t, "delete all", ValidateDeleteRange(&pb.DeleteRangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}), ErrGRPCReservedKey)
	wantErr(t, "delete range over it", ValidateDeleteRange(&pb.DeleteRangeRequest{Key: []byte("\x00a"), RangeEnd: []byte("\x02")}), ErrGRPCReservedKey)
	wantErr(t, "delete above it", ValidateDeleteRange(&pb.DeleteRangeRequest{Key: []byte("\x02"), RangeEnd: []byte{0}}), nil)
	wantErr(t, "delete below it", ValidateDeleteRange(&pb.DeleteRangeRequest{Key: []byte("\x00a"), RangeEnd: []byte("\x01synod/")}), nil)
	txn := &pb.TxnRequest{Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: q}}}}}}}}}
	wantErr(t, "nested txn put", ValidateTxn(txn, Limits{}), ErrGRPCReservedKey)
}
