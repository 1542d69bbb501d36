package mvcc

import (
	"errors"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/synod-io/synod/internal/keys"
)

// ReadWriter reads and writes one Pebble state; an indexed *pebble.Batch is
// one, and its reads see its own earlier writes.
type ReadWriter interface {
	pebble.Reader
	pebble.Writer
}

// Get returns the live version of key visible at rev, or nil when the key
// does not exist at rev (never written, deleted, or rev <= 0).
func Get(r pebble.Reader, key []byte, rev int64) (kv *mvccpb.KeyValue, err error) {
	if rev <= 0 {
		return nil, nil
	}
	c, err := openCursor(r, keys.MVCCBound(key), keys.MVCCKeyUpperBound(key))
	if err != nil {
		return nil, err
	}
	defer c.close(&err)
	if !c.it.SeekGE(keys.MVCCKey(key, rev)) {
		return nil, c.done()
	}
	if err := c.load(); err != nil {
		return nil, err
	}
	rec, err := c.record()
	if err != nil || rec.tombstone {
		return nil, err
	}
	return rec.keyValue(key, c.rev, false), nil
}

// Put writes value as the version of key at revision rev with sub-revision
// sub. prev is the live version it replaces (nil when the key did not exist or
// its newest version is a tombstone); kv is the version written.
func Put(rw ReadWriter, key, value []byte, lease, rev int64, sub int32) (prev, kv *mvccpb.KeyValue, err error) {
	w := NewWriter(rw)
	defer func() {
		if cerr := w.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	return w.Put(key, value, lease, rev, sub)
}

// Writer makes the writes of one batch. Every write first reads the newest
// version of its key; a Writer does those reads with one iterator, moved
// from key to key, instead of opening one per write (iterator construction
// over the memtables and every SSTable level dominated the cost of a put).
// A Writer is not safe for concurrent use; Close it before committing rw.
type Writer struct {
	rw ReadWriter
	c  *cursor // nil until the first read
	// bounds holds the iterator's current bounds: Pebble requires them
	// unchanged until the next SetOptions, so the buffers alternate.
	bounds [2][2][]byte
	cur    int
}

// NewWriter returns a Writer over rw.
func NewWriter(rw ReadWriter) *Writer { return &Writer{rw: rw} }

// Close releases the iterator.
func (w *Writer) Close() error {
	if w.c == nil {
		return nil
	}
	var err error
	w.c.close(&err)
	w.c = nil
	return err
}

// seek positions the Writer's cursor on the versions of key, seeing every
// write made to rw so far.
func (w *Writer) seek(key []byte) (*cursor, error) {
	w.cur = 1 - w.cur
	b := &w.bounds[w.cur]
	versionBounds(b, key)
	opts := &pebble.IterOptions{LowerBound: b[0], UpperBound: b[1]}
	if w.c == nil {
		it, err := w.rw.NewIter(opts)
		if err != nil {
			return nil, fmt.Errorf("open iterator: %w", err)
		}
		w.c = &cursor{it: it}
		return w.c, nil
	}
	// SetOptions also refreshes an indexed batch iterator's view of the
	// batch, so the read sees this Writer's earlier writes.
	w.c.it.SetOptions(opts)
	return w.c, nil
}

// versionBounds sets b to keys.MVCCBound(key) and keys.MVCCKeyUpperBound(key)
// (the bounds of key's versions), reusing b's buffers.
func versionBounds(b *[2][]byte, key []byte) {
	b[0] = keys.AppendMVCCKeyPrefix(b[0][:0], key)
	b[1] = keys.AppendMVCCPrefixEnd(b[1][:0], b[0])
}

// Put is the package's Put, reusing the Writer's iterator.
func (w *Writer) Put(key, value []byte, lease, rev int64, sub int32) (prev, kv *mvccpb.KeyValue, err error) {
	if err := checkWrite(key, rev, sub); err != nil {
		return nil, nil, err
	}
	c, err := w.seek(key)
	if err != nil {
		return nil, nil, err
	}
	prev, err = newestAt(c, key, rev)
	if err != nil {
		return nil, nil, err
	}
	rw := w.rw
	rec := record{sub: sub, createRev: rev, version: 1, lease: lease, value: value}
	if prev != nil {
		rec.createRev, rec.version = prev.CreateRevision, prev.Version+1
	}
	pk, pv, kv := encodeVersion(key, rev, rec)
	if err := rw.Set(pk, pv, nil); err != nil {
		return nil, nil, fmt.Errorf("put %q at revision %d: %w", key, rev, err)
	}
	return prev, kv, nil
}

// PutNew writes value as the first version of a new life of key at
// revision rev, without reading: the caller knows that key is not live (it
// never existed, or its newest version is a tombstone below rev), as an
// index of the live keys does. The version written is returned; there is no
// previous one.
func PutNew(w pebble.Writer, key, value []byte, lease, rev int64, sub int32) (*mvccpb.KeyValue, error) {
	return PutKnown(w, key, value, lease, rev, sub, rev, 1)
}

// PutKnown writes value as the version of key at revision rev, with the
// create revision and version the caller knows without reading (from an
// index of the live keys: the previous version's create revision and its
// version plus one, or rev and 1 for a key that is not live). The version
// written is returned.
func PutKnown(w pebble.Writer, key, value []byte, lease, rev int64, sub int32, createRev, version int64) (*mvccpb.KeyValue, error) {
	if err := checkWrite(key, rev, sub); err != nil {
		return nil, err
	}
	pk, pv, kv := encodeVersion(key, rev, record{sub: sub, createRev: createRev, version: version, lease: lease, value: value})
	if err := w.Set(pk, pv, nil); err != nil {
		return nil, fmt.Errorf("put %q at revision %d: %w", key, rev, err)
	}
	return kv, nil
}

// Delete writes a tombstone for key at revision rev with sub-revision sub if
// the key is live, and returns the live version it hid. It writes nothing and
// returns nil when the key does not exist.
func Delete(rw ReadWriter, key []byte, rev int64, sub int32) (prev *mvccpb.KeyValue, err error) {
	if err := checkWrite(key, rev, sub); err != nil {
		return nil, err
	}
	prev, err = newest(rw, key, rev)
	if err != nil || prev == nil {
		return nil, err
	}
	if err := writeTombstone(rw, key, rev, sub); err != nil {
		return nil, err
	}
	return prev, nil
}

// DeleteRange deletes every key live in [key, end) (end nil: every key >=
// key) at revision rev. The i-th deleted key, in key order, gets
// sub-revision sub+i. It returns the deleted versions in key order.
func DeleteRange(rw ReadWriter, key, end []byte, rev int64, sub int32) ([]*mvccpb.KeyValue, error) {
	if err := checkRevision(key, rev, sub); err != nil {
		return nil, err
	}
	res, err := Range(rw, key, end, math.MaxInt64, RangeOptions{})
	if err != nil {
		return nil, err
	}
	if int64(sub)+int64(len(res.KVs)) > math.MaxInt32+1 {
		return nil, fmt.Errorf("delete %d keys from sub-revision %d: too many writes in one revision",
			len(res.KVs), sub)
	}
	for i, kv := range res.KVs {
		if kv.ModRevision > rev {
			return nil, fmt.Errorf("delete %q at revision %d: %w", kv.Key, rev, errStaleWrite(kv.ModRevision))
		}
		if err := writeTombstone(rw, kv.Key, rev, sub+int32(i)); err != nil {
			return nil, err
		}
	}
	return res.KVs, nil
}

func writeTombstone(w pebble.Writer, key []byte, rev int64, sub int32) error {
	rec := record{tombstone: true, sub: sub}
	if err := w.Set(keys.MVCCKey(key, rev), appendRecord(nil, rec), nil); err != nil {
		return fmt.Errorf("delete %q at revision %d: %w", key, rev, err)
	}
	return nil
}

func checkWrite(key []byte, rev int64, sub int32) error {
	if len(key) == 0 {
		return errors.New("write of an empty key")
	}
	return checkRevision(key, rev, sub)
}

func checkRevision(key []byte, rev int64, sub int32) error {
	switch {
	case rev <= 0:
		return fmt.Errorf("write of %q at invalid revision %d", key, rev)
	case sub < 0:
		return fmt.Errorf("write of %q at invalid sub-revision %d", key, sub)
	}
	return nil
}

func errStaleWrite(newest int64) error {
	return fmt.Errorf("newest version is at revision %d: revisions must increase", newest)
}

// newest returns the newest version of key if it is live, and an error if it
// was written after rev.
func newest(r pebble.Reader, key []byte, rev int64) (kv *mvccpb.KeyValue, err error) {
	c, err := openCursor(r, keys.MVCCBound(key), keys.MVCCKeyUpperBound(key))
	if err != nil {
		return nil, err
	}
	defer c.close(&err)
	return newestAt(c, key, rev)
}

// newestAt is newest on a cursor bounded to the versions of key.
func newestAt(c *cursor, key []byte, rev int64) (*mvccpb.KeyValue, error) {
	if !c.it.First() {
		return nil, c.done()
	}
	if err := c.load(); err != nil {
		return nil, err
	}
	if c.rev > rev {
		return nil, fmt.Errorf("write %q at revision %d: %w", key, rev, errStaleWrite(c.rev))
	}
	rec, err := c.record()
	if err != nil || rec.tombstone {
		return nil, err
	}
	return rec.keyValue(key, c.rev, false), nil
}
