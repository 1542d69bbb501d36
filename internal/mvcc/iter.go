package mvcc

import (
	"bytes"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/synod-io/synod/internal/keys"
)

// cursor walks the versions of user keys with one Pebble iterator. It
// remembers the user key it was last loaded on, so that it can tell whether
// a later position still belongs to that key.
type cursor struct {
	it      *pebble.Iterator
	userKey []byte // decoded user key of the last load
	prefix  []byte // Pebble key prefix shared by the versions of userKey
	rev     int64  // revision of the version at the last load
	scratch []byte // buffer for decoding keys whose user key is not needed
}

// openCursor opens an iterator over the Pebble keys in [lower, upper).
func openCursor(r pebble.Reader, lower, upper []byte) (*cursor, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("open iterator: %w", err)
	}
	return &cursor{it: it}, nil
}

// close closes the iterator, reporting its error into *errp unless an error
// is already there.
func (c *cursor) close(errp *error) {
	if err := c.it.Close(); err != nil && *errp == nil {
		*errp = fmt.Errorf("close iterator: %w", err)
	}
}

// done reports the iterator error that ended a scan, if any.
func (c *cursor) done() error {
	if err := c.it.Error(); err != nil {
		return fmt.Errorf("iterate: %w", err)
	}
	return nil
}

// load decodes the current position, making its user key the current one.
func (c *cursor) load() error {
	k := c.it.Key()
	userKey, rev, err := keys.DecodeMVCCKey(c.userKey[:0], k)
	if err != nil {
		return fmt.Errorf("decode key %q: %w", k, err)
	}
	c.userKey, c.rev = userKey, rev
	c.prefix = append(c.prefix[:0], k[:keys.MVCCKeyPrefixLen(k)]...)
	return nil
}

// sameKey reports whether the current position is a version of the user key
// of the last load. The terminator in the prefix guarantees that no other
// user key's encoding shares the whole prefix.
func (c *cursor) sameKey() bool {
	k := c.it.Key()
	return keys.MVCCKeyPrefixLen(k) == len(c.prefix) && bytes.HasPrefix(k, c.prefix)
}

// currentRev decodes the revision of the current position, which must be a
// version of the loaded user key.
func (c *cursor) currentRev() (int64, error) {
	k := c.it.Key()
	scratch, rev, err := keys.DecodeMVCCKey(c.scratch[:0], k)
	if err != nil {
		return 0, fmt.Errorf("decode key %q: %w", k, err)
	}
	c.scratch = scratch
	return rev, nil
}

// record decodes the value at the current position. Its value aliases the
// iterator's buffer and is valid until the next move.
func (c *cursor) record() (record, error) {
	v, err := c.it.ValueAndErr()
	if err != nil {
		return record{}, fmt.Errorf("read value of %q: %w", c.userKey, err)
	}
	r, err := decodeRecord(v)
	if err != nil {
		return record{}, fmt.Errorf("decode value of %q: %w", c.userKey, err)
	}
	return r, nil
}

// seekVisible moves from a loaded position to the version of the loaded user
// key visible at rev. It reports false when the key has no such version; the
// iterator is then on the next user key or exhausted, and valid tells which.
func (c *cursor) seekVisible(rev int64) (found, valid bool, err error) {
	if c.rev <= rev {
		// The loaded position is the newest version: already visible.
		return true, true, nil
	}
	if !c.it.SeekGE(keys.MVCCKey(c.userKey, rev)) {
		return false, false, nil
	}
	if !c.sameKey() {
		return false, true, nil
	}
	if c.rev, err = c.currentRev(); err != nil {
		return false, false, err
	}
	return true, true, nil
}

// nextKey moves to the first version of the next user key. It always
// seeks, and without allocating: successive forward seeks let Pebble try
// stepping before it descends the levels (TrySeekUsingNext), which measured
// faster than stepping over versions here first, since any step in between
// turns the next seek into a full one.
func (c *cursor) nextKey() bool {
	c.scratch = keys.AppendMVCCPrefixEnd(c.scratch[:0], c.prefix)
	return c.it.SeekGE(c.scratch)
}

// prevKey moves to the oldest version of the previous user key.
func (c *cursor) prevKey() bool {
	return c.it.SeekLT(keys.MVCCBound(c.userKey))
}
