package mvcc

import (
	"bytes"
	"math"

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
func ChangesSince(r pebble.Reader, key, end []byte, fromRev int64, fn func(Change) error) error {
	return ChangesBetween(r, key, end, fromRev, func() int64 { return math.MaxInt64 }, fn)
}

// ChangesBetween is ChangesSince for the versions whose revision is also at
// most toRev(), which it asks before each version, so that fn may lower the
// bound as it goes (a caller that collects the lowest revisions up to a
// budget). Versions above the bound are stepped over without copying their
// values.
func ChangesBetween(r pebble.Reader, key, end []byte, fromRev int64, toRev func() int64, fn func(Change) error) (err error) {
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
		if valid, err = changesOfKey(c, fromRev, toRev, fn); err != nil {
			return err
		}
	}
	return c.done()
}

// changesOfKey reports the versions in [fromRev, toRev()] of the loaded user
// key, the cursor being on its newest version. It returns whether the
// iterator is still valid, positioned on the next user key.
func changesOfKey(c *cursor, fromRev int64, toRev func() int64, fn func(Change) error) (bool, error) {
	curRev := c.rev
	// cur is the version at curRev when it is reported (its value copied,
	// since the iterator moves on to read its previous version).
	var cur record
	want := curRev <= toRev()
	if want {
		rec, err := c.record()
		if err != nil {
			return false, err
		}
		cur = rec
		cur.value = append([]byte(nil), cur.value...)
	}
	for {
		valid := c.it.Next()
		same := valid && c.sameKey()
		var older record
		var olderRev int64
		var err error
		if same {
			if olderRev, err = c.currentRev(); err != nil {
				return false, err
			}
		}
		olderInRange := same && olderRev >= fromRev
		if same && (want || olderInRange) {
			if older, err = c.record(); err != nil {
				return false, err
			}
		}
		var olderValue []byte // a copy of older's value, once made
		if want {
			ch := change(c.userKey, curRev, cur)
			if same && !older.tombstone {
				ch.PrevKV = older.keyValue(c.userKey, olderRev, false)
				olderValue = ch.PrevKV.Value
			}
			if err := fn(ch); err != nil {
				return false, err
			}
		}
		if !same {
			return valid, nil
		}
		if !olderInRange {
			return c.nextKey(), nil
		}
		// Asked after fn, which may have lowered the bound.
		cur, curRev, want = older, olderRev, olderRev <= toRev()
		if want {
			if olderValue == nil {
				olderValue = append([]byte(nil), older.value...)
			}
			// Shared with the previous change's PrevKV: both are read-only.
			cur.value = olderValue
		}
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
