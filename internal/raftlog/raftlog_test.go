package raftlog

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func openDB(t *testing.T) *pebble.DB {
	t.Helper()
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func ents(term uint64, from, to uint64) []*pb.Entry {
	var out []*pb.Entry
	for i := from; i <= to; i++ {
		out = append(out, &pb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(term), Data: []byte{byte(i)}})
	}
	return out
}

func commit(t *testing.T, db *pebble.DB, fn func(b *pebble.Batch) error) {
	t.Helper()
	b := db.NewBatch()
	defer b.Close()
	if err := fn(b); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

func load(t *testing.T, db *pebble.DB) *Storage {
	t.Helper()
	s, err := Load(db, 1, &pb.ConfState{Voters: []uint64{1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func checkEntries(t *testing.T, s *Storage, lo, hi uint64, wantTerm func(i uint64) uint64) {
	t.Helper()
	got, err := s.Entries(lo, hi, 1<<30)
	if err != nil {
		t.Fatalf("entries [%d,%d): %v", lo, hi, err)
	}
	if uint64(len(got)) != hi-lo {
		t.Fatalf("entries [%d,%d): got %d, want %d", lo, hi, len(got), hi-lo)
	}
	for k, e := range got {
		i := lo + uint64(k)
		if e.GetIndex() != i || e.GetTerm() != wantTerm(i) {
			t.Fatalf("entry %d: got index %d term %d, want term %d", i, e.GetIndex(), e.GetTerm(), wantTerm(i))
		}
	}
}

func TestAppendConflictTruncateReload(t *testing.T) {
	db := openDB(t)
	commit(t, db, func(b *pebble.Batch) error { return Bootstrap(b, 1, 0, 0) })
	s := load(t, db)
	if first, _ := s.FirstIndex(); first != 1 {
		t.Fatalf("first index of empty log: got %d, want 1", first)
	}
	commit(t, db, func(b *pebble.Batch) error { return s.Append(b, ents(1, 1, 10)) })
	// A new leader overwrites the tail from 6 with a shorter one.
	commit(t, db, func(b *pebble.Batch) error { return s.Append(b, ents(2, 6, 7)) })
	termOf := func(i uint64) uint64 {
		if i >= 6 {
			return 2
		}
		return 1
	}
	if last, _ := s.LastIndex(); last != 7 {
		t.Fatalf("last index after conflict: got %d, want 7", last)
	}
	checkEntries(t, s, 1, 8, termOf)

	// Reload from Pebble: the replaced entries 8..10 must be gone.
	s2 := load(t, db)
	if last, _ := s2.LastIndex(); last != 7 {
		t.Fatalf("last index after reload: got %d, want 7", last)
	}
	checkEntries(t, s2, 1, 8, termOf)

	commit(t, db, func(b *pebble.Batch) error { return s2.Truncate(b, 5) })
	if _, err := s2.Entries(5, 6, 1<<30); !errors.Is(err, raft.ErrCompacted) {
		t.Fatalf("entries below truncation: got %v, want ErrCompacted", err)
	}
	if term, err := s2.Term(5); err != nil || term != 1 {
		t.Fatalf("term of truncation point: got %d, %v, want 1", term, err)
	}
	if _, err := s2.Term(4); !errors.Is(err, raft.ErrCompacted) {
		t.Fatalf("term below truncation: got %v, want ErrCompacted", err)
	}
	s3 := load(t, db)
	if first, _ := s3.FirstIndex(); first != 6 {
		t.Fatalf("first index after truncation and reload: got %d, want 6", first)
	}
	checkEntries(t, s3, 6, 8, termOf)
	if _, err := s3.Term(9); !errors.Is(err, raft.ErrUnavailable) {
		t.Fatalf("term beyond last: got %v, want ErrUnavailable", err)
	}
}

func TestEntriesRespectsMaxSize(t *testing.T) {
	db := openDB(t)
	commit(t, db, func(b *pebble.Batch) error { return Bootstrap(b, 1, 0, 0) })
	s := load(t, db)
	commit(t, db, func(b *pebble.Batch) error { return s.Append(b, ents(1, 1, 100)) })
	one := uint64(proto.Size(ents(1, 1, 1)[0]))
	for _, st := range []*Storage{s, load(t, db)} { // cached, then from Pebble
		got, err := st.Entries(1, 101, 3*one)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 {
			t.Fatalf("entries within 3 entry sizes: got %d, want 3", len(got))
		}
		got, err = st.Entries(1, 101, 0)
		if err != nil || len(got) != 1 {
			t.Fatalf("entries with max size 0: got %d (%v), want 1", len(got), err)
		}
	}
}

func TestCacheEviction(t *testing.T) {
	c := entryCache{maxBytes: 1000}
	for i := uint64(1); i <= 200; i += 10 {
		c.append(ents(1, i, i+9))
	}
	if c.bytes > 1000 {
		t.Fatalf("cache bytes: got %d, want at most 1000", c.bytes)
	}
	last := c.ents[len(c.ents)-1].GetIndex()
	if last != 200 {
		t.Fatalf("cache keeps the newest entries: last got %d, want 200", last)
	}
	for i, e := range c.ents {
		if e.GetIndex() != c.first()+uint64(i) {
			t.Fatalf("cache not contiguous at %d", i)
		}
	}
	c.append(ents(2, last-5, last-4)) // conflict replaces the tail
	if got := c.ents[len(c.ents)-1].GetIndex(); got != last-4 {
		t.Fatalf("after conflicting append: last got %d, want %d", got, last-4)
	}
	c.dropBefore(last - 5)
	if c.first() != last-5 {
		t.Fatalf("after dropBefore: first got %d, want %d", c.first(), last-5)
	}
}

func TestInstallSnapshotResetsLog(t *testing.T) {
	db := openDB(t)
	commit(t, db, func(b *pebble.Batch) error { return Bootstrap(b, 1, 0, 0) })
	s := load(t, db)
	commit(t, db, func(b *pebble.Batch) error { return s.Append(b, ents(1, 1, 5)) })
	meta := &pb.SnapshotMetadata{Index: proto.Uint64(50), Term: proto.Uint64(3), ConfState: &pb.ConfState{Voters: []uint64{1, 2}}}
	commit(t, db, func(b *pebble.Batch) error { return s.InstallSnapshot(b, meta) })
	for _, st := range []*Storage{s, load(t, db)} {
		first, _ := st.FirstIndex()
		last, _ := st.LastIndex()
		if first != 51 || last != 50 {
			t.Fatalf("log bounds after snapshot: got [%d,%d], want [51,50]", first, last)
		}
		if term, err := st.Term(50); err != nil || term != 3 {
			t.Fatalf("term at snapshot index: got %d, %v, want 3", term, err)
		}
	}
}
