package mvcc

import (
	"bytes"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/synod-io/synod/internal/keys"
)

// RangeOptions shapes the result of Range.
type RangeOptions struct {
	// Limit caps the number of KVs returned; 0 or less means no limit. It
	// never affects Count.
	Limit int64
	// Reverse returns keys in descending order; Limit keeps the largest keys.
	Reverse bool
	// KeysOnly leaves Value empty in the returned KVs.
	KeysOnly bool
	// CountOnly returns no KVs, only Count.
	CountOnly bool
	// Uncounted stops a forward scan once it has Limit KVs, leaving Count
	// at the number returned: for callers that page through a range and
	// need no total (counting to the end of the range on every page made
	// paging through it quadratic).
	Uncounted bool
}

// RangeResult is the answer of Range.
type RangeResult struct {
	// KVs are the live versions, in key order (descending with Reverse).
	KVs []*mvccpb.KeyValue
	// Count is the number of keys live in the whole range at the revision.
	Count int64
}

// Range returns the keys live in [key, end) at revision rev. A nil end means
// no upper bound (every key >= key); an end <= key is an empty range.
func Range(r pebble.Reader, key, end []byte, rev int64, opts RangeOptions) (res RangeResult, err error) {
	if rev <= 0 || (end != nil && bytes.Compare(end, key) <= 0) {
		return RangeResult{}, nil
	}
	c, err := openCursor(r, keys.MVCCBound(key), keys.MVCCEnd(end))
	if err != nil {
		return RangeResult{}, err
	}
	defer c.close(&err)
	s := &rangeScan{rev: rev, opts: opts}
	if opts.Reverse {
		err = s.backward(c)
	} else {
		err = s.forward(c)
	}
	if err != nil {
		return RangeResult{}, err
	}
	return s.res, nil
}

// Live calls fn with every key live at revision rev, in key order, without
// its value, until fn returns an error. It is how an in-memory index of the
// live keys (package keyindex) is built from the store.
func Live(r pebble.Reader, rev int64, fn func(*mvccpb.KeyValue) error) (err error) {
	return LiveIn(r, rev, nil, nil, fn)
}

// LiveIn is Live for the user keys [start, end) (nil end: to the end of
// the keyspace).
func LiveIn(r pebble.Reader, rev int64, start, end []byte, fn func(*mvccpb.KeyValue) error) (err error) {
	if rev <= 0 {
		return nil
	}
	if len(end) == 0 {
		end = nil
	}
	c, err := openCursor(r, keys.MVCCBound(start), keys.MVCCEnd(end))
	if err != nil {
		return err
	}
	defer c.close(&err)
	s := &rangeScan{rev: rev, opts: RangeOptions{KeysOnly: true}, each: fn}
	return s.forward(c)
}

// FillValues reads the values of kvs, each the version of its key at its
// ModRevision, which must exist, be live and match the other fields: kvs
// come from an index of the live keys, and a mismatch means the index and
// the store disagree, which is reported rather than answered.
func FillValues(r pebble.Reader, kvs []*mvccpb.KeyValue) (err error) {
	if len(kvs) == 0 {
		return nil
	}
	c, err := openCursor(r, keys.MVCCBound(nil), keys.MVCCEnd(nil))
	if err != nil {
		return err
	}
	defer c.close(&err)
	var k []byte
	for _, kv := range kvs {
		k = keys.AppendMVCCKey(k[:0], kv.Key, kv.ModRevision)
		if !c.it.SeekGE(k) || !bytes.Equal(c.it.Key(), k) {
			if err := c.done(); err != nil {
				return err
			}
			return fmt.Errorf("version of %q at revision %d is missing: %w", kv.Key, kv.ModRevision, ErrCorrupt)
		}
		c.userKey = kv.Key
		rec, err := c.record()
		if err != nil {
			return err
		}
		if rec.tombstone || rec.createRev != kv.CreateRevision || rec.version != kv.Version || rec.lease != kv.Lease {
			return fmt.Errorf("version of %q at revision %d is not the indexed one: %w", kv.Key, kv.ModRevision, ErrCorrupt)
		}
		kv.Value = append([]byte(nil), rec.value...)
	}
	return nil
}

// rangeScan accumulates the result of one Range call.
type rangeScan struct {
	rev  int64
	opts RangeOptions
	res  RangeResult
	// each, if set, receives every live version instead of res.
	each func(*mvccpb.KeyValue) error
}

func (s *rangeScan) forward(c *cursor) error {
	for valid := c.it.First(); valid; {
		if err := c.load(); err != nil {
			return err
		}
		found, ok, err := c.seekVisible(s.rev)
		if err != nil {
			return err
		}
		if !found {
			// Nothing visible: the iterator already reached the next key.
			valid = ok
			continue
		}
		if err := s.add(c); err != nil {
			return err
		}
		if s.opts.Uncounted && s.opts.Limit > 0 && int64(len(s.res.KVs)) >= s.opts.Limit {
			break
		}
		valid = c.nextKey()
	}
	return c.done()
}

func (s *rangeScan) backward(c *cursor) error {
	// Each step lands on the oldest version of a user key.
	for valid := c.it.Last(); valid; valid = c.prevKey() {
		if err := c.load(); err != nil {
			return err
		}
		if c.rev > s.rev {
			continue // even the oldest version is too new
		}
		if !c.it.SeekGE(keys.MVCCKey(c.userKey, s.rev)) || !c.sameKey() {
			if err := c.done(); err != nil {
				return err
			}
			return fmt.Errorf("version of %q at revision %d vanished from the iterator", c.userKey, c.rev)
		}
		rev, err := c.currentRev()
		if err != nil {
			return err
		}
		c.rev = rev
		if err := s.add(c); err != nil {
			return err
		}
	}
	return c.done()
}

// add accounts for the version visible at the cursor.
func (s *rangeScan) add(c *cursor) error {
	rec, err := c.record()
	if err != nil || rec.tombstone {
		return err
	}
	if s.each != nil {
		return s.each(rec.keyValue(c.userKey, c.rev, true))
	}
	s.res.Count++
	if s.opts.CountOnly || (s.opts.Limit > 0 && int64(len(s.res.KVs)) >= s.opts.Limit) {
		return nil
	}
	s.res.KVs = append(s.res.KVs, rec.keyValue(c.userKey, c.rev, s.opts.KeysOnly))
	return nil
}
