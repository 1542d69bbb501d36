package kv

import (
	"fmt"
	"slices"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/synod-io/synod/internal/mvcc"
)

// compareWith builds a compare of key against a target value given as an
// int64 (the VALUE target uses its decimal string).
func compareWith(key, end string, target pb.Compare_CompareTarget, result pb.Compare_CompareResult, v int64) *pb.Compare {
	c := &pb.Compare{Key: []byte(key), RangeEnd: []byte(end), Target: target, Result: result}
	switch target {
	case pb.Compare_VALUE:
		c.TargetUnion = &pb.Compare_Value{Value: []byte(fmt.Sprint(v))}
	case pb.Compare_VERSION:
		c.TargetUnion = &pb.Compare_Version{Version: v}
	case pb.Compare_CREATE:
		c.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: v}
	case pb.Compare_MOD:
		c.TargetUnion = &pb.Compare_ModRevision{ModRevision: v}
	case pb.Compare_LEASE:
		c.TargetUnion = &pb.Compare_Lease{Lease: v}
	}
	return c
}

var (
	allTargets = []pb.Compare_CompareTarget{pb.Compare_VALUE, pb.Compare_VERSION, pb.Compare_CREATE,
		pb.Compare_MOD, pb.Compare_LEASE}
	allResults = []pb.Compare_CompareResult{pb.Compare_EQUAL, pb.Compare_GREATER, pb.Compare_LESS,
		pb.Compare_NOT_EQUAL}
)

func holds(result pb.Compare_CompareResult, c int) bool {
	switch result {
	case pb.Compare_EQUAL:
		return c == 0
	case pb.Compare_GREATER:
		return c > 0
	case pb.Compare_LESS:
		return c < 0
	default:
		return c != 0
	}
}

func (e *env) succeeds(cmps ...*pb.Compare) bool {
	e.t.Helper()
	return e.mustTxn(&pb.TxnRequest{Compare: cmps}).Succeeded
}

// TestCompareTargetsAndResults checks every target with every result on an
// existing key, against its actual field value, one less and one more; and
// on a missing key.
func TestCompareTargetsAndResults(t *testing.T) {
	e := newEnv(t)
	e.leases.existing[5] = true
	for i := range 4 {
		e.put(fmt.Sprint("pad", i), "x") // revisions 1-4
	}
	e.mustPut(&pb.PutRequest{Key: []byte("k"), Value: []byte("5"), Lease: 5})         // 5
	e.mustPut(&pb.PutRequest{Key: []byte("k"), IgnoreValue: true, IgnoreLease: true}) // 6
	got := e.get("k")                                                                 // value "5", version 2, create 5, mod 6, lease 5
	kvOf := map[pb.Compare_CompareTarget]int64{
		pb.Compare_VALUE: 5, pb.Compare_VERSION: got.Version, pb.Compare_CREATE: got.CreateRevision,
		pb.Compare_MOD: got.ModRevision, pb.Compare_LEASE: got.Lease,
	}
	for _, target := range allTargets {
		actual := kvOf[target]
		for _, result := range allResults {
			for _, delta := range []int64{-1, 0, 1} {
				operand := actual + delta
				want := holds(result, -int(delta))
				if got := e.succeeds(compareWith("k", "", target, result, operand)); got != want {
					t.Errorf("%v %v %d on actual %d: got %v, want %v", target, result, operand, actual, got, want)
				}
			}
			// A missing key: VALUE always fails, the rest compare with 0.
			for _, operand := range []int64{-1, 0, 1} {
				want := target != pb.Compare_VALUE && holds(result, -int(operand))
				if got := e.succeeds(compareWith("missing", "", target, result, operand)); got != want {
					t.Errorf("missing key %v %v %d: got %v, want %v", target, result, operand, got, want)
				}
			}
		}
	}
}

func TestCompareRanges(t *testing.T) {
	e := newEnv(t)
	e.put("r1", "a")  // 1
	e.put("r2", "b")  // 2
	e.put("r2", "b")  // 3: r2 version 2
	e.put("s", "zzz") // 4
	tests := []struct {
		name string
		cmp  *pb.Compare
		want bool
	}{
		{"all versions > 0", compareWith("r", "s", pb.Compare_VERSION, pb.Compare_GREATER, 0), true},
		{"not all versions = 1", compareWith("r", "s", pb.Compare_VERSION, pb.Compare_EQUAL, 1), false},
		{"all mods < 4", compareWith("r", "s", pb.Compare_MOD, pb.Compare_LESS, 4), true},
		{"all mods < 3 fails on r2", compareWith("r", "s", pb.Compare_MOD, pb.Compare_LESS, 3), false},
		{"from key to end", compareWith("r", "\x00", pb.Compare_CREATE, pb.Compare_GREATER, 0), true},
		{"from key to end includes s", compareWith("r", "\x00", pb.Compare_MOD, pb.Compare_LESS, 4), false},
		{"empty range compares with zero", compareWith("x", "y", pb.Compare_VERSION, pb.Compare_EQUAL, 0), true},
		{"empty range value fails", &pb.Compare{Key: []byte("x"), RangeEnd: []byte("y"),
			Target: pb.Compare_VALUE, Result: pb.Compare_NOT_EQUAL}, false},
		{"range end below key is empty", compareWith("s", "r", pb.Compare_VERSION, pb.Compare_EQUAL, 0), true},
		{"value range", &pb.Compare{Key: []byte("r"), RangeEnd: []byte("s"), Target: pb.Compare_VALUE,
			Result: pb.Compare_LESS, TargetUnion: &pb.Compare_Value{Value: []byte("c")}}, true},
		{"mismatched union compares with zero", &pb.Compare{Key: []byte("r1"), Target: pb.Compare_VERSION,
			Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Value{Value: []byte("x")}}, true},
		{"value without union is empty", &pb.Compare{Key: []byte("r1"), Target: pb.Compare_VALUE,
			Result: pb.Compare_GREATER}, true},
		{"unknown result holds", &pb.Compare{Key: []byte("r1"), Target: pb.Compare_VERSION, Result: 17}, true},
		{"unknown target compares equal", &pb.Compare{Key: []byte("r1"), Target: 17, Result: pb.Compare_EQUAL}, true},
	}
	for _, tt := range tests {
		if got := e.succeeds(tt.cmp); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
	if e.succeeds(compareWith("r1", "", pb.Compare_VERSION, pb.Compare_EQUAL, 1),
		compareWith("r2", "", pb.Compare_VERSION, pb.Compare_EQUAL, 1)) {
		t.Errorf("conjunction with one false compare: got true, want false")
	}
}

func TestTxnBranchesAndResponses(t *testing.T) {
	e := newEnv(t)
	e.put("a", "1") // 1
	req := &pb.TxnRequest{
		Compare: []*pb.Compare{compareWith("a", "", pb.Compare_VALUE, pb.Compare_EQUAL, 1)},
		Success: ops(
			getOp("a", ""),
			putReqOp(&pb.PutRequest{Key: []byte("b"), Value: []byte("2"), PrevKv: true}),
			getOp("a", "\x00"),
			delOp("zz", ""),
			delOp("a", ""),
			rangeOp(&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("\x00"), Revision: 1}),
		),
		Failure: ops(putOp("failure", "x")),
	}
	resp := e.mustTxn(req)
	want := &pb.TxnResponse{
		Header:    &pb.ResponseHeader{Revision: 2},
		Succeeded: true,
		Responses: []*pb.ResponseOp{
			{Response: &pb.ResponseOp_ResponseRange{ResponseRange: &pb.RangeResponse{
				Header: &pb.ResponseHeader{Revision: 1}, Kvs: []*mvccpb.KeyValue{kv("a", "1", 1, 1, 1, 0)}, Count: 1}}},
			{Response: &pb.ResponseOp_ResponsePut{ResponsePut: &pb.PutResponse{
				Header: &pb.ResponseHeader{Revision: 2}}}},
			{Response: &pb.ResponseOp_ResponseRange{ResponseRange: &pb.RangeResponse{
				Header: &pb.ResponseHeader{Revision: 2},
				Kvs:    []*mvccpb.KeyValue{kv("a", "1", 1, 1, 1, 0), kv("b", "2", 2, 2, 1, 0)}, Count: 2}}},
			{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: &pb.DeleteRangeResponse{
				Header: &pb.ResponseHeader{Revision: 2}}}},
			{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: &pb.DeleteRangeResponse{
				Header: &pb.ResponseHeader{Revision: 2}, Deleted: 1}}},
			{Response: &pb.ResponseOp_ResponseRange{ResponseRange: &pb.RangeResponse{
				Header: &pb.ResponseHeader{Revision: 2}, Kvs: []*mvccpb.KeyValue{kv("a", "1", 1, 1, 1, 0)}, Count: 1}}},
		},
	}
	if str(resp) != str(want) {
		t.Errorf("response:\ngot  %s\nwant %s", str(resp), str(want))
	}
	wantEvs := []string{"PUT b 2=2", "DELETE a 2 prev=a@1"}
	if got := eventStrings(e.events[1:]); !slices.Equal(got, wantEvs) {
		t.Errorf("events: got %q, want %q", got, wantEvs)
	}

	resp = e.mustTxn(req) // a is gone: failure branch
	if resp.Succeeded || resp.Header.GetRevision() != 3 || len(resp.Responses) != 1 {
		t.Errorf("failure branch: got %s, want failed at revision 3 with one response", str(resp))
	}
	if e.get("failure") == nil {
		t.Errorf("failure branch put: got no key, want it written")
	}
}

// TestTxnSubRevisions checks that the writes of a txn are numbered in op
// order, a range delete taking one sub-revision per deleted key.
func TestTxnSubRevisions(t *testing.T) {
	e := newEnv(t)
	e.mustTxn(&pb.TxnRequest{Success: ops(putOp("x", ""), putOp("y", ""))}) // 1
	e.mustTxn(&pb.TxnRequest{Success: ops(
		putOp("c", "1"),
		delOp("nothing", ""),
		delOp("x", "z"),
		txnOp(&pb.TxnRequest{Success: ops(putOp("a", "2"))}),
	)}) // 2
	var got []string
	err := mvcc.ChangesSince(e.db, nil, nil, 2, func(c mvcc.Change) error {
		got = append(got, fmt.Sprintf("%s:%d", c.KV.Key, c.Sub))
		return nil
	})
	if err != nil {
		t.Fatalf("changes: %v", err)
	}
	slices.Sort(got)
	want := []string{"a:3", "c:0", "x:1", "y:2"}
	if !slices.Equal(got, want) {
		t.Errorf("subs: got %q, want %q", got, want)
	}
}

// TestNestedTxnComparesSeeStateBeforeTxn checks etcd's rule that every
// compare, nested ones included, is evaluated before the txn writes.
func TestNestedTxnComparesSeeStateBeforeTxn(t *testing.T) {
	e := newEnv(t)
	e.put("other", "x") // 1
	resp := e.mustTxn(&pb.TxnRequest{Success: ops(
		putOp("a", "1"),
		txnOp(&pb.TxnRequest{
			Compare: []*pb.Compare{compareWith("a", "", pb.Compare_VERSION, pb.Compare_GREATER, 0)},
			Success: ops(putOp("b", "a existed")),
			Failure: ops(putOp("b", "a was missing"), getOp("a", "")),
		}),
	)})
	if got := string(e.get("b").GetValue()); got != "a was missing" {
		t.Errorf("nested branch: got b=%q, want %q", got, "a was missing")
	}
	nested := resp.Responses[1].GetResponseTxn()
	if nested.GetSucceeded() {
		t.Errorf("nested succeeded: got true, want false")
	}
	if nested.GetHeader().GetRevision() != 0 {
		t.Errorf("nested header revision: got %d, want 0 (as etcd)", nested.GetHeader().GetRevision())
	}
	inner := nested.GetResponses()[1].GetResponseRange()
	if len(inner.GetKvs()) != 1 || inner.GetHeader().GetRevision() != 2 {
		t.Errorf("nested range: got %s, want a at header revision 2", str(inner))
	}
	if resp.Header.GetRevision() != 2 || e.meta.Revision != 2 {
		t.Errorf("revision: got %d (meta %d), want 2", resp.Header.GetRevision(), e.meta.Revision)
	}
}

// TestTxnFailuresWriteNothing checks errors detected before any write; the
// env verifies that the batch, meta and events are untouched.
func TestTxnFailuresWriteNothing(t *testing.T) {
	e := newEnv(t)
	e.put("a", "1") // 1
	e.put("b", "2") // 2
	e.put("c", "3") // 3
	if err := e.apply(func(a *Applier) error {
		_, err := a.Compact(&pb.CompactionRequest{Revision: 2})
		return err
	}); err != nil {
		t.Fatalf("compact: %v", err)
	}
	tests := []struct {
		name string
		ops  []*pb.RequestOp
		want error
	}{
		{"ignore value on missing key", ops(putOp("x", "1"),
			putReqOp(&pb.PutRequest{Key: []byte("missing"), IgnoreValue: true})), rpctypes.ErrGRPCKeyNotFound},
		{"ignore lease on missing key", ops(putOp("x", "1"),
			putReqOp(&pb.PutRequest{Key: []byte("missing"), IgnoreLease: true})), rpctypes.ErrGRPCKeyNotFound},
		{"unknown lease", ops(delOp("a", ""), putReqOp(&pb.PutRequest{Key: []byte("x"), Lease: 99})),
			rpctypes.ErrGRPCLeaseNotFound},
		{"future range", ops(putOp("x", "1"), rangeOp(&pb.RangeRequest{Key: []byte("a"), Revision: 4})),
			rpctypes.ErrGRPCFutureRev},
		{"compacted range", ops(putOp("x", "1"), rangeOp(&pb.RangeRequest{Key: []byte("a"), Revision: 1})),
			rpctypes.ErrGRPCCompacted},
		{"bad sort in range", ops(putOp("x", "1"), rangeOp(&pb.RangeRequest{Key: []byte("a"), SortOrder: 7})),
			rpctypes.ErrGRPCInvalidSortOption},
		{"empty put key", ops(putOp("x", "1"), putOp("", "1")), rpctypes.ErrGRPCEmptyKey},
		{"empty delete key", ops(putOp("x", "1"), delOp("", "\x00")), rpctypes.ErrGRPCEmptyKey},
		{"nested failure", ops(putOp("x", "1"), txnOp(&pb.TxnRequest{
			Success: ops(putReqOp(&pb.PutRequest{Key: []byte("y"), Lease: 99}))})), rpctypes.ErrGRPCLeaseNotFound},
		// etcd would pass its checks (against the state before the txn) and
		// then fail mid-txn; here the checks see the txn's earlier delete.
		{"ignore value after own delete", ops(delOp("a", "\x00"),
			putReqOp(&pb.PutRequest{Key: []byte("b"), IgnoreValue: true})), rpctypes.ErrGRPCKeyNotFound},
	}
	for _, tt := range tests {
		_, err := e.txn(&pb.TxnRequest{Success: tt.ops})
		wantErr(t, tt.name, err, tt.want)
	}
	// Failing operations in the branch not taken do not matter.
	resp, err := e.txn(&pb.TxnRequest{
		Compare: []*pb.Compare{compareWith("a", "", pb.Compare_VERSION, pb.Compare_EQUAL, 7)},
		Success: ops(putReqOp(&pb.PutRequest{Key: []byte("missing"), IgnoreValue: true})),
		Failure: ops(putOp("ok", "1")),
	})
	if err != nil || resp.Succeeded {
		t.Errorf("untaken failing branch: got %s, %v, want failure branch applied", str(resp), err)
	}
	// Checks see earlier puts of the txn too.
	if _, err := e.txn(&pb.TxnRequest{Success: ops(txnOp(&pb.TxnRequest{Success: ops(putOp("new", "v"))}),
		putReqOp(&pb.PutRequest{Key: []byte("new"), IgnoreValue: true, PrevKv: true}))}); err != nil {
		t.Errorf("ignore value after own put: got error %v, want nil", err)
	}
	if got := e.get("new"); got.GetVersion() != 2 || string(got.GetValue()) != "v" {
		t.Errorf("after own put: got %s, want version 2 value v", str(got))
	}
}

// TestTxnRangeRevisionWithinTxn checks which revision ranges inside a txn
// read and report.
func TestTxnRangeRevisionWithinTxn(t *testing.T) {
	e := newEnv(t)
	e.put("a", "1") // 1
	resp := e.mustTxn(&pb.TxnRequest{Success: ops(
		rangeOp(&pb.RangeRequest{Key: []byte("a"), CountOnly: true}),
		putOp("a", "2"),
		rangeOp(&pb.RangeRequest{Key: []byte("a")}),
		rangeOp(&pb.RangeRequest{Key: []byte("a"), Revision: 1}),
	)})
	r0 := resp.Responses[0].GetResponseRange()
	r2 := resp.Responses[2].GetResponseRange()
	r3 := resp.Responses[3].GetResponseRange()
	if r0.GetHeader().GetRevision() != 1 || r0.GetCount() != 1 {
		t.Errorf("range before write: got %s, want count 1 at revision 1", str(r0))
	}
	if r2.GetHeader().GetRevision() != 2 || string(r2.GetKvs()[0].GetValue()) != "2" {
		t.Errorf("range after write: got %s, want a=2 at revision 2", str(r2))
	}
	if r3.GetHeader().GetRevision() != 2 || string(r3.GetKvs()[0].GetValue()) != "1" {
		t.Errorf("range at revision 1: got %s, want a=1 with header revision 2", str(r3))
	}
}

func TestTxnEmptyOpsAreTolerated(t *testing.T) {
	e := newEnv(t)
	resp := e.mustTxn(&pb.TxnRequest{Success: ops(&pb.RequestOp{}, nil,
		&pb.RequestOp{Request: &pb.RequestOp_RequestTxn{}},
		&pb.RequestOp{Request: &pb.RequestOp_RequestRange{}})})
	if len(resp.Responses) != 4 || resp.Header.GetRevision() != 0 {
		t.Errorf("got %s, want 4 responses at revision 0", str(resp))
	}
}

func TestIsReadOnlyTxn(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  *pb.TxnRequest
		want bool
	}{
		{"empty", &pb.TxnRequest{}, true},
		{"compares only", &pb.TxnRequest{Compare: []*pb.Compare{compareWith("a", "", pb.Compare_VERSION, pb.Compare_EQUAL, 0)}}, true},
		{"ranges on both branches", &pb.TxnRequest{Success: []*pb.RequestOp{getOp("a", "")}, Failure: []*pb.RequestOp{getOp("b", "c")}}, true},
		{"nested read-only", &pb.TxnRequest{Success: []*pb.RequestOp{txnOp(&pb.TxnRequest{Failure: []*pb.RequestOp{getOp("a", "")}})}}, true},
		{"put on success", &pb.TxnRequest{Success: []*pb.RequestOp{getOp("a", ""), putOp("a", "1")}}, false},
		{"delete on failure", &pb.TxnRequest{Failure: []*pb.RequestOp{delOp("a", "")}}, false},
		{"nested put", &pb.TxnRequest{Failure: []*pb.RequestOp{txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{putOp("a", "1")}})}}, false},
		{"empty op", &pb.TxnRequest{Success: []*pb.RequestOp{{}}}, false},
	} {
		if got := IsReadOnlyTxn(tc.req); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestReadTxnMatchesApply runs read-only txns over history, compaction and
// revisions beyond it through both paths (env.txn compares them).
func TestReadTxnMatchesApply(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		e.put(fmt.Sprintf("k%d", i), fmt.Sprint(i))
		e.put("k0", fmt.Sprint(10+i))
	}
	e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("k3")})
	rev := e.meta.Revision
	ranges := []*pb.RequestOp{
		getOp("k0", ""),
		getOp("k", "l"),
		rangeOp(&pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Revision: 3}),
		rangeOp(&pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 1, SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_CREATE, MaxCreateRevision: 4}),
		rangeOp(&pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("\x00"), CountOnly: true}),
	}
	for _, target := range allTargets {
		for _, result := range allResults {
			c := compareWith("k0", "", target, result, 4)
			e.mustTxn(&pb.TxnRequest{Compare: []*pb.Compare{c}, Success: ranges, Failure: []*pb.RequestOp{
				txnOp(&pb.TxnRequest{Compare: []*pb.Compare{compareWith("k", "l", target, result, 2)}, Success: ranges[:2], Failure: ranges[2:]}),
			}})
		}
	}
	if _, err := e.txn(&pb.TxnRequest{Success: []*pb.RequestOp{rangeOp(&pb.RangeRequest{Key: []byte("k0"), Revision: rev + 1})}}); err != rpctypes.ErrGRPCFutureRev {
		t.Errorf("range beyond the current revision: got %v, want %v", err, rpctypes.ErrGRPCFutureRev)
	}
	e.meta.CompactRevision = 5 // as a compaction at 5 leaves it
	if _, err := e.txn(&pb.TxnRequest{Success: []*pb.RequestOp{rangeOp(&pb.RangeRequest{Key: []byte("k0"), Revision: 3})}}); err != rpctypes.ErrGRPCCompacted {
		t.Errorf("range below the compaction: got %v, want %v", err, rpctypes.ErrGRPCCompacted)
	}
}

func TestReadTxnRefusesWrites(t *testing.T) {
	e := newEnv(t)
	if _, err := ReadTxn(e.db, nil, e.meta, &pb.TxnRequest{Success: []*pb.RequestOp{putOp("a", "1")}}); err == nil {
		t.Fatalf("ReadTxn of a txn with a put: got no error, want one")
	}
}

// TestNoReadResultsWritesTheSame applies the same txns with and without
// NoReadResults (as the proposer and the other members do) and checks that
// the writes, events, counters and errors agree, and that only the gets'
// results differ.
func TestNoReadResultsWritesTheSame(t *testing.T) {
	full, lean := newEnv(t), newEnv(t)
	txns := []*pb.TxnRequest{
		{Success: []*pb.RequestOp{putOp("q/a", "1"), getOp("q/", "q0")}},
		{Compare: []*pb.Compare{compareWith("q/a", "", pb.Compare_VERSION, pb.Compare_EQUAL, 1)},
			Success: []*pb.RequestOp{putOp("q/b", "2"), rangeOp(&pb.RangeRequest{Key: []byte("q/"), RangeEnd: []byte("q0"), Limit: 1,
				SortOrder: pb.RangeRequest_ASCEND, SortTarget: pb.RangeRequest_CREATE})},
			Failure: []*pb.RequestOp{getOp("q/a", "")}},
		{Success: []*pb.RequestOp{getOp("q/", "q0"), delOp("q/a", ""), txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{getOp("q/", "q0"), putOp("q/c", "3")}})}},
		{Success: []*pb.RequestOp{putOp("q/d", "4"), rangeOp(&pb.RangeRequest{Key: []byte("q/"), Revision: 100})}}, // a future revision: fails
	}
	for i, r := range txns {
		want, wantErr := full.txn(r)
		var got *pb.TxnResponse
		gotErr := lean.apply(func(a *Applier) (err error) {
			a.NoReadResults = true
			got, err = a.Txn(r)
			return err
		})
		if gotErr != wantErr {
			t.Fatalf("txn %d: got error %v, want %v", i, gotErr, wantErr)
		}
		if last := i == len(txns)-1; last != (wantErr != nil) {
			t.Fatalf("txn %d: got error %v, want one only for the last txn", i, wantErr)
		}
		if wantErr != nil {
			continue
		}
		if got.Succeeded != want.Succeeded || got.Header.Revision != want.Header.Revision {
			t.Fatalf("txn %d: got succeeded %v at %d, want %v at %d", i, got.Succeeded, got.Header.Revision, want.Succeeded, want.Header.Revision)
		}
		if full.meta != lean.meta {
			t.Fatalf("txn %d: got meta %+v, want %+v", i, lean.meta, full.meta)
		}
	}
	if len(full.events) != len(lean.events) {
		t.Fatalf("events: got %d, want %d", len(lean.events), len(full.events))
	}
	all := &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}
	if got, want := str(lean.mustRange(all)), str(full.mustRange(all)); got != want {
		t.Fatalf("state: got %s, want %s", got, want)
	}
}
