package mvcc

import (
	"bytes"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/synod-io/synod/internal/keys"
)

// Change is one stored version of a key seen as an event.
type Change struct {
	Type mvccpb.Event_EventType
	// KV is the version; for a DELETE only Key and ModRevision are set.
	KV *mvccpb.KeyValue
	// PrevKV is the version the change replaced if it was live; nil if there
	// was none, it was a tombstone, or it has been compacted away.
	PrevKV *mvccpb.KeyValue
	// Sub orders the change among the writes of its revision.
	Sub int32
}

// ChangesSince calls fn for every version, tombstones included, of the keys
// in [key, end) (end nil: every key >= key) whose revision is >= fromRev. The
// calls come in key order and, within a key, newest version first; callers
// that need revision order sort by (KV.ModRevision, Sub). It stops at the
// first error fn returns and returns it.
func ChangesSince(r pebble.Reader, key, end []byte, fromRev int64, fn func(Change) error) (err error) {
	if end != nil && bytes.Compare(end, key) <= 0 {
		return nil
	}
	c, err := openCursor(r, keys.MVCCBound(key), keys.MVCCEnd(end))
	if err != nil {
		return err
	}
	defer c.close(&err)
	for valid := c.it.First(); valid; {
		if err := c.load(); err != nil {
			return err
		}
		if c.rev < fromRev {
			valid = c.nextKey()
			continue
		}
		if valid, err = changesOfKey(c, fromRev, fn); err != nil {
			return err
		}
	}
	return c.done()
}

// changesOfKey reports the versions >= fromRev of the loaded user key, the
// cursor being on its newest version. It returns whether the iterator is
// still valid, positioned on the next user key.
func changesOfKey(c *cursor, fromRev int64, fn func(Change) error) (bool, error) {
	cur, err := c.record()
	if err != nil {
		return false, err
	}
	curRev := c.rev
	cur.value = append([]byte(nil), cur.value...) // survives the move below
	for {
		valid := c.it.Next()
		same := valid && c.sameKey()
		var older record
		var olderRev int64
		if same {
			if olderRev, err = c.currentRev(); err != nil {
				return false, err
			}
			if older, err = c.record(); err != nil {
				return false, err
			}
		}
		ch := change(c.userKey, curRev, cur)
		if same && !older.tombstone {
			ch.PrevKV = older.keyValue(c.userKey, olderRev, false)
		}
		if err := fn(ch); err != nil {
			return false, err
		}
		if !same {
			return valid, nil
		}
		if olderRev < fromRev {
			return c.nextKey(), nil
		}
		cur, curRev = older, olderRev
		cur.value = append([]byte(nil), cur.value...)
	}
}

func change(userKey []byte, rev int64, rec record) Change {
	if rec.tombstone {
		return Change{
			Type: mvccpb.Event_DELETE,
			KV:   &mvccpb.KeyValue{Key: append([]byte(nil), userKey...), ModRevision: rev},
			Sub:  rec.sub,
		}
	}
	return Change{Type: mvccpb.Event_PUT, KV: rec.keyValue(userKey, rev, false), Sub: rec.sub}
}
