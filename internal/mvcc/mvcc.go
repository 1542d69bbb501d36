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
	if err := checkWrite(key, rev, sub); err != nil {
		return nil, nil, err
	}
	prev, err = newest(rw, key, rev)
	if err != nil {
		return nil, nil, err
	}
	rec := record{sub: sub, createRev: rev, version: 1, lease: lease, value: value}
	if prev != nil {
		rec.createRev, rec.version = prev.CreateRevision, prev.Version+1
	}
	if err := rw.Set(keys.MVCCKey(key, rev), appendRecord(nil, rec), nil); err != nil {
		return nil, nil, fmt.Errorf("put %q at revision %d: %w", key, rev, err)
	}
	return prev, rec.keyValue(key, rev, false), nil
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
