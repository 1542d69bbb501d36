package keyindex

import (
	"bytes"

	"github.com/google/btree"
)

// Entry is the newest version of a live key.
type Entry struct {
	Key            []byte
	CreateRevision int64
	ModRevision    int64
	Version        int64
	Lease          int64
}

func less(a, b *Entry) bool { return bytes.Compare(a.Key, b.Key) < 0 }

// degree of the B-tree: nodes of up to 63 entries.
const degree = 32

// Index is the mutable index. It is not safe for concurrent use; readers on
// other goroutines use Snapshots.
type Index struct {
	tree *btree.BTreeG[*Entry]
	rev  int64
	// probe is the search key of Get and Delete, kept here so that each
	// lookup does not allocate one (the tree's less function makes it
	// escape). Snapshots, read from other goroutines, cannot share it.
	probe Entry
}

// New returns an empty index at revision rev.
func New(rev int64) *Index {
	return &Index{tree: btree.NewG(degree, less), rev: rev}
}

// Put makes e the newest version of e.Key. The index keeps e: the caller
// must not change it afterwards.
func (x *Index) Put(e *Entry) { x.tree.ReplaceOrInsert(e) }

// Delete removes key, if live.
func (x *Index) Delete(key []byte) {
	x.probe.Key = key
	x.tree.Delete(&x.probe)
	x.probe.Key = nil
}

// Get returns key's entry if key is live. Entries are never modified once
// put: the caller may keep it.
func (x *Index) Get(key []byte) (*Entry, bool) {
	x.probe.Key = key
	e, ok := x.tree.Get(&x.probe)
	x.probe.Key = nil
	return e, ok
}

// SetRevision records the store revision the index now reflects.
func (x *Index) SetRevision(rev int64) { x.rev = rev }

// Revision is the store revision the index reflects.
func (x *Index) Revision() int64 { return x.rev }

// Snapshot returns a frozen copy of the index, safe to read from any
// goroutine while the index goes on changing.
func (x *Index) Snapshot() *Snapshot {
	return &Snapshot{tree: x.tree.Clone(), rev: x.rev}
}

// Snapshot is a read-only copy of an Index at one revision.
type Snapshot struct {
	tree *btree.BTreeG[*Entry]
	rev  int64
}

// Revision is the store revision the snapshot reflects.
func (s *Snapshot) Revision() int64 { return s.rev }

// Ascend calls fn on the live keys in [start, end) in ascending order until
// fn returns false. A nil end means no upper bound. The entries must not be
// changed.
func (s *Snapshot) Ascend(start, end []byte, fn func(*Entry) bool) { ascend(s.tree, start, end, fn) }

// Descend calls fn on the live keys in [start, end) in descending order
// until fn returns false. A nil end means no upper bound.
func (s *Snapshot) Descend(start, end []byte, fn func(*Entry) bool) { descend(s.tree, start, end, fn) }

// Ascend is Snapshot.Ascend on the index as it is now.
func (x *Index) Ascend(start, end []byte, fn func(*Entry) bool) { ascend(x.tree, start, end, fn) }

// Descend is Snapshot.Descend on the index as it is now.
func (x *Index) Descend(start, end []byte, fn func(*Entry) bool) { descend(x.tree, start, end, fn) }

// Reader is what a read needs of an index: an Index (in apply, where reads
// see the writes made so far) or a Snapshot.
type Reader interface {
	// Revision is the store revision the index reflects.
	Revision() int64
	Ascend(start, end []byte, fn func(*Entry) bool)
	Descend(start, end []byte, fn func(*Entry) bool)
}

func ascend(t *btree.BTreeG[*Entry], start, end []byte, fn func(*Entry) bool) {
	if end == nil {
		t.AscendGreaterOrEqual(&Entry{Key: start}, fn)
		return
	}
	if bytes.Compare(start, end) >= 0 {
		return
	}
	t.AscendRange(&Entry{Key: start}, &Entry{Key: end}, fn)
}

func descend(t *btree.BTreeG[*Entry], start, end []byte, fn func(*Entry) bool) {
	if end != nil && bytes.Compare(start, end) >= 0 {
		return
	}
	visit := func(e *Entry) bool {
		if bytes.Compare(e.Key, start) < 0 {
			return false
		}
		if end != nil && bytes.Compare(e.Key, end) >= 0 {
			return true // the pivot itself: end is exclusive
		}
		return fn(e)
	}
	if end == nil {
		t.Descend(visit)
		return
	}
	t.DescendLessOrEqual(&Entry{Key: end}, visit)
}
