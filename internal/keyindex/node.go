package keyindex

import (
	"bytes"
	"slices"
)

// node is a node of the index's B+tree. A leaf keeps its keys' bytes packed
// in one byte slice and their other fields in an array of slots, neither of
// which holds a pointer: the garbage collector marks a leaf of 32 keys as
// three objects and scans none of their bytes, where a tree with an object
// per entry and one per key had it visit 64 objects and every entry's
// pointer. With millions of keys, that was most of each mark phase.
type node struct {
	gen uint64 // see Index.gen

	// Leaf. ents are in key order; each names its key's bytes in keys.
	// keys only grows while the node is of the index's generation, so that
	// no byte a key handed out (or a copy of the node sharing the array)
	// refers to ever changes; when more than half of it is dead, it is
	// repacked into a new array.
	keys []byte
	ents []slot
	used int // bytes of keys named by ents

	// Inner node: children in key order (at least one). For i > 0, lows[i]
	// is above every key of children[i-1] and not above any of
	// children[i]; lows[0] is nil.
	children []*node
	lows     [][]byte
}

// slot is an entry of a leaf without its key's bytes.
type slot struct {
	off, n                                      uint32 // the key is keys[off:off+n]
	createRevision, modRevision, version, lease int64
}

func (n *node) isLeaf() bool { return n.children == nil }

// size is the number of entries of a leaf or children of an inner node.
func (n *node) size() int {
	if n.isLeaf() {
		return len(n.ents)
	}
	return len(n.children)
}

// key returns the key of entry i, capped so that appending to it copies.
func (n *node) key(i int) []byte {
	s := &n.ents[i]
	return n.keys[s.off : s.off+s.n : s.off+s.n]
}

func (n *node) entry(i int, e *Entry) {
	s := &n.ents[i]
	*e = Entry{
		Key:            n.keys[s.off : s.off+s.n : s.off+s.n],
		CreateRevision: s.createRevision,
		ModRevision:    s.modRevision,
		Version:        s.version,
		Lease:          s.lease,
	}
}

// find returns the position of the first entry of a leaf whose key is not
// below key, and whether that entry is key's.
func (n *node) find(key []byte) (int, bool) {
	lo, hi := 0, len(n.ents)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if bytes.Compare(n.key(m), key) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(n.ents) && bytes.Equal(n.key(lo), key)
}

// childFor returns the position of the child of an inner node whose span
// holds key.
func (n *node) childFor(key []byte) int {
	lo, hi := 1, len(n.children)
	for lo < hi { // the first i > 0 with lows[i] > key, or len
		m := int(uint(lo+hi) >> 1)
		if bytes.Compare(n.lows[m], key) <= 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo - 1
}

// appendEntry appends entry i of src to the leaf n, copying its key.
func (n *node) appendEntry(src *node, i int) {
	s := src.ents[i]
	k := src.key(i)
	s.off = uint32(len(n.keys))
	n.keys = append(n.keys, k...)
	n.used += len(k)
	n.ents = append(n.ents, s)
}

// insert adds e at position i of the leaf n, which must be mutable.
func (n *node) insert(i int, e *Entry) {
	off := len(n.keys)
	if cap(n.keys)-off < len(e.Key) {
		// Grow by a quarter rather than append's doubling: leaves are
		// many, and most take few keys between two copies.
		n.keys = slices.Grow(n.keys, len(e.Key)+off/4)
	}
	n.keys = append(n.keys, e.Key...)
	n.used += len(e.Key)
	n.ents = slices.Insert(n.ents, i, slot{
		off: uint32(off), n: uint32(len(e.Key)),
		createRevision: e.CreateRevision, modRevision: e.ModRevision, version: e.Version, lease: e.Lease,
	})
}

// wasteful reports whether most of a leaf's key bytes are dead.
func (n *node) wasteful() bool { return len(n.keys) > 2*n.used+64 }

// packedLeaf returns a new leaf of generation gen with entries [from, to)
// of the leaves srcs taken in order as one sequence, keys packed anew.
func packedLeaf(gen uint64, srcs []*node, from, to int) *node {
	each := func(fn func(src *node, j int)) {
		i := 0
		for _, src := range srcs {
			for j := range src.ents {
				if i >= from && i < to {
					fn(src, j)
				}
				i++
			}
		}
	}
	size := 0
	each(func(src *node, j int) { size += int(src.ents[j].n) })
	c := &node{gen: gen, keys: make([]byte, 0, size), ents: make([]slot, 0, to-from+1)}
	each(c.appendEntry)
	return c
}

// withRoom returns a copy of s with room for one more element: nodes are
// copied for one change more often than for several, and a copy's size is
// what every write pays after a snapshot.
func withRoom[T any](s []T) []T { return append(make([]T, 0, len(s)+1), s...) }

// mutable returns n if the index may change it in place, else a copy of it
// of the index's generation, which the caller puts in n's place.
func (x *Index) mutable(n *node) *node {
	if n.gen == x.gen {
		return n
	}
	if n.isLeaf() {
		if n.wasteful() {
			return packedLeaf(x.gen, []*node{n}, 0, len(n.ents))
		}
		// The copy shares n's key bytes and the room after them: n is
		// frozen and the index copies it only this once (its parent's copy
		// then refers to the copy), so only the copy appends to the array,
		// past every byte n and the nodes n was copied from refer to.
		return &node{
			gen:  x.gen,
			keys: n.keys,
			ents: withRoom(n.ents),
			used: n.used,
		}
	}
	return &node{
		gen:      x.gen,
		children: withRoom(n.children),
		lows:     withRoom(n.lows),
	}
}

// put stores e under the mutable node n, which is on the tree's rightmost
// path if rightmost is set. If n had to split, it returns the new right half
// and the low bound of its keys, for n's parent to add.
func (x *Index) put(n *node, e Entry, rightmost bool) (*node, []byte) {
	if n.isLeaf() {
		i, found := n.find(e.Key)
		if found {
			s := &n.ents[i]
			s.createRevision, s.modRevision, s.version, s.lease = e.CreateRevision, e.ModRevision, e.Version, e.Lease
			return nil, nil
		}
		n.insert(i, &e)
		x.inserted = true
		if len(n.ents) <= x.max {
			return nil, nil
		}
		return x.splitLeaf(n, rightmost && i == len(n.ents)-1)
	}
	i := n.childFor(e.Key)
	c := x.mutable(n.children[i])
	n.children[i] = c
	right, low := x.put(c, e, rightmost && i == len(n.children)-1)
	if right == nil {
		return nil, nil
	}
	n.children = slices.Insert(n.children, i+1, right)
	n.lows = slices.Insert(n.lows, i+1, low)
	if len(n.children) <= x.max {
		return nil, nil
	}
	return x.splitInner(n, rightmost && i+1 == len(n.children)-1)
}

// splitAt is where a node of size entries splits: in half, or, when the
// entry that overflowed it went last in the last node of its level (keys put
// in ascending order, as when the index is built), leaving the left node
// full. Only there: elsewhere, keys put in descending order into the gap
// after a full node would each go last and make a node of their own.
func splitAt(size int, last bool) int {
	if last {
		return size - 1
	}
	return size / 2
}

func (x *Index) splitLeaf(n *node, last bool) (*node, []byte) {
	k := splitAt(len(n.ents), last)
	right := packedLeaf(x.gen, []*node{n}, k, len(n.ents))
	n.ents = n.ents[:k]
	n.used -= right.used
	// Repack the left half too: half its key bytes are now the right's.
	*n = *packedLeaf(x.gen, []*node{n}, 0, k)
	return right, bytes.Clone(right.key(0))
}

func (x *Index) splitInner(n *node, last bool) (*node, []byte) {
	k := splitAt(len(n.children), last)
	right := &node{
		gen:      x.gen,
		children: withRoom(n.children[k:]),
		lows:     withRoom(n.lows[k:]),
	}
	low := right.lows[0]
	right.lows[0] = nil
	clear(n.children[k:])
	clear(n.lows[k:])
	n.children, n.lows = n.children[:k], n.lows[:k]
	return right, low
}

// delete removes key, which is live, under the mutable node n.
func (x *Index) delete(n *node, key []byte) {
	if n.isLeaf() {
		i, found := n.find(key)
		if !found {
			return
		}
		n.used -= int(n.ents[i].n)
		n.ents = slices.Delete(n.ents, i, i+1)
		if n.wasteful() {
			*n = *packedLeaf(x.gen, []*node{n}, 0, len(n.ents))
		}
		return
	}
	i := n.childFor(key)
	c := x.mutable(n.children[i])
	n.children[i] = c
	x.delete(c, key)
	if c.size() < max(x.max/4, 2) && len(n.children) > 1 {
		x.rebalance(n, i)
	}
}

// rebalance merges the underfull child i of the mutable inner node n with a
// neighbour, or, if both do not fit in one node, shares their entries
// evenly between two new ones.
func (x *Index) rebalance(n *node, i int) {
	a := i
	if a == len(n.children)-1 {
		a--
	}
	b := a + 1
	left, right := n.children[a], n.children[b]
	total := left.size() + right.size()
	if left.isLeaf() {
		srcs := []*node{left, right}
		if total <= x.max {
			n.children[a] = packedLeaf(x.gen, srcs, 0, total)
			n.children = slices.Delete(n.children, b, b+1)
			n.lows = slices.Delete(n.lows, b, b+1)
			return
		}
		h := total / 2
		n.children[a] = packedLeaf(x.gen, srcs, 0, h)
		n.children[b] = packedLeaf(x.gen, srcs, h, total)
		n.lows[b] = bytes.Clone(n.children[b].key(0))
		return
	}
	children := append(append(make([]*node, 0, total), left.children...), right.children...)
	lows := append(append(append(make([][]byte, 0, total), left.lows...), n.lows[b]), right.lows[1:]...)
	if total <= x.max {
		n.children[a] = &node{
			gen:      x.gen,
			children: withRoom(children),
			lows:     withRoom(lows),
		}
		n.children = slices.Delete(n.children, b, b+1)
		n.lows = slices.Delete(n.lows, b, b+1)
		return
	}
	h := total / 2
	n.children[a] = &node{
		gen:      x.gen,
		children: withRoom(children[:h]),
		lows:     withRoom(lows[:h]),
	}
	r := &node{
		gen:      x.gen,
		children: withRoom(children[h:]),
		lows:     withRoom(lows[h:]),
	}
	n.lows[b] = r.lows[0]
	r.lows[0] = nil
	n.children[b] = r
}

func (n *node) ascend(start, end []byte, fn func(*Entry) bool, e *Entry) bool {
	if n.isLeaf() {
		i := 0
		if start != nil {
			i, _ = n.find(start)
		}
		for ; i < len(n.ents); i++ {
			if end != nil && bytes.Compare(n.key(i), end) >= 0 {
				return false
			}
			n.entry(i, e)
			if !fn(e) {
				return false
			}
		}
		return true
	}
	i := 0
	if start != nil {
		i = n.childFor(start)
	}
	for ; i < len(n.children); i++ {
		if i > 0 && end != nil && bytes.Compare(n.lows[i], end) >= 0 {
			return false
		}
		if !n.children[i].ascend(start, end, fn, e) {
			return false
		}
		start = nil // the next children's keys are all above it
	}
	return true
}

func (n *node) descend(start, end []byte, fn func(*Entry) bool, e *Entry) bool {
	if n.isLeaf() {
		i := len(n.ents) - 1
		if end != nil {
			j, _ := n.find(end)
			i = j - 1
		}
		for ; i >= 0; i-- {
			if bytes.Compare(n.key(i), start) < 0 {
				return false
			}
			n.entry(i, e)
			if !fn(e) {
				return false
			}
		}
		return true
	}
	i := len(n.children) - 1
	if end != nil {
		i = n.childFor(end)
	}
	for ; i >= 0; i-- {
		if !n.children[i].descend(start, end, fn, e) {
			return false
		}
		if i > 0 && bytes.Compare(n.lows[i], start) <= 0 {
			return false // the earlier children's keys are all below start
		}
		end = nil // the earlier children's keys are all below it
	}
	return true
}
