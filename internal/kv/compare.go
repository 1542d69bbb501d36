package kv

import (
	"bytes"
	"cmp"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/synod-io/synod/internal/mvcc"
)

// compareAll reports whether every compare holds in the state before the
// command (at readRevision, as seen through the batch).
func (a *Applier) compareAll(cmps []*pb.Compare) (bool, error) {
	for _, c := range cmps {
		ok, err := a.compare(c)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// compare evaluates one compare. With a range_end it must hold for every live
// key of the range. When no key is live, VALUE compares fail and the other
// targets compare against 0.
func (a *Applier) compare(c *pb.Compare) (bool, error) {
	start, end := rangeBounds(c.GetKey(), c.GetRangeEnd())
	opts := mvcc.RangeOptions{KeysOnly: c.GetTarget() != pb.Compare_VALUE}
	res, err := mvcc.Range(a.reader(), start, end, a.readRevision(), opts)
	if err != nil {
		return false, fmt.Errorf("compare [%q, %q): %w", start, end, err)
	}
	if len(res.KVs) == 0 {
		return c.GetTarget() != pb.Compare_VALUE && compareKV(c, &mvccpb.KeyValue{}), nil
	}
	for _, kv := range res.KVs {
		if !compareKV(c, kv) {
			return false, nil
		}
	}
	return true, nil
}

// compareKV applies a compare to one KV. A target_union that does not match
// the target compares against the zero value, an unknown target compares
// equal and an unknown result holds, all as in etcd.
func compareKV(c *pb.Compare, kv *mvccpb.KeyValue) bool {
	var result int
	switch c.GetTarget() {
	case pb.Compare_VALUE:
		result = bytes.Compare(kv.Value, c.GetValue())
	case pb.Compare_VERSION:
		result = cmp.Compare(kv.Version, c.GetVersion())
	case pb.Compare_CREATE:
		result = cmp.Compare(kv.CreateRevision, c.GetCreateRevision())
	case pb.Compare_MOD:
		result = cmp.Compare(kv.ModRevision, c.GetModRevision())
	case pb.Compare_LEASE:
		result = cmp.Compare(kv.Lease, c.GetLease())
	}
	switch c.GetResult() {
	case pb.Compare_EQUAL:
		return result == 0
	case pb.Compare_NOT_EQUAL:
		return result != 0
	case pb.Compare_GREATER:
		return result > 0
	case pb.Compare_LESS:
		return result < 0
	default:
		return true
	}
}
