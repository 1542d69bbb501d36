package kv

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/synod-io/synod/internal/keyindex"
	"github.com/synod-io/synod/internal/mvcc"
)

// Range serves a range request outside apply, from a DB or snapshot reader
// whose applied state is m. The response header carries m.Revision, the
// store's current revision, whatever revision was read (as in etcd). idx,
// if not nil, indexes the keys live in r at m.Revision: reads at that
// revision then fetch from r only the values they return.
func Range(r pebble.Reader, idx *keyindex.Snapshot, m Meta, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	if err := checkSortOptions(req); err != nil {
		return nil, err
	}
	rev, err := readRevision(m, req.GetRevision())
	if err != nil {
		return nil, err
	}
	var live keyindex.Reader
	if idx != nil {
		live = idx
	}
	return executeRange(r, live, req, rev, m.Revision)
}

// readRevision resolves the revision a read at rev is served at: rev <= 0
// means the current revision.
func readRevision(m Meta, rev int64) (int64, error) {
	if rev > m.Revision {
		return 0, rpctypes.ErrGRPCFutureRev
	}
	if rev <= 0 {
		rev = m.Revision
	}
	if rev < m.CompactRevision {
		return 0, rpctypes.ErrGRPCCompacted
	}
	return rev, nil
}

// RangeBounds is rangeBounds, for the locks of transactions across ranges.
func RangeBounds(key, rangeEnd []byte) (start, end []byte) { return rangeBounds(key, rangeEnd) }

// rangeBounds converts etcd's key/range_end convention into mvcc bounds,
// where a nil end means no upper bound: an empty range_end selects the key
// alone and the range_end "\x00" selects every key >= key.
func rangeBounds(key, rangeEnd []byte) (start, end []byte) {
	switch {
	case len(rangeEnd) == 0:
		return key, append(append(make([]byte, 0, len(key)+1), key...), 0)
	case len(rangeEnd) == 1 && rangeEnd[0] == 0:
		return key, nil
	default:
		return key, rangeEnd
	}
}

// rangePlan says how a range request maps onto one mvcc.Range call and what
// remains to do on its result.
type rangePlan struct {
	opts   mvcc.RangeOptions
	order  pb.RangeRequest_SortOrder // sort still to apply; NONE: keep mvcc order
	target pb.RangeRequest_SortTarget
}

// planRange reproduces etcd's choices. etcd pushes the limit (plus one, to
// learn whether more keys remain) down to storage whenever the sort order is
// NONE and no revision filter is set, and sorts afterwards: with sort order
// NONE and a target other than KEY, it therefore sorts, ascending, only the
// first limit+1 keys. A KEY sort in either direction is served by the
// storage order itself, so its limit can be pushed down too.
func planRange(req *pb.RangeRequest) rangePlan {
	p := rangePlan{order: req.GetSortOrder(), target: req.GetSortTarget()}
	switch {
	case p.target != pb.RangeRequest_KEY && p.order == pb.RangeRequest_NONE:
		p.order = pb.RangeRequest_ASCEND
	case p.target == pb.RangeRequest_KEY && p.order == pb.RangeRequest_ASCEND:
		p.order = pb.RangeRequest_NONE
	}
	p.opts.CountOnly = req.GetCountOnly()
	p.opts.KeysOnly = req.GetKeysOnly() && p.target != pb.RangeRequest_VALUE
	pushDown := !hasRevisionFilter(req) &&
		(req.GetSortOrder() == pb.RangeRequest_NONE || p.target == pb.RangeRequest_KEY)
	if !pushDown {
		return p
	}
	if p.target == pb.RangeRequest_KEY && p.order == pb.RangeRequest_DESCEND {
		p.opts.Reverse, p.order = true, pb.RangeRequest_NONE
	}
	if limit := req.GetLimit(); limit > 0 && limit < math.MaxInt64 {
		p.opts.Limit = limit + 1
	}
	return p
}

func hasRevisionFilter(req *pb.RangeRequest) bool {
	return req.GetMinModRevision() != 0 || req.GetMaxModRevision() != 0 ||
		req.GetMinCreateRevision() != 0 || req.GetMaxCreateRevision() != 0
}

// executeRange reads req at revision rev and answers with header revision
// headerRev.
func executeRange(r pebble.Reader, idx keyindex.Reader, req *pb.RangeRequest, rev, headerRev int64) (*pb.RangeResponse, error) {
	p := planRange(req)
	start, end := rangeBounds(req.GetKey(), req.GetRangeEnd())
	// With an index at the revision read, the KVs come without values, and
	// only those that survive the filters, the sort and the limit are read
	// from the store. A sort by value needs them all first: no index then.
	fromIndex := idx != nil && rev > 0 && idx.Revision() == rev && p.target != pb.RangeRequest_VALUE
	var res mvcc.RangeResult
	if fromIndex {
		res = indexRange(idx, start, end, p.opts)
	} else {
		var err error
		if res, err = mvcc.Range(r, start, end, rev, p.opts); err != nil {
			return nil, fmt.Errorf("range [%q, %q) at revision %d: %w", start, end, rev, err)
		}
	}
	kvs := filterKVs(res.KVs, req)
	sortKVs(kvs, p.target, p.order)
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: headerRev}, Count: res.Count}
	if limit := req.GetLimit(); limit > 0 && int64(len(kvs)) > limit {
		kvs, resp.More = kvs[:limit], true
	}
	if fromIndex && !req.GetKeysOnly() {
		if err := mvcc.FillValues(r, kvs); err != nil {
			return nil, fmt.Errorf("range [%q, %q) at revision %d: %w", start, end, rev, err)
		}
	}
	if req.GetKeysOnly() {
		for _, kv := range kvs {
			kv.Value = nil
		}
	}
	resp.Kvs = kvs
	return resp, nil
}

// indexRange is mvcc.Range served from an index of the live keys at the
// revision read, with the same result except that the KVs have no values.
func indexRange(idx keyindex.Reader, start, end []byte, opts mvcc.RangeOptions) mvcc.RangeResult {
	var res mvcc.RangeResult
	visit := func(e *keyindex.Entry) bool {
		res.Count++
		if opts.CountOnly || (opts.Limit > 0 && int64(len(res.KVs)) >= opts.Limit) {
			return true
		}
		res.KVs = append(res.KVs, &mvccpb.KeyValue{
			Key:            append([]byte(nil), e.Key...),
			CreateRevision: e.CreateRevision,
			ModRevision:    e.ModRevision,
			Version:        e.Version,
			Lease:          e.Lease,
		})
		return true
	}
	if opts.Reverse {
		idx.Descend(start, end, visit)
	} else {
		idx.Ascend(start, end, visit)
	}
	return res
}

// filterKVs drops the KVs outside the request's inclusive mod and create
// revision bounds (0: no bound). It reuses kvs' storage.
func filterKVs(kvs []*mvccpb.KeyValue, req *pb.RangeRequest) []*mvccpb.KeyValue {
	if !hasRevisionFilter(req) {
		return kvs
	}
	return slices.DeleteFunc(kvs, func(kv *mvccpb.KeyValue) bool {
		return outside(kv.ModRevision, req.GetMinModRevision(), req.GetMaxModRevision()) ||
			outside(kv.CreateRevision, req.GetMinCreateRevision(), req.GetMaxCreateRevision())
	})
}

func outside(v, lo, hi int64) bool {
	return (lo != 0 && v < lo) || (hi != 0 && v > hi)
}

// sortKVs sorts kvs by target in the given order. The sort is stable, so
// KVs that tie on the target stay in ascending key order.
func sortKVs(kvs []*mvccpb.KeyValue, target pb.RangeRequest_SortTarget, order pb.RangeRequest_SortOrder) {
	if order != pb.RangeRequest_ASCEND && order != pb.RangeRequest_DESCEND {
		return
	}
	slices.SortStableFunc(kvs, func(a, b *mvccpb.KeyValue) int {
		c := compareTarget(a, b, target)
		if order == pb.RangeRequest_DESCEND {
			return -c
		}
		return c
	})
}

func compareTarget(a, b *mvccpb.KeyValue, target pb.RangeRequest_SortTarget) int {
	switch target {
	case pb.RangeRequest_VERSION:
		return cmp.Compare(a.Version, b.Version)
	case pb.RangeRequest_CREATE:
		return cmp.Compare(a.CreateRevision, b.CreateRevision)
	case pb.RangeRequest_MOD:
		return cmp.Compare(a.ModRevision, b.ModRevision)
	case pb.RangeRequest_VALUE:
		return bytes.Compare(a.Value, b.Value)
	default:
		return bytes.Compare(a.Key, b.Key)
	}
}
