package kv

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/internal/keys"
)

// ErrGRPCReservedKey refuses a write through the etcd API that touches the
// user keys reserved for Synod's own services (keys.ReservedPrefix): only
// their commands write there.
var ErrGRPCReservedKey = status.Error(codes.InvalidArgument,
	`etcdserver: keys starting with "\x01synod/" are reserved for synod's services (rate limits, queues): use their APIs`)

// ValidateRange, ValidatePut, ValidateDeleteRange, ValidateTxn and
// ValidateCompaction check a request before it is proposed; they return the
// rpctypes.ErrGRPC* error etcd returns for the same request. They are pure
// and accept nil or partially filled messages.

// ValidateRange checks a range request.
func ValidateRange(r *pb.RangeRequest) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	return checkSortOptions(r)
}

// checkSortOptions rejects sort enum values the API does not define.
func checkSortOptions(r *pb.RangeRequest) error {
	if _, ok := pb.RangeRequest_SortOrder_name[int32(r.GetSortOrder())]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	if _, ok := pb.RangeRequest_SortTarget_name[int32(r.GetSortTarget())]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	return nil
}

// ValidatePut checks a put request.
func ValidatePut(r *pb.PutRequest) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if r.GetIgnoreValue() && len(r.GetValue()) != 0 {
		return rpctypes.ErrGRPCValueProvided
	}
	if r.GetIgnoreLease() && r.GetLease() != 0 {
		return rpctypes.ErrGRPCLeaseProvided
	}
	if keys.IntersectsReserved(r.GetKey(), nil) {
		return ErrGRPCReservedKey
	}
	return nil
}

// ValidateDeleteRange checks a delete request.
func ValidateDeleteRange(r *pb.DeleteRangeRequest) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if keys.IntersectsReserved(r.GetKey(), r.GetRangeEnd()) {
		return ErrGRPCReservedKey
	}
	return nil
}

// ValidateTxn checks a txn: its size and every compare and operation,
// recursively, then that no branch writes a key twice.
func ValidateTxn(r *pb.TxnRequest, l Limits) error {
	maxOps := l.MaxTxnOps
	if maxOps <= 0 {
		maxOps = DefaultMaxTxnOps
	}
	if err := checkTxnShape(r, maxOps); err != nil {
		return err
	}
	// Like etcd, look for duplicates only once the shape is known to be
	// bounded, so that the quadratic check stays cheap.
	if _, _, err := branchWrites(r.GetSuccess()); err != nil {
		return err
	}
	_, _, err := branchWrites(r.GetFailure())
	return err
}

// ValidateCompaction checks a compaction request. Every check (future or
// already compacted revision) depends on the state and is made by apply.
func ValidateCompaction(*pb.CompactionRequest) error { return nil }

// checkTxnShape bounds the number of compares and of operations per branch
// by maxOps and validates each compare and operation. As in etcd, a nested
// txn gets what its parent leaves of the budget: maxOps minus the largest of
// the parent's compare, success and failure counts.
func checkTxnShape(r *pb.TxnRequest, maxOps int) error {
	n := max(len(r.GetCompare()), len(r.GetSuccess()), len(r.GetFailure()))
	if n > maxOps {
		return rpctypes.ErrGRPCTooManyOps
	}
	for _, c := range r.GetCompare() {
		if len(c.GetKey()) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	for _, branch := range [][]*pb.RequestOp{r.GetSuccess(), r.GetFailure()} {
		for _, op := range branch {
			if err := checkOp(op, maxOps-n); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkOp validates one txn operation; an operation with no request set is
// rejected with ErrGRPCKeyNotFound, as etcd does.
func checkOp(op *pb.RequestOp, maxOps int) error {
	switch req := op.GetRequest().(type) {
	case *pb.RequestOp_RequestRange:
		return ValidateRange(req.RequestRange)
	case *pb.RequestOp_RequestPut:
		return ValidatePut(req.RequestPut)
	case *pb.RequestOp_RequestDeleteRange:
		return ValidateDeleteRange(req.RequestDeleteRange)
	case *pb.RequestOp_RequestTxn:
		return checkTxnShape(req.RequestTxn, maxOps)
	default:
		return rpctypes.ErrGRPCKeyNotFound
	}
}

// keySpan is a set of keys deleted by one delete operation: a single key,
// or the half-open interval [start, end).
type keySpan struct {
	start, end string
	single     bool
}

func deleteSpan(r *pb.DeleteRangeRequest) keySpan {
	if len(r.GetRangeEnd()) == 0 {
		return keySpan{start: string(r.GetKey()), single: true}
	}
	// etcd compares range ends as plain strings here, so the "\x00" range
	// end (every key >= key) spans nothing; this keeps its behaviour.
	return keySpan{start: string(r.GetKey()), end: string(r.GetRangeEnd())}
}

func (s keySpan) contains(key string) bool {
	if s.single {
		return key == s.start
	}
	return s.start <= key && key < s.end
}

func anyContains(spans []keySpan, key string) bool {
	for _, s := range spans {
		if s.contains(key) {
			return true
		}
	}
	return false
}

// branchWrites returns the keys put and the spans deleted by the operations
// of one branch, nested txns included, and ErrGRPCDuplicateKey when the
// branch puts a key twice or puts a key it also deletes.
//
// The rules, and their order, are etcd's: the branch's own deletes are
// collected first; then each nested txn, in order, contributes the puts of
// both its branches (a key put by both branches of one nested txn is fine,
// since only one runs), each checked against the puts and deletes collected
// so far, and then its deletes; last, the branch's own puts are checked
// against everything. Overlapping deletes are allowed.
func branchWrites(ops []*pb.RequestOp) (map[string]struct{}, []keySpan, error) {
	var dels []keySpan
	for _, op := range ops {
		if d, ok := op.GetRequest().(*pb.RequestOp_RequestDeleteRange); ok && d.RequestDeleteRange != nil {
			dels = append(dels, deleteSpan(d.RequestDeleteRange))
		}
	}
	puts := map[string]struct{}{}
	for _, op := range ops {
		t, ok := op.GetRequest().(*pb.RequestOp_RequestTxn)
		if !ok {
			continue
		}
		thenPuts, thenDels, err := branchWrites(t.RequestTxn.GetSuccess())
		if err != nil {
			return nil, nil, err
		}
		elsePuts, elseDels, err := branchWrites(t.RequestTxn.GetFailure())
		if err != nil {
			return nil, nil, err
		}
		for k := range thenPuts {
			if _, dup := puts[k]; dup || anyContains(dels, k) {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = struct{}{}
		}
		for k := range elsePuts {
			_, dup := puts[k]
			_, inThen := thenPuts[k]
			if (dup && !inThen) || anyContains(dels, k) {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = struct{}{}
		}
		dels = append(dels, thenDels...)
		dels = append(dels, elseDels...)
	}
	for _, op := range ops {
		p, ok := op.GetRequest().(*pb.RequestOp_RequestPut)
		if !ok || p.RequestPut == nil {
			continue
		}
		k := string(p.RequestPut.GetKey())
		if _, dup := puts[k]; dup || anyContains(dels, k) {
			return nil, nil, rpctypes.ErrGRPCDuplicateKey
		}
		puts[k] = struct{}{}
	}
	return puts, dels, nil
}
