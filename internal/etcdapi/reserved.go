package etcdapi

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
)

// ErrReservedKey refuses an etcd write to the keys reserved for Synod's
// services (keys.ReservedPrefix): their data is written by their own
// commands, whose invariants a raw put or delete would break. A delete of
// the whole keyspace hits it too: delete a prefix instead.
var ErrReservedKey = kv.ErrGRPCReservedKey

// checkReserved refuses a put, a delete or a txn whose writes reach the
// reserved keys (reads of them are allowed).
func checkReserved(req any) error {
	switch r := req.(type) {
	case *pb.PutRequest:
		if keys.OverlapsReserved(r.Key, nil) {
			return ErrReservedKey
		}
	case *pb.DeleteRangeRequest:
		if keys.OverlapsReserved(r.Key, r.RangeEnd) {
			return ErrReservedKey
		}
	case *pb.TxnRequest:
		for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
			for _, op := range ops {
				var err error
				switch o := op.Request.(type) {
				case *pb.RequestOp_RequestPut:
					err = checkReserved(o.RequestPut)
				case *pb.RequestOp_RequestDeleteRange:
					err = checkReserved(o.RequestDeleteRange)
				case *pb.RequestOp_RequestTxn:
					err = checkReserved(o.RequestTxn)
				}
				if err != nil {
					return err
				}
			}
		}
	}
	return nil
}
