package kv

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/mvcc"
)

// etcdModel is a deliberately naive in-memory model of etcd's KV semantics,
// written from etcd's documented behaviour independently of the package
// code: full per-key histories, linear scans, clone-on-command.
type etcdModel struct {
	rev, compactRev int64
	hist            map[string][]modelVer // oldest first
	leases          map[int64]bool
	events          []string
}

type modelVer struct {
	rev int64
	kv  *mvccpb.KeyValue // nil: tombstone
}

func newEtcdModel() *etcdModel {
	return &etcdModel{hist: map[string][]modelVer{}, leases: map[int64]bool{1: true, 2: true}}
}

func (m *etcdModel) clone() *etcdModel {
	c := *m
	c.hist = maps.Clone(m.hist)
	for k, vs := range c.hist {
		c.hist[k] = slices.Clone(vs)
	}
	c.events = slices.Clone(m.events)
	return &c
}

func (m *etcdModel) get(key string, rev int64) *mvccpb.KeyValue {
	vs := m.hist[key]
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].rev <= rev {
			return vs[i].kv
		}
	}
	return nil
}

func (m *etcdModel) write(key string, rev int64, kv *mvccpb.KeyValue) {
	vs := m.hist[key]
	if n := len(vs); n > 0 && vs[n-1].rev == rev {
		vs[n-1].kv = kv
		return
	}
	m.hist[key] = append(vs, modelVer{rev: rev, kv: kv})
}

// inRange applies etcd's key/range_end convention.
func inRange(k, key, end []byte) bool {
	switch {
	case len(end) == 0:
		return bytes.Equal(k, key)
	case len(end) == 1 && end[0] == 0:
		return bytes.Compare(k, key) >= 0
	default:
		return bytes.Compare(k, key) >= 0 && bytes.Compare(k, end) < 0
	}
}

// live returns copies of the KVs live at rev in the range, in key order.
func (m *etcdModel) live(key, end []byte, rev int64) []*mvccpb.KeyValue {
	var ks []string
	for k := range m.hist {
		if inRange([]byte(k), key, end) && m.get(k, rev) != nil {
			ks = append(ks, k)
		}
	}
	slices.Sort(ks)
	out := make([]*mvccpb.KeyValue, len(ks))
	for i, k := range ks {
		out[i] = proto.Clone(m.get(k, rev)).(*mvccpb.KeyValue)
	}
	return out
}

// rangeResp follows etcd's range steps literally: limit+1 pushed down only
// with sort order NONE and no filter, then filters, sort, limit.
func (m *etcdModel) rangeResp(r *pb.RangeRequest, readRev, headerRev int64) *pb.RangeResponse {
	kvs := m.live(r.Key, r.RangeEnd, readRev)
	total := int64(len(kvs))
	filtered := r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0
	lim := r.Limit
	if r.SortOrder != pb.RangeRequest_NONE || filtered {
		lim = 0
	}
	if lim > 0 && int64(len(kvs)) > lim+1 {
		kvs = kvs[:lim+1]
	}
	if r.CountOnly {
		kvs = nil
	}
	var keep []*mvccpb.KeyValue
	for _, kv := range kvs {
		if (r.MaxModRevision != 0 && kv.ModRevision > r.MaxModRevision) ||
			(r.MinModRevision != 0 && kv.ModRevision < r.MinModRevision) ||
			(r.MaxCreateRevision != 0 && kv.CreateRevision > r.MaxCreateRevision) ||
			(r.MinCreateRevision != 0 && kv.CreateRevision < r.MinCreateRevision) {
			continue
		}
		keep = append(keep, kv)
	}
	order := r.SortOrder
	if r.SortTarget != pb.RangeRequest_KEY && order == pb.RangeRequest_NONE {
		order = pb.RangeRequest_ASCEND
	}
	if order != pb.RangeRequest_NONE {
		field := func(kv *mvccpb.KeyValue) string {
			n := func(v int64) string { return fmt.Sprintf("%020d", v) }
			switch r.SortTarget {
			case pb.RangeRequest_VERSION:
				return n(kv.Version)
			case pb.RangeRequest_CREATE:
				return n(kv.CreateRevision)
			case pb.RangeRequest_MOD:
				return n(kv.ModRevision)
			case pb.RangeRequest_VALUE:
				return string(kv.Value)
			default:
				return string(kv.Key)
			}
		}
		sort.SliceStable(keep, func(i, j int) bool {
			if order == pb.RangeRequest_DESCEND {
				return field(keep[i]) > field(keep[j])
			}
			return field(keep[i]) < field(keep[j])
		})
	}
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: headerRev}, Count: total}
	if r.Limit > 0 && int64(len(keep)) > r.Limit {
		keep, resp.More = keep[:r.Limit], true
	}
	for _, kv := range keep {
		if r.KeysOnly {
			kv.Value = nil
		}
	}
	resp.Kvs = keep
	return resp
}

// Range answers a read outside apply.
func (m *etcdModel) Range(r *pb.RangeRequest) (*pb.RangeResponse, error) {
	rev := r.Revision
	if rev > m.rev {
		return nil, rpctypes.ErrGRPCFutureRev
	}
	if rev <= 0 {
		rev = m.rev
	}
	if rev < m.compactRev {
		return nil, rpctypes.ErrGRPCCompacted
	}
	return m.rangeResp(r, rev, m.rev), nil
}

// modelCmd executes one command on a clone of the model.
type modelCmd struct {
	m       *etcdModel
	base    int64
	changed bool
	inTxn   bool
}

func (c *modelCmd) rev() int64 { return c.base + 1 }

func (c *modelCmd) current() int64 {
	if c.changed {
		return c.rev()
	}
	return c.base
}

func (c *modelCmd) put(r *pb.PutRequest) (*pb.PutResponse, error) {
	leaseErr := error(nil)
	if r.Lease != 0 && !c.m.leases[r.Lease] {
		leaseErr = rpctypes.ErrGRPCLeaseNotFound
	}
	if leaseErr != nil && !c.inTxn {
		return nil, leaseErr
	}
	cur := c.m.get(string(r.Key), c.rev())
	if (r.IgnoreValue || r.IgnoreLease) && cur == nil {
		return nil, rpctypes.ErrGRPCKeyNotFound
	}
	if leaseErr != nil {
		return nil, leaseErr
	}
	value, lease := r.Value, r.Lease
	if r.IgnoreValue {
		value = cur.Value
	}
	if r.IgnoreLease {
		lease = cur.Lease
	}
	nkv := &mvccpb.KeyValue{Key: r.Key, Value: value, CreateRevision: c.rev(), ModRevision: c.rev(), Version: 1, Lease: lease}
	if cur != nil {
		nkv.CreateRevision, nkv.Version = cur.CreateRevision, cur.Version+1
	}
	c.m.write(string(r.Key), c.rev(), nkv)
	c.changed = true
	c.m.events = append(c.m.events, fmt.Sprintf("PUT %s prev=%s", str(nkv), str(cur)))
	resp := &pb.PutResponse{Header: &pb.ResponseHeader{Revision: c.rev()}}
	if r.PrevKv {
		resp.PrevKv = cur
	}
	return resp, nil
}

func (c *modelCmd) deleteRange(r *pb.DeleteRangeRequest) *pb.DeleteRangeResponse {
	prevs := c.m.live(r.Key, r.RangeEnd, c.rev())
	for _, p := range prevs {
		c.m.write(string(p.Key), c.rev(), nil)
		c.changed = true
		tomb := &mvccpb.KeyValue{Key: p.Key, ModRevision: c.rev()}
		c.m.events = append(c.m.events, fmt.Sprintf("DELETE %s prev=%s", str(tomb), str(p)))
	}
	resp := &pb.DeleteRangeResponse{Header: &pb.ResponseHeader{Revision: c.current()}, Deleted: int64(len(prevs))}
	if r.PrevKv {
		resp.PrevKvs = prevs
	}
	return resp
}

func (c *modelCmd) compare(cmp *pb.Compare) bool {
	kvs := c.m.live(cmp.Key, cmp.RangeEnd, c.base)
	if len(kvs) == 0 {
		if cmp.Target == pb.Compare_VALUE {
			return false
		}
		kvs = []*mvccpb.KeyValue{{}}
	}
	for _, kv := range kvs {
		var res int
		switch cmp.Target {
		case pb.Compare_VALUE:
			res = bytes.Compare(kv.Value, cmp.GetValue())
		case pb.Compare_VERSION:
			res = cmpInt(kv.Version, cmp.GetVersion())
		case pb.Compare_CREATE:
			res = cmpInt(kv.CreateRevision, cmp.GetCreateRevision())
		case pb.Compare_MOD:
			res = cmpInt(kv.ModRevision, cmp.GetModRevision())
		case pb.Compare_LEASE:
			res = cmpInt(kv.Lease, cmp.GetLease())
		}
		ok := map[pb.Compare_CompareResult]bool{
			pb.Compare_EQUAL: res == 0, pb.Compare_NOT_EQUAL: res != 0,
			pb.Compare_GREATER: res > 0, pb.Compare_LESS: res < 0,
		}[cmp.Result]
		if !ok {
			return false
		}
	}
	return true
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// path evaluates every compare on the chosen path before anything is
// written, as etcd does.
type modelPath struct {
	ok     bool
	nested map[int]*modelPath
}

func (c *modelCmd) path(r *pb.TxnRequest) *modelPath {
	p := &modelPath{ok: true, nested: map[int]*modelPath{}}
	for _, cmp := range r.Compare {
		if !c.compare(cmp) {
			p.ok = false
			break
		}
	}
	for i, op := range branch(r, p.ok) {
		if t := op.GetRequestTxn(); t != nil {
			p.nested[i] = c.path(t)
		}
	}
	return p
}

func branch(r *pb.TxnRequest, ok bool) []*pb.RequestOp {
	if ok {
		return r.Success
	}
	return r.Failure
}

func (c *modelCmd) txn(r *pb.TxnRequest, p *modelPath) (*pb.TxnResponse, error) {
	resp := &pb.TxnResponse{Header: &pb.ResponseHeader{}, Succeeded: p.ok}
	for i, op := range branch(r, p.ok) {
		out := &pb.ResponseOp{}
		switch {
		case op.GetRequestRange() != nil:
			rr := op.GetRequestRange()
			switch {
			case rr.Revision > c.base:
				return nil, rpctypes.ErrGRPCFutureRev
			case rr.Revision > 0 && rr.Revision < c.m.compactRev:
				return nil, rpctypes.ErrGRPCCompacted
			}
			readRev := rr.Revision
			if readRev <= 0 {
				readRev = c.current()
			}
			out.Response = &pb.ResponseOp_ResponseRange{ResponseRange: c.m.rangeResp(rr, readRev, c.current())}
		case op.GetRequestPut() != nil:
			pr, err := c.put(op.GetRequestPut())
			if err != nil {
				return nil, err
			}
			out.Response = &pb.ResponseOp_ResponsePut{ResponsePut: pr}
		case op.GetRequestDeleteRange() != nil:
			out.Response = &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: c.deleteRange(op.GetRequestDeleteRange())}
		case op.GetRequestTxn() != nil:
			tr, err := c.txn(op.GetRequestTxn(), p.nested[i])
			if err != nil {
				return nil, err
			}
			out.Response = &pb.ResponseOp_ResponseTxn{ResponseTxn: tr}
		}
		resp.Responses = append(resp.Responses, out)
	}
	return resp, nil
}

// apply runs fn as one command: all or nothing.
func (m *etcdModel) apply(inTxn bool, fn func(c *modelCmd) (proto.Message, error)) (proto.Message, error) {
	c := &modelCmd{m: m.clone(), base: m.rev, inTxn: inTxn}
	resp, err := fn(c)
	if err != nil {
		return nil, err
	}
	if c.changed {
		c.m.rev = c.rev()
	}
	*m = *c.m
	return resp, nil
}

func (m *etcdModel) attachments() []string {
	var out []string
	for k := range m.hist {
		if kv := m.get(k, m.rev); kv != nil && kv.Lease != 0 {
			out = append(out, fmt.Sprintf("%d %q", kv.Lease, k))
		}
	}
	slices.Sort(out)
	return out
}

// Request generation.

type gen struct {
	rng *rand.Rand
	m   *etcdModel
}

var modelKeys = []string{"a", "a\x00", "ab", "b", "ba", "c", "\x00", "\xff", "z"}

func (g *gen) key() []byte { return []byte(modelKeys[g.rng.IntN(len(modelKeys))]) }

func (g *gen) rangeEnd() []byte {
	switch g.rng.IntN(5) {
	case 0, 1:
		return nil
	case 2:
		return []byte{0}
	default:
		return g.key()
	}
}

func (g *gen) value() []byte { return fmt.Appendf(nil, "v%d", g.rng.IntN(4)) }

func (g *gen) small() int64 { return g.rng.Int64N(g.m.rev + 3) }

func (g *gen) put() *pb.PutRequest {
	r := &pb.PutRequest{Key: g.key(), Value: g.value(), PrevKv: g.rng.IntN(2) == 0,
		Lease: []int64{0, 0, 0, 1, 2, 3}[g.rng.IntN(6)]}
	if g.rng.IntN(6) == 0 {
		r.IgnoreValue, r.Value = true, nil
	}
	if g.rng.IntN(6) == 0 {
		r.IgnoreLease, r.Lease = true, 0
	}
	return r
}

func (g *gen) del() *pb.DeleteRangeRequest {
	return &pb.DeleteRangeRequest{Key: g.key(), RangeEnd: g.rangeEnd(), PrevKv: g.rng.IntN(2) == 0}
}

func (g *gen) rangeReq() *pb.RangeRequest {
	r := &pb.RangeRequest{Key: g.key(), RangeEnd: g.rangeEnd(), Limit: g.rng.Int64N(4),
		SortOrder: pb.RangeRequest_SortOrder(g.rng.IntN(3)), SortTarget: pb.RangeRequest_SortTarget(g.rng.IntN(5)),
		KeysOnly: g.rng.IntN(4) == 0, CountOnly: g.rng.IntN(8) == 0}
	if g.rng.IntN(3) == 0 {
		r.Revision = g.small() - 1
	}
	if g.rng.IntN(4) == 0 {
		switch g.rng.IntN(4) {
		case 0:
			r.MinModRevision = g.small()
		case 1:
			r.MaxModRevision = g.small()
		case 2:
			r.MinCreateRevision = g.small()
		default:
			r.MaxCreateRevision = g.small()
		}
	}
	return r
}

func (g *gen) compare() *pb.Compare {
	c := &pb.Compare{Key: g.key(), Target: pb.Compare_CompareTarget(g.rng.IntN(5)),
		Result: pb.Compare_CompareResult(g.rng.IntN(4))}
	if g.rng.IntN(4) == 0 {
		c.RangeEnd = g.rangeEnd()
	}
	switch c.Target {
	case pb.Compare_VALUE:
		c.TargetUnion = &pb.Compare_Value{Value: g.value()}
	case pb.Compare_VERSION:
		c.TargetUnion = &pb.Compare_Version{Version: g.rng.Int64N(4)}
	case pb.Compare_CREATE:
		c.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: g.small()}
	case pb.Compare_MOD:
		c.TargetUnion = &pb.Compare_ModRevision{ModRevision: g.small()}
	case pb.Compare_LEASE:
		c.TargetUnion = &pb.Compare_Lease{Lease: g.rng.Int64N(3)}
	}
	return c
}

func (g *gen) ops(depth int) []*pb.RequestOp {
	out := make([]*pb.RequestOp, g.rng.IntN(4))
	for i := range out {
		switch n := g.rng.IntN(10); {
		case n < 3:
			out[i] = rangeOp(g.rangeReq())
		case n < 7:
			out[i] = putReqOp(g.put())
		case n < 8 || depth >= 2:
			out[i] = &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: g.del()}}
		default:
			out[i] = txnOp(g.txn(depth + 1))
		}
	}
	return out
}

func (g *gen) txn(depth int) *pb.TxnRequest {
	r := &pb.TxnRequest{Success: g.ops(depth), Failure: g.ops(depth)}
	for range g.rng.IntN(3) {
		r.Compare = append(r.Compare, g.compare())
	}
	return r
}

// checker runs the same commands on the real applier and the model.
type checker struct {
	t *testing.T
	e *env
	m *etcdModel
}

func (c *checker) check(what string, got proto.Message, gotErr error, want proto.Message, wantErr error) {
	c.t.Helper()
	if gotErr != wantErr || (gotErr == nil && !proto.Equal(got, want)) {
		c.t.Fatalf("%s:\ngot  %s, %v\nwant %s, %v", what, str(got), gotErr, str(want), wantErr)
	}
}

func (c *checker) checkState(what string) {
	c.t.Helper()
	if c.e.meta.Revision != c.m.rev || c.e.meta.CompactRevision != c.m.compactRev {
		c.t.Fatalf("%s: got meta %+v, want revision %d compact %d", what, c.e.meta, c.m.rev, c.m.compactRev)
	}
	var got []string
	for _, ev := range c.e.events {
		got = append(got, fmt.Sprintf("%v %s prev=%s", ev.Type, str(ev.KV), str(ev.PrevKV)))
	}
	if !slices.Equal(got, c.m.events) {
		c.t.Fatalf("%s: events\ngot  %q\nwant %q", what, got, c.m.events)
	}
	if got, want := c.e.leases.attachments(), c.m.attachments(); !slices.Equal(got, want) {
		c.t.Fatalf("%s: lease attachments: got %q, want %q", what, got, want)
	}
	c.e.checkIndex()
}

func (c *checker) step(g *gen) {
	c.t.Helper()
	switch n := g.rng.IntN(20); {
	case n < 7:
		r := g.put()
		if ValidatePut(r) != nil {
			return
		}
		var got *pb.PutResponse
		err := c.e.apply(func(a *Applier) (err error) { got, err = a.Put(r); return err })
		want, wantErr := c.m.apply(false, func(mc *modelCmd) (proto.Message, error) { return mc.put(r) })
		c.check("put "+str(r), got, err, want, wantErr)
	case n < 8:
		r := g.del()
		var got *pb.DeleteRangeResponse
		err := c.e.apply(func(a *Applier) (err error) { got, err = a.DeleteRange(r); return err })
		want, wantErr := c.m.apply(false, func(mc *modelCmd) (proto.Message, error) { return mc.deleteRange(r), nil })
		c.check("delete "+str(r), got, err, want, wantErr)
	case n < 14:
		r := g.txn(0)
		if ValidateTxn(r, Limits{}) != nil {
			return
		}
		var got *pb.TxnResponse
		err := c.e.apply(func(a *Applier) (err error) { got, err = a.Txn(r); return err })
		want, wantErr := c.m.apply(true, func(mc *modelCmd) (proto.Message, error) {
			resp, err := mc.txn(r, mc.path(r))
			if err == nil {
				resp.Header.Revision = mc.current()
			}
			return resp, err
		})
		c.check("txn "+str(r), got, err, want, wantErr)
	case n < 15:
		rev := g.rng.Int64N(c.m.rev+2) + c.m.compactRev/2
		c.compact(rev)
	default:
		r := g.rangeReq()
		got, err := c.e.rangeReq(r)
		want, wantErr := c.m.Range(r)
		c.check("range "+str(r), got, err, want, wantErr)
	}
	c.checkState("after step")
}

func (c *checker) compact(rev int64) {
	c.t.Helper()
	var got *pb.CompactionResponse
	err := c.e.apply(func(a *Applier) (err error) { got, err = a.Compact(&pb.CompactionRequest{Revision: rev}); return err })
	var want *pb.CompactionResponse
	var wantErr error
	switch {
	case rev > c.m.rev:
		wantErr = rpctypes.ErrGRPCFutureRev
	case rev <= c.m.compactRev:
		wantErr = rpctypes.ErrGRPCCompacted
	default:
		c.m.compactRev = rev
		want = &pb.CompactionResponse{Header: &pb.ResponseHeader{Revision: c.m.rev}}
	}
	c.check(fmt.Sprintf("compact %d", rev), got, err, want, wantErr)
	if err == nil {
		batchKeys := 1 + int(rev%4) // vary the physical batch size
		if err := mvcc.Compact(context.Background(), c.e.db, rev, batchKeys, nil); err != nil {
			c.t.Fatalf("physical compaction: %v", err)
		}
	}
}

// checkAllRevisions reads every key range of interest at every readable
// revision.
func (c *checker) checkAllRevisions() {
	c.t.Helper()
	for rev := c.m.compactRev - 1; rev <= c.m.rev+1; rev++ {
		for _, key := range modelKeys {
			for _, end := range [][]byte{nil, {0}, []byte("b")} {
				r := &pb.RangeRequest{Key: []byte(key), RangeEnd: end, Revision: rev}
				got, err := c.e.rangeReq(r)
				want, wantErr := c.m.Range(r)
				c.check("final range "+str(r), got, err, want, wantErr)
			}
		}
	}
}

func TestModelRandomized(t *testing.T) {
	for seed := range uint64(30) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			c := &checker{t: t, e: newEnv(t), m: newEtcdModel()}
			g := &gen{rng: rng, m: c.m}
			for range 300 {
				c.step(g)
			}
			c.checkAllRevisions()
		})
	}
}
