package kv

import (
	"context"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/synod-io/synod/internal/mvcc"
)

// hashStore is a minimal state machine for hash tests.
type hashStore struct {
	t    *testing.T
	db   *pebble.DB
	meta Meta
}

func newHashStore(t *testing.T) *hashStore {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &hashStore{t: t, db: db, meta: Meta{Revision: 1}}
}

func (s *hashStore) do(fn func(a *Applier) error) {
	s.t.Helper()
	b := s.db.NewIndexedBatch()
	defer b.Close()
	if err := fn(&Applier{Batch: b, Meta: &s.meta}); err != nil {
		s.t.Fatal(err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		s.t.Fatal(err)
	}
}

func (s *hashStore) history() {
	for i := 0; i < 60; i++ {
		k := fmt.Sprintf("k%d", i%9)
		if i%7 == 3 {
			s.do(func(a *Applier) error {
				_, err := a.DeleteRange(&pb.DeleteRangeRequest{Key: []byte(k)})
				return err
			})
			continue
		}
		s.do(func(a *Applier) error {
			_, err := a.Put(&pb.PutRequest{Key: []byte(k), Value: []byte(fmt.Sprint(i))})
			return err
		})
	}
}

func (s *hashStore) hash(rev int64) uint32 {
	s.t.Helper()
	h, _, err := HashKV(s.db, s.meta, rev)
	if err != nil {
		s.t.Fatal(err)
	}
	return h
}

// TestHashKVIgnoresPhysicalCompaction: two members with the same history and
// compaction revision hash alike, whether or not one of them has physically
// compacted.
func TestHashKVIgnoresPhysicalCompaction(t *testing.T) {
	a, b := newHashStore(t), newHashStore(t)
	a.history()
	b.history()
	if a.hash(0) != b.hash(0) {
		t.Fatalf("same history, different hashes")
	}
	compactAt := a.meta.Revision - 20
	for _, s := range []*hashStore{a, b} {
		s.do(func(ap *Applier) error {
			_, err := ap.Compact(&pb.CompactionRequest{Revision: compactAt})
			return err
		})
	}
	before := a.hash(0)
	if err := mvcc.Compact(context.Background(), a.db, compactAt, 3, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := a.hash(0), b.hash(0); got != want || got != before {
		t.Fatalf("hash after physical compaction of one member: got %x, other member %x, before %x", got, want, before)
	}
	for rev := compactAt; rev <= a.meta.Revision; rev++ {
		if a.hash(rev) != b.hash(rev) {
			t.Fatalf("hash at %d differs between the members", rev)
		}
	}
	// A different history hashes differently.
	b.do(func(ap *Applier) error {
		_, err := ap.Put(&pb.PutRequest{Key: []byte("extra"), Value: []byte("x")})
		return err
	})
	if a.hash(0) == b.hash(0) {
		t.Fatalf("different current states hash alike")
	}
	if _, _, err := HashKV(a.db, a.meta, compactAt-1); err != rpctypes.ErrGRPCCompacted {
		t.Fatalf("hash below compaction: got %v, want %v", err, rpctypes.ErrGRPCCompacted)
	}
	if _, _, err := HashKV(a.db, a.meta, a.meta.Revision+1); err != rpctypes.ErrGRPCFutureRev {
		t.Fatalf("hash of a future revision: got %v, want %v", err, rpctypes.ErrGRPCFutureRev)
	}
}
