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
}

// Exists implements kv.Leases.
func (t Table) Exists(id int64) (bool, error) {
	_, ok, err := Get(t.RW, id)
	return ok, err
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
	return t.RW.Set(keys.LeaseKey(r.ID), r.encode(), nil)
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
