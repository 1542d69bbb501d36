package kv

import (
	"errors"
	"fmt"
	"log"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keyindex"
)

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)         {}
func (quietLogger) Errorf(f string, args ...any) { log.Printf(f, args...) }
func (quietLogger) Fatalf(f string, args ...any) { log.Fatalf(f, args...) }

func openDB(t testing.TB) *pebble.DB {
	t.Helper()
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{}})
	if err != nil {
		t.Fatalf("open pebble: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("close pebble: %v", err)
		}
	})
	return db
}

// fakeLeases is a Leases with a fixed set of existing leases that records
// attachments.
type fakeLeases struct {
	existing map[int64]bool
	attached map[int64]map[string]bool
	calls    []string
}

func newFakeLeases(ids ...int64) *fakeLeases {
	l := &fakeLeases{existing: map[int64]bool{}, attached: map[int64]map[string]bool{}}
	for _, id := range ids {
		l.existing[id] = true
	}
	return l
}

func (l *fakeLeases) Exists(id int64) (bool, error) { return l.existing[id], nil }

func (l *fakeLeases) Attach(id int64, key []byte) error {
	l.calls = append(l.calls, fmt.Sprintf("attach %d %q", id, key))
	if l.attached[id] == nil {
		l.attached[id] = map[string]bool{}
	}
	l.attached[id][string(key)] = true
	return nil
}

func (l *fakeLeases) Detach(id int64, key []byte) error {
	l.calls = append(l.calls, fmt.Sprintf("detach %d %q", id, key))
	delete(l.attached[id], string(key))
	return nil
}

// attachments lists "lease key" pairs in sorted order.
func (l *fakeLeases) attachments() []string {
	var out []string
	for id, ks := range l.attached {
		for k := range ks {
			out = append(out, fmt.Sprintf("%d %q", id, k))
		}
	}
	slices.Sort(out)
	return out
}

// env is a store with its applied state: every command runs in a fresh
// indexed batch committed when it succeeds.
type env struct {
	t      testing.TB
	db     *pebble.DB
	meta   Meta
	leases *fakeLeases
	events []Event
	// idx indexes the live keys, kept up to date by apply as in the
	// replica; reads check it against the store.
	idx *keyindex.Index
}

func newEnv(t testing.TB) *env {
	return &env{t: t, db: openDB(t), leases: newFakeLeases(1, 2), idx: keyindex.New(0)}
}

// apply runs fn on an Applier over a fresh batch, commits the batch if fn
// succeeded, and checks that a failing command left no trace.
func (e *env) apply(fn func(a *Applier) error) error {
	e.t.Helper()
	b := e.db.NewIndexedBatch()
	defer func() {
		if err := b.Close(); err != nil {
			e.t.Errorf("close batch: %v", err)
		}
	}()
	before := e.meta
	indexBefore := indexString(e.idx.Snapshot())
	a := &Applier{Batch: b, Live: e.idx, Meta: &e.meta, Leases: e.leases}
	if err := fn(a); err != nil {
		if got := indexString(e.idx.Snapshot()); got != indexBefore {
			e.t.Errorf("failed command: got index %s, want it unchanged: %s", got, indexBefore)
		}
		if b.Count() != 0 {
			e.t.Errorf("failed command: got %d writes in the batch, want 0", b.Count())
		}
		if e.meta != before {
			e.t.Errorf("failed command: got meta %+v, want %+v", e.meta, before)
		}
		if len(a.Events) != 0 {
			e.t.Errorf("failed command: got %d events, want 0", len(a.Events))
		}
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		e.t.Fatalf("commit: %v", err)
	}
	// What a watcher that asks for previous values gets (the hub reads
	// them from the committed store, as here).
	for i := range a.Events {
		if err := a.Events[i].ReadPrev(e.db); err != nil {
			e.t.Fatalf("read previous value: %v", err)
		}
	}
	e.events = append(e.events, a.Events...)
	return nil
}

// checkIndex checks the index kept by apply against one built from the
// store.
func (e *env) checkIndex() {
	e.t.Helper()
	built, err := BuildIndex(e.db, e.meta.Revision)
	if err != nil {
		e.t.Fatalf("build index: %v", err)
	}
	if got, want := indexString(e.idx.Snapshot()), indexString(built.Snapshot()); got != want {
		e.t.Fatalf("index kept by apply:\ngot  %s\nwant %s (built from the store)", got, want)
	}
}

func indexString(s *keyindex.Snapshot) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rev %d:", s.Revision())
	s.Ascend(nil, nil, func(e *keyindex.Entry) bool {
		fmt.Fprintf(&b, " %q@%d/c%d/v%d/l%d", e.Key, e.ModRevision, e.CreateRevision, e.Version, e.Lease)
		return true
	})
	return b.String()
}

func (e *env) put(key, value string) *pb.PutResponse {
	e.t.Helper()
	return e.mustPut(&pb.PutRequest{Key: []byte(key), Value: []byte(value)})
}

func (e *env) mustPut(r *pb.PutRequest) *pb.PutResponse {
	e.t.Helper()
	var resp *pb.PutResponse
	err := e.apply(func(a *Applier) (err error) {
		resp, err = a.Put(r)
		return err
	})
	if err != nil {
		e.t.Fatalf("put %s: %v", prototext.Format(r), err)
	}
	return resp
}

func (e *env) mustDelete(r *pb.DeleteRangeRequest) *pb.DeleteRangeResponse {
	e.t.Helper()
	var resp *pb.DeleteRangeResponse
	err := e.apply(func(a *Applier) (err error) {
		resp, err = a.DeleteRange(r)
		return err
	})
	if err != nil {
		e.t.Fatalf("delete %s: %v", prototext.Format(r), err)
	}
	return resp
}

// txn applies a txn. A read-only one is also served by ReadTxn first, which
// must give the same response or error: every txn test of a read-only txn
// checks the read path against apply.
func (e *env) txn(r *pb.TxnRequest) (*pb.TxnResponse, error) {
	e.t.Helper()
	var readResp *pb.TxnResponse
	var readErr error
	readOnly := IsReadOnlyTxn(r)
	if readOnly {
		readResp, readErr = ReadTxn(e.db, nil, e.meta, r)
		indexed, ierr := ReadTxn(e.db, e.idx.Snapshot(), e.meta, r)
		if fmt.Sprint(ierr) != fmt.Sprint(readErr) || (ierr == nil && !proto.Equal(indexed, readResp)) {
			e.t.Errorf("read-only txn %s through the index: got %s, %v, want %s, %v", prototext.Format(r), str(indexed), ierr, str(readResp), readErr)
		}
	}
	var resp *pb.TxnResponse
	err := e.apply(func(a *Applier) (err error) {
		resp, err = a.Txn(r)
		return err
	})
	if readOnly {
		if fmt.Sprint(readErr) != fmt.Sprint(err) {
			e.t.Errorf("read-only txn %s: ReadTxn got error %v, apply %v", prototext.Format(r), readErr, err)
		}
		if err == nil && readErr == nil && !proto.Equal(readResp, resp) {
			e.t.Errorf("read-only txn %s: ReadTxn got %s, apply %s", prototext.Format(r), str(readResp), str(resp))
		}
	}
	return resp, err
}

func (e *env) mustTxn(r *pb.TxnRequest) *pb.TxnResponse {
	e.t.Helper()
	resp, err := e.txn(r)
	if err != nil {
		e.t.Fatalf("txn %s: %v", prototext.Format(r), err)
	}
	return resp
}

// rangeReq serves r from the store and through the index, which must agree.
func (e *env) rangeReq(r *pb.RangeRequest) (*pb.RangeResponse, error) {
	e.t.Helper()
	resp, err := Range(e.db, nil, e.meta, r)
	indexed, ierr := Range(e.db, e.idx.Snapshot(), e.meta, r)
	if fmt.Sprint(ierr) != fmt.Sprint(err) || (ierr == nil && !proto.Equal(indexed, resp)) {
		e.t.Errorf("range %s through the index: got %s, %v, want %s, %v", prototext.Format(r), str(indexed), ierr, str(resp), err)
	}
	return resp, err
}

func (e *env) mustRange(r *pb.RangeRequest) *pb.RangeResponse {
	e.t.Helper()
	resp, err := e.rangeReq(r)
	if err != nil {
		e.t.Fatalf("range %s: %v", prototext.Format(r), err)
	}
	return resp
}

// get returns the live KV of key at the current revision, or nil.
func (e *env) get(key string) *mvccpb.KeyValue {
	e.t.Helper()
	resp := e.mustRange(&pb.RangeRequest{Key: []byte(key)})
	if len(resp.Kvs) == 0 {
		return nil
	}
	return resp.Kvs[0]
}

func kv(key, value string, create, mod, version, lease int64) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{
		Key: []byte(key), Value: []byte(value), CreateRevision: create,
		ModRevision: mod, Version: version, Lease: lease,
	}
}

func str(m proto.Message) string {
	if m == nil {
		return "<nil>"
	}
	return strings.TrimSpace(prototext.MarshalOptions{}.Format(m))
}

func kvsString(kvs []*mvccpb.KeyValue) string {
	parts := make([]string, len(kvs))
	for i, kv := range kvs {
		parts[i] = fmt.Sprintf("%q", kv.Key)
		if kv.Value != nil {
			parts[i] += "=" + fmt.Sprintf("%q", kv.Value)
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func keysOf(kvs []*mvccpb.KeyValue) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = string(kv.Key)
	}
	return out
}

func wantErr(t testing.TB, what string, got, want error) {
	t.Helper()
	if !errors.Is(got, want) {
		t.Errorf("%s: got error %v, want %v", what, got, want)
	}
}

// Request builders.

func putOp(key, value string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{
		RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte(value)}}}
}

func putReqOp(r *pb.PutRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: r}}
}

func delOp(key, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{
		RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(key), RangeEnd: []byte(end)}}}
}

func rangeOp(r *pb.RangeRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: r}}
}

func getOp(key, end string) *pb.RequestOp {
	return rangeOp(&pb.RangeRequest{Key: []byte(key), RangeEnd: []byte(end)})
}

func txnOp(r *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: r}}
}

func ops(o ...*pb.RequestOp) []*pb.RequestOp { return o }
