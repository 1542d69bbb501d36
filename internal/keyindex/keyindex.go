package keyindex

import "bytes"

// Entry is the newest version of a live key.
type Entry struct {
	Key            []byte
	CreateRevision int64
	ModRevision    int64
	Version        int64
	Lease          int64
}

// nodeSize is the most entries of a leaf and children of an inner node. A
// write copies the nodes on its path after each snapshot (one per apply
// batch), so smaller nodes copy less; 64 made BenchmarkApply allocate 11%
// more per batch than 32.
const nodeSize = 32

// Index is the mutable index. It is not safe for concurrent use; readers on
// other goroutines use Snapshots.
type Index struct {
	root *node
	rev  int64
	// gen is the generation of the nodes this index may change in place:
	// Snapshot starts a new one, and a node of an older generation, which
	// a snapshot may share, is copied before it changes.
	gen uint64
	// max is the node size (nodeSize; tests make it small for deep trees).
	max int
	// n is the number of live keys; inserted is set by a put that added
	// a key.
	n        int
	inserted bool
}

// New returns an empty index at revision rev.
func New(rev int64) *Index { return newSized(rev, nodeSize) }

func newSized(rev int64, max int) *Index {
	return &Index{root: &node{gen: 1}, rev: rev, gen: 1, max: max}
}

// Put makes e the newest version of e.Key. The index copies the key.
func (x *Index) Put(e Entry) {
	x.root = x.mutable(x.root)
	right, low := x.put(x.root, e, true)
	if right != nil {
		x.root = &node{gen: x.gen, children: []*node{x.root, right}, lows: [][]byte{nil, low}}
	}
	if x.inserted {
		x.n++
		x.inserted = false
	}
}

// Delete removes key, if live.
func (x *Index) Delete(key []byte) {
	if _, ok := x.Get(key); !ok {
		return // copy nothing
	}
	x.root = x.mutable(x.root)
	x.delete(x.root, key)
	x.n--
	if !x.root.isLeaf() && len(x.root.children) == 1 {
		x.root = x.root.children[0]
	}
}

// Get returns key's entry if key is live. The entry's Key is the index's
// copy, which never changes: the caller may keep it.
func (x *Index) Get(key []byte) (Entry, bool) { return get(x.root, key) }

// SetRevision records the store revision the index now reflects.
func (x *Index) SetRevision(rev int64) { x.rev = rev }

// Revision is the store revision the index reflects.
func (x *Index) Revision() int64 { return x.rev }

// Snapshot returns a frozen copy of the index, safe to read from any
// goroutine while the index goes on changing. It takes O(1): the index
// copies each node it shares with the snapshot before changing it.
func (x *Index) Snapshot() *Snapshot {
	s := &Snapshot{root: x.root, rev: x.rev, n: x.n}
	x.gen++
	return s
}

// Snapshot is a read-only copy of an Index at one revision.
type Snapshot struct {
	root *node
	rev  int64
	n    int
}

// Len returns the number of live keys in the snapshot.
func (s *Snapshot) Len() int { return s.n }

// Len returns the number of live keys.
func (x *Index) Len() int { return x.n }

// Revision is the store revision the snapshot reflects.
func (s *Snapshot) Revision() int64 { return s.rev }

// Get returns key's entry if key is live in the snapshot.
func (s *Snapshot) Get(key []byte) (Entry, bool) { return get(s.root, key) }

// Ascend calls fn on the live keys in [start, end) in ascending order until
// fn returns false. A nil end means no upper bound. The Entry passed to fn
// is reused between calls: fn copies what it keeps (a Key's bytes never
// change, so keeping the slice itself is fine).
func (s *Snapshot) Ascend(start, end []byte, fn func(*Entry) bool) { ascend(s.root, start, end, fn) }

// Descend calls fn on the live keys in [start, end) in descending order
// until fn returns false. A nil end means no upper bound. fn's Entry is
// reused, as in Ascend.
func (s *Snapshot) Descend(start, end []byte, fn func(*Entry) bool) {
	descend(s.root, start, end, fn)
}

// Ascend is Snapshot.Ascend on the index as it is now.
func (x *Index) Ascend(start, end []byte, fn func(*Entry) bool) { ascend(x.root, start, end, fn) }

// Descend is Snapshot.Descend on the index as it is now.
func (x *Index) Descend(start, end []byte, fn func(*Entry) bool) { descend(x.root, start, end, fn) }

// Reader is what a read needs of an index: an Index (in apply, where reads
// see the writes made so far) or a Snapshot.
type Reader interface {
	// Revision is the store revision the index reflects.
	Revision() int64
	Ascend(start, end []byte, fn func(*Entry) bool)
	Descend(start, end []byte, fn func(*Entry) bool)
}

func get(n *node, key []byte) (Entry, bool) {
	for !n.isLeaf() {
		n = n.children[n.childFor(key)]
	}
	i, ok := n.find(key)
	if !ok {
		return Entry{}, false
	}
	var e Entry
	n.entry(i, &e)
	return e, true
}

func ascend(root *node, start, end []byte, fn func(*Entry) bool) {
	if end != nil && bytes.Compare(start, end) >= 0 {
		return
	}
	var e Entry
	root.ascend(start, end, fn, &e)
}

func descend(root *node, start, end []byte, fn func(*Entry) bool) {
	if end != nil && bytes.Compare(start, end) >= 0 {
		return
	}
	var e Entry
	root.descend(start, end, fn, &e)
}
