package lease

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/synod-io/synod/internal/keys"
)

// Record is a lease as replicated.
type Record struct {
	ID int64
	// TTL is the granted time to live, in seconds.
	TTL int64
	// RemainingMs is the remaining TTL last checkpointed, in milliseconds;
	// 0 means none: a new leader gives the lease its full TTL.
	RemainingMs int64
}

func (r Record) encode() []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(r.TTL))
	if r.RemainingMs != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(r.RemainingMs))
	}
	return b
}

func decodeRecord(id int64, data []byte) (Record, error) {
	r := Record{ID: id}
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 || typ != protowire.VarintType {
			return r, fmt.Errorf("decode lease %x: corrupt record", id)
		}
		data = data[n:]
		v, n := protowire.ConsumeVarint(data)
		if n < 0 {
			return r, fmt.Errorf("decode lease %x: corrupt record", id)
		}
		data = data[n:]
		switch num {
		case 1:
			r.TTL = int64(v)
		case 2:
			r.RemainingMs = int64(v)
		}
	}
	return r, nil
}

// ReadWriter is what apply hands the table: an indexed batch.
type ReadWriter interface {
	pebble.Reader
	pebble.Writer
}

// Table changes the replicated lease table inside an apply batch. It
// implements kv.Leases.
type Table struct {
	RW ReadWriter
	// TTLs, if set, holds every lease of the table as RW has it: the
	// table's lookups read it instead of storage, and its writes keep it
	// current. nil: lookups read RW.
	TTLs *TTLs
}

// TTLs holds the ID and TTL of every lease of a replicated table in memory,
// for apply's lookups (a put naming a lease, a revocation, a checkpoint):
// a Pebble Get costs tens of microseconds once the lease records have left
// the memtable, and an expiry storm checkpoints every unrenewed lease each
// second before it revokes them. It costs a map entry per lease. It is not
// safe for concurrent use.
type TTLs struct {
	m map[int64]int64 // lease ID -> TTL in seconds
}

// LoadTTLs reads the leases of the table in r.
func LoadTTLs(r pebble.Reader) (*TTLs, error) {
	recs, err := List(r)
	if err != nil {
		return nil, fmt.Errorf("load lease TTLs: %w", err)
	}
	t := &TTLs{m: make(map[int64]int64, len(recs))}
	for _, rec := range recs {
		t.m[rec.ID] = rec.TTL
	}
	return t, nil
}

// NoTTLs returns TTLs that hold no lease (a data range that does not keep
// the lease table).
func NoTTLs() *TTLs { return &TTLs{m: map[int64]int64{}} }

// Len returns the number of leases.
func (t *TTLs) Len() int { return len(t.m) }

// Equal reports whether t holds exactly the leases of recs (tests).
func (t *TTLs) Equal(recs []Record) bool {
	if len(recs) != len(t.m) {
		return false
	}
	for _, r := range recs {
		if ttl, ok := t.m[r.ID]; !ok || ttl != r.TTL {
			return false
		}
	}
	return true
}

// ttl returns a lease's TTL in seconds, and whether it exists.
func (t Table) ttl(id int64) (int64, bool, error) {
	if t.TTLs != nil {
		ttl, ok := t.TTLs.m[id]
		return ttl, ok, nil
	}
	rec, ok, err := Get(t.RW, id)
	return rec.TTL, ok, err
}

// Exists implements kv.Leases.
func (t Table) Exists(id int64) (bool, error) {
	_, ok, err := t.ttl(id)
	return ok, err
}

// Checkpoint records a lease's remaining TTL (0: none), and reports whether
// the lease exists; if it does not, it writes nothing.
func (t Table) Checkpoint(id, remainingMs int64) (bool, error) {
	ttl, ok, err := t.ttl(id)
	if err != nil || !ok {
		return false, err
	}
	return true, t.Put(Record{ID: id, TTL: ttl, RemainingMs: remainingMs})
}

// Attach implements kv.Leases.
func (t Table) Attach(id int64, key []byte) error {
	return t.RW.Set(keys.LeaseAttachmentKey(id, key), nil, nil)
}

// Detach implements kv.Leases.
func (t Table) Detach(id int64, key []byte) error {
	return t.RW.Delete(keys.LeaseAttachmentKey(id, key), nil)
}

// Put writes a lease record.
func (t Table) Put(r Record) error {
	if err := t.RW.Set(keys.LeaseKey(r.ID), r.encode(), nil); err != nil {
		return err
	}
	if t.TTLs != nil {
		t.TTLs.m[r.ID] = r.TTL
	}
	return nil
}

// Delete removes a lease record and its attachment index, whose keys the
// caller read (AttachedKeys) in the same batch. It writes point deletions
// only: a range deletion per revoked lease piles up in Pebble's memtable,
// which re-fragments every range tombstone it holds at the first read after
// a new one, so that each lookup of an expiry storm cost more than the last.
func (t Table) Delete(id int64, attached [][]byte) error {
	if err := t.RW.Delete(keys.LeaseKey(id), nil); err != nil {
		return err
	}
	if t.TTLs != nil {
		delete(t.TTLs.m, id)
	}
	for _, k := range attached {
		if err := t.Detach(id, k); err != nil {
			return err
		}
	}
	return nil
}

// Get reads one lease record.
func Get(r pebble.Reader, id int64) (Record, bool, error) {
	v, closer, err := r.Get(keys.LeaseKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("read lease %x: %w", id, err)
	}
	defer closer.Close()
	rec, err := decodeRecord(id, v)
	return rec, err == nil, err
}

// List reads every lease record, ordered by ID.
func List(r pebble.Reader) ([]Record, error) {
	span := keys.LeaseSpan()
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: span.Start, UpperBound: span.End})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []Record
	for valid := it.First(); valid; valid = it.Next() {
		id, err := keys.LeaseIDFromKey(it.Key())
		if err != nil {
			return nil, err
		}
		rec, err := decodeRecord(id, it.Value())
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, it.Error()
}

// AttachedKeys lists the keys attached to a lease, in key order.
func AttachedKeys(r pebble.Reader, id int64) ([][]byte, error) {
	p := keys.LeaseAttachmentPrefix(id)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: keys.PrefixEnd(p)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out [][]byte
	for valid := it.First(); valid; valid = it.Next() {
		out = append(out, bytes.Clone(it.Key()[len(p):]))
	}
	return out, it.Error()
}
