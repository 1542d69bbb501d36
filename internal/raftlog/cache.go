package raftlog

import (
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/synod-io/synod/internal/raftwire"
)

// entryCache holds a contiguous suffix of the log, bounded in bytes.
type entryCache struct {
	maxBytes uint64
	ents     []*pb.Entry // contiguous, ascending indexes
	sizes    []uint64
	bytes    uint64
}

func (c *entryCache) first() uint64 {
	if len(c.ents) == 0 {
		return 0
	}
	return c.ents[0].GetIndex()
}

func (c *entryCache) get(i uint64) (*pb.Entry, bool) {
	if len(c.ents) == 0 || i < c.first() || i >= c.first()+uint64(len(c.ents)) {
		return nil, false
	}
	return c.ents[i-c.first()], true
}

// scan returns entries [lo, hi) limited to maxSize bytes (at least one), if
// the cache holds lo.
func (c *entryCache) scan(lo, hi, maxSize uint64) ([]*pb.Entry, bool) {
	if len(c.ents) == 0 || lo < c.first() || hi > c.first()+uint64(len(c.ents)) {
		return nil, false
	}
	start := lo - c.first()
	var out []*pb.Entry
	var size uint64
	for i := start; i < hi-c.first(); i++ {
		size += c.sizes[i]
		if len(out) > 0 && size > maxSize {
			break
		}
		out = append(out, c.ents[i])
	}
	return out, true
}

func (c *entryCache) append(ents []*pb.Entry) {
	if len(ents) == 0 {
		return
	}
	first := ents[0].GetIndex()
	if len(c.ents) > 0 {
		switch end := c.first() + uint64(len(c.ents)); {
		case first < c.first() || first > end:
			// Not contiguous with what we hold: start over.
			c.clear()
		case first < end:
			// Replace a conflicting tail.
			keep := first - c.first()
			for _, s := range c.sizes[keep:] {
				c.bytes -= s
			}
			c.ents = c.ents[:keep]
			c.sizes = c.sizes[:keep]
		}
	}
	for _, e := range ents {
		s := uint64(raftwire.EntrySize(e))
		c.ents = append(c.ents, e)
		c.sizes = append(c.sizes, s)
		c.bytes += s
	}
	c.evict()
}

// evict drops the oldest entries once the cache is over budget, down to three
// quarters of it, so that the copy is amortized over many appends.
func (c *entryCache) evict() {
	if c.bytes <= c.maxBytes {
		return
	}
	n := 0
	for c.bytes > c.maxBytes/4*3 && n < len(c.ents)-1 {
		c.bytes -= c.sizes[n]
		n++
	}
	if n > 0 {
		c.ents = append([]*pb.Entry(nil), c.ents[n:]...)
		c.sizes = append([]uint64(nil), c.sizes[n:]...)
	}
}

func (c *entryCache) dropBefore(i uint64) {
	if len(c.ents) == 0 || i <= c.first() {
		return
	}
	n := min(i-c.first(), uint64(len(c.ents)))
	for _, s := range c.sizes[:n] {
		c.bytes -= s
	}
	c.ents = append([]*pb.Entry(nil), c.ents[n:]...)
	c.sizes = append([]uint64(nil), c.sizes[n:]...)
}

func (c *entryCache) clear() {
	c.ents, c.sizes, c.bytes = nil, nil, 0
}
