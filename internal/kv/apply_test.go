package kv

import (
	"context"
	"slices"
	"strconv"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/synod-io/synod/internal/mvcc"
)

func TestPut(t *testing.T) {
	e := newEnv(t)
	resp := e.mustPut(&pb.PutRequest{Key: []byte("k"), Value: []byte("v1"), PrevKv: true})
	if resp.Header.GetRevision() != 1 || resp.PrevKv != nil {
		t.Errorf("first put: got %s, want revision 1 and no prev_kv", str(resp))
	}
	resp = e.mustPut(&pb.PutRequest{Key: []byte("k"), Value: []byte("v2"), PrevKv: true})
	if want := kv("k", "v1", 1, 1, 1, 0); str(resp.PrevKv) != str(want) {
		t.Errorf("prev_kv: got %s, want %s", str(resp.PrevKv), str(want))
	}
	if resp.Header.GetRevision() != 2 {
		t.Errorf("header revision: got %d, want 2", resp.Header.GetRevision())
	}
	resp = e.mustPut(&pb.PutRequest{Key: []byte("k"), Value: []byte("v3")})
	if resp.PrevKv != nil {
		t.Errorf("prev_kv not requested: got %s, want nil", str(resp.PrevKv))
	}
	if got, want := e.get("k"), kv("k", "v3", 1, 3, 3, 0); str(got) != str(want) {
		t.Errorf("stored: got %s, want %s", str(got), str(want))
	}
	if e.meta.Revision != 3 {
		t.Errorf("meta revision: got %d, want 3", e.meta.Revision)
	}
}

func TestPutLeases(t *testing.T) {
	e := newEnv(t) // leases 1 and 2 exist
	e.mustPut(&pb.PutRequest{Key: []byte("k"), Value: []byte("v"), Lease: 1})
	e.mustPut(&pb.PutRequest{Key: []byte("k"), Value: []byte("v"), Lease: 1})
	e.mustPut(&pb.PutRequest{Key: []byte("k"), Value: []byte("v"), Lease: 2})
	e.mustPut(&pb.PutRequest{Key: []byte("k"), IgnoreValue: true, IgnoreLease: true})
	e.mustPut(&pb.PutRequest{Key: []byte("k"), Value: []byte("w")})
	e.mustPut(&pb.PutRequest{Key: []byte("j"), Value: []byte("v"), Lease: 2})
	e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte("z")})
	want := []string{`attach 1 "k"`, `detach 1 "k"`, `attach 2 "k"`, `detach 2 "k"`, `attach 2 "j"`, `detach 2 "j"`}
	if !slices.Equal(e.leases.calls, want) {
		t.Errorf("lease calls: got %q, want %q", e.leases.calls, want)
	}

	err := e.apply(func(a *Applier) error {
		_, err := a.Put(&pb.PutRequest{Key: []byte("k"), Lease: 3})
		return err
	})
	wantErr(t, "unknown lease", err, rpctypes.ErrGRPCLeaseNotFound)

	err = e.apply(func(a *Applier) error {
		a.Leases = nil
		_, err := a.Put(&pb.PutRequest{Key: []byte("k"), Lease: 1})
		return err
	})
	wantErr(t, "nil Leases", err, rpctypes.ErrGRPCLeaseNotFound)
}

func TestPutIgnoreValueAndLease(t *testing.T) {
	e := newEnv(t)
	e.mustPut(&pb.PutRequest{Key: []byte("k"), Value: []byte("v"), Lease: 1})
	resp := e.mustPut(&pb.PutRequest{Key: []byte("k"), IgnoreValue: true, Lease: 2, PrevKv: true})
	if resp.PrevKv.GetLease() != 1 {
		t.Errorf("prev lease: got %d, want 1", resp.PrevKv.GetLease())
	}
	if got, want := e.get("k"), kv("k", "v", 1, 2, 2, 2); str(got) != str(want) {
		t.Errorf("ignore value: got %s, want %s", str(got), str(want))
	}
	e.mustPut(&pb.PutRequest{Key: []byte("k"), Value: []byte("w"), IgnoreLease: true})
	if got, want := e.get("k"), kv("k", "w", 1, 3, 3, 2); str(got) != str(want) {
		t.Errorf("ignore lease: got %s, want %s", str(got), str(want))
	}
	e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("k")})
	for _, r := range []*pb.PutRequest{
		{Key: []byte("k"), IgnoreValue: true},
		{Key: []byte("k"), IgnoreLease: true},
		{Key: []byte("never"), IgnoreValue: true, IgnoreLease: true},
	} {
		err := e.apply(func(a *Applier) error {
			_, err := a.Put(r)
			return err
		})
		wantErr(t, "ignore on missing key "+str(r), err, rpctypes.ErrGRPCKeyNotFound)
	}
	// etcd checks the lease first.
	err := e.apply(func(a *Applier) error {
		_, err := a.Put(&pb.PutRequest{Key: []byte("never"), IgnoreValue: true, Lease: 9})
		return err
	})
	wantErr(t, "unknown lease and missing key", err, rpctypes.ErrGRPCLeaseNotFound)
}

func TestApplyRejectsEmptyKeys(t *testing.T) {
	e := newEnv(t)
	err := e.apply(func(a *Applier) error {
		_, err := a.Put(&pb.PutRequest{})
		return err
	})
	wantErr(t, "put", err, rpctypes.ErrGRPCEmptyKey)
	err = e.apply(func(a *Applier) error {
		_, err := a.DeleteRange(&pb.DeleteRangeRequest{RangeEnd: []byte("\x00")})
		return err
	})
	wantErr(t, "delete", err, rpctypes.ErrGRPCEmptyKey)
}

func TestDeleteRange(t *testing.T) {
	e := newEnv(t)
	for _, k := range []string{"a", "b", "c", "d"} {
		e.mustPut(&pb.PutRequest{Key: []byte(k), Value: []byte("v"), Lease: 1})
	}
	resp := e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("b"), RangeEnd: []byte("d"), PrevKv: true})
	if resp.Deleted != 2 || resp.Header.GetRevision() != 5 {
		t.Errorf("got deleted %d at %d, want 2 at 5", resp.Deleted, resp.Header.GetRevision())
	}
	if got := keysOf(resp.PrevKvs); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("prev_kvs: got %q, want [b c]", got)
	}
	resp = e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("a")})
	if resp.Deleted != 1 || resp.PrevKvs != nil {
		t.Errorf("single delete: got %s, want deleted 1 without prev_kvs", str(resp))
	}
	if got := e.leases.attachments(); !slices.Equal(got, []string{`1 "d"`}) {
		t.Errorf("attachments: got %q, want [1 \"d\"]", got)
	}
	evs := e.events[4:]
	wantEvs := []string{"DELETE b 5 prev=b@2", "DELETE c 5 prev=c@3", "DELETE a 6 prev=a@1"}
	if got := eventStrings(evs); !slices.Equal(got, wantEvs) {
		t.Errorf("events: got %q, want %q", got, wantEvs)
	}
}

func eventStrings(evs []Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		s := ev.Type.String() + " " + string(ev.KV.Key) + " " + itoa(ev.KV.ModRevision)
		if ev.Type == mvccpb.Event_PUT {
			s += "=" + string(ev.KV.Value)
		}
		if ev.PrevKV != nil {
			s += " prev=" + string(ev.PrevKV.Key) + "@" + itoa(ev.PrevKV.ModRevision)
		}
		out[i] = s
	}
	return out
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }

// TestNoOpCommandsKeepRevision checks that commands writing nothing do not
// advance the revision.
func TestNoOpCommandsKeepRevision(t *testing.T) {
	e := newEnv(t)
	e.put("a", "1")
	resp := e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("zz")})
	if resp.Deleted != 0 || resp.Header.GetRevision() != 1 {
		t.Errorf("no-op delete: got deleted %d at %d, want 0 at 1", resp.Deleted, resp.Header.GetRevision())
	}
	tresp := e.mustTxn(&pb.TxnRequest{Success: ops(getOp("a", ""), delOp("x", "y"))})
	if tresp.Header.GetRevision() != 1 {
		t.Errorf("no-op txn: got revision %d, want 1", tresp.Header.GetRevision())
	}
	e.mustTxn(&pb.TxnRequest{})
	if e.meta.Revision != 1 {
		t.Errorf("meta revision: got %d, want 1", e.meta.Revision)
	}
	if len(e.events) != 1 {
		t.Errorf("events: got %d, want 1", len(e.events))
	}
	e.put("b", "2")
	if got := e.get("b"); got.GetModRevision() != 2 {
		t.Errorf("next write: got revision %d, want 2", got.GetModRevision())
	}
}

func TestCompact(t *testing.T) {
	e := newEnv(t)
	e.put("a", "1")
	e.put("a", "2")
	e.put("a", "3")
	compact := func(rev int64) (*pb.CompactionResponse, error) {
		var resp *pb.CompactionResponse
		err := e.apply(func(a *Applier) (err error) {
			resp, err = a.Compact(&pb.CompactionRequest{Revision: rev})
			return err
		})
		return resp, err
	}
	_, err := compact(4)
	wantErr(t, "future", err, rpctypes.ErrGRPCFutureRev)
	_, err = compact(0)
	wantErr(t, "zero", err, rpctypes.ErrGRPCCompacted)
	resp, err := compact(2)
	if err != nil || resp.Header.GetRevision() != 3 || e.meta.CompactRevision != 2 {
		t.Errorf("compact 2: got %s, %v, compact revision %d, want revision 3, nil, 2",
			str(resp), err, e.meta.CompactRevision)
	}
	_, err = compact(2)
	wantErr(t, "again", err, rpctypes.ErrGRPCCompacted)
	_, err = compact(1)
	wantErr(t, "older", err, rpctypes.ErrGRPCCompacted)
	if _, err := compact(3); err != nil {
		t.Errorf("compact 3: got error %v, want nil", err)
	}
	if e.meta.Revision != 3 {
		t.Errorf("meta revision: got %d, want 3", e.meta.Revision)
	}
}

// TestApplierSharesBatchAcrossCommands checks that commands applied to one
// batch see each other's writes and get consecutive revisions.
func TestApplierSharesBatchAcrossCommands(t *testing.T) {
	db := openDB(t)
	b := db.NewIndexedBatch()
	defer b.Close()
	var meta Meta
	a := &Applier{Batch: b, Meta: &meta}
	if _, err := a.Put(&pb.PutRequest{Key: []byte("k"), Value: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	resp, err := a.Put(&pb.PutRequest{Key: []byte("k"), Value: []byte("2"), PrevKv: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := kv("k", "1", 1, 1, 1, 0); str(resp.PrevKv) != str(want) {
		t.Errorf("prev: got %s, want %s", str(resp.PrevKv), str(want))
	}
	tresp, err := a.Txn(&pb.TxnRequest{
		Compare: []*pb.Compare{{Key: []byte("k"), Target: pb.Compare_VERSION,
			TargetUnion: &pb.Compare_Version{Version: 2}}},
		Success: ops(getOp("k", "")),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !tresp.Succeeded || meta.Revision != 2 {
		t.Errorf("got succeeded %v at %d, want true at 2", tresp.Succeeded, meta.Revision)
	}
	wantEvs := []string{"PUT k 1=1", "PUT k 2=2 prev=k@1"}
	if got := eventStrings(a.Events); !slices.Equal(got, wantEvs) {
		t.Errorf("events: got %q, want %q", got, wantEvs)
	}
}

// TestOverwriteLeavesThePreviousValueUnread: a put over a live key takes the
// previous version's revisions and lease from the index and leaves its value
// for Event.ReadPrev, unless the request asks for it; once compaction has
// removed that version, the event goes without one, as in etcd.
func TestOverwriteLeavesThePreviousValueUnread(t *testing.T) {
	e := newEnv(t)
	e.mustPut(&pb.PutRequest{Key: []byte("a"), Value: []byte("v1"), Lease: 1})
	put := func(r *pb.PutRequest) (*pb.PutResponse, Event) {
		t.Helper()
		b := e.db.NewIndexedBatch()
		defer b.Close()
		a := &Applier{Batch: b, Live: e.idx, Meta: &e.meta, Leases: e.leases}
		resp, err := a.Put(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		if len(a.Events) != 1 {
			t.Fatalf("got %d events, want 1", len(a.Events))
		}
		return resp, a.Events[0]
	}

	_, ev := put(&pb.PutRequest{Key: []byte("a"), Value: []byte("v2")})
	if got, want := str(ev.PrevKV), str(kv("a", "", 1, 1, 1, 1)); !ev.PrevValueUnread || got != want {
		t.Fatalf("overwrite: got prev %s (unread %v), want %s, unread", got, ev.PrevValueUnread, want)
	}
	if got := e.leases.attachments(); len(got) != 0 {
		t.Fatalf("lease attachments after moving a off lease 1: got %q, want none", got)
	}
	if err := ev.ReadPrev(e.db); err != nil {
		t.Fatal(err)
	}
	if got, want := str(ev.PrevKV), str(kv("a", "v1", 1, 1, 1, 1)); ev.PrevValueUnread || got != want {
		t.Fatalf("after ReadPrev: got prev %s, want %s", got, want)
	}

	resp, ev := put(&pb.PutRequest{Key: []byte("a"), Value: []byte("v3"), PrevKv: true})
	want := str(kv("a", "v2", 1, 2, 2, 0))
	if got := str(resp.PrevKv); got != want {
		t.Fatalf("put with prev_kv: got response prev %s, want %s", got, want)
	}
	if got := str(ev.PrevKV); ev.PrevValueUnread || got != want {
		t.Fatalf("put with prev_kv: got event prev %s (unread %v), want %s", got, ev.PrevValueUnread, want)
	}
	if got, want := str(e.get("a")), str(kv("a", "v3", 1, 3, 3, 0)); got != want {
		t.Fatalf("get a: got %s, want %s", got, want)
	}

	_, ev = put(&pb.PutRequest{Key: []byte("a"), Value: []byte("v4")})
	if err := mvcc.Compact(context.Background(), e.db, 4, 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := ev.ReadPrev(e.db); err != nil {
		t.Fatal(err)
	}
	if ev.PrevKV != nil || ev.PrevValueUnread {
		t.Fatalf("previous version compacted: got prev %s, want none", str(ev.PrevKV))
	}

	// ignore_value reads the live version anyway: the event gets it whole.
	e.put("b", "x")
	_, ev = put(&pb.PutRequest{Key: []byte("b"), IgnoreValue: true})
	if got, want := str(ev.PrevKV), str(kv("b", "x", 5, 5, 1, 0)); ev.PrevValueUnread || got != want {
		t.Fatalf("put with ignore_value: got event prev %s (unread %v), want %s, read", got, ev.PrevValueUnread, want)
	}
}
