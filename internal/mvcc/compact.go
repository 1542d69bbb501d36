package mvcc

import (
	"context"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"github.com/synod-io/synod/internal/keys"
)

// DefaultCompactBatchKeys is the batch size Compact uses when given a
// batchKeys <= 0.
const DefaultCompactBatchKeys = 1000

// Compact physically removes every version that no read at or above rev can
// see. It runs outside the apply loop, in batches of at most batchKeys
// deletions, and stops early when ctx is done.
//
// mu, if not nil, is held from the moment a batch reads the data until it
// is committed: whoever replaces the MVCC span wholesale (a replica
// installing a snapshot) takes the other side of it, so that a batch
// computed on the old data is never applied to the new.
//
// For each user key it keeps the newest version with revision <= rev (unless
// it is a tombstone older than rev) and everything newer. Batches are committed without
// sync: losing them in a crash is harmless as long as compaction is re-run.
func Compact(ctx context.Context, db *pebble.DB, rev int64, batchKeys int, mu sync.Locker) error {
	if batchKeys <= 0 {
		batchKeys = DefaultCompactBatchKeys
	}
	resume := keys.MVCCSpan().Start
	for resume != nil {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("compact at revision %d: %w", rev, err)
		}
		if mu != nil {
			mu.Lock()
		}
		next, err := compactBatch(db, resume, rev, batchKeys)
		if mu != nil {
			mu.Unlock()
		}
		if err != nil {
			return fmt.Errorf("compact at revision %d: %w", rev, err)
		}
		resume = next
	}
	return nil
}

// compactBatch deletes up to limit invisible versions found from the Pebble
// key start on, commits them, and returns where the next batch must resume
// (nil when the keyspace is exhausted). Each batch uses a fresh iterator so
// that a long compaction does not pin old memtables and sstables.
func compactBatch(db *pebble.DB, start []byte, rev int64, limit int) (resume []byte, err error) {
	c, err := openCursor(db, start, keys.MVCCSpan().End)
	if err != nil {
		return nil, err
	}
	defer c.close(&err)
	b := db.NewBatch()
	defer func() {
		if cerr := b.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close batch: %w", cerr)
		}
	}()
	g := &garbage{batch: b, limit: limit}
	for valid := c.it.First(); valid && !g.full(); {
		if err := c.load(); err != nil {
			return nil, err
		}
		found, ok, err := c.seekVisible(rev)
		if err != nil {
			return nil, err
		}
		if !found {
			valid = ok
			continue
		}
		if valid, err = g.collectKey(c, rev); err != nil {
			return nil, err
		}
		if g.full() {
			// Resume at this key: it is re-examined, which is harmless
			// because deleting invisible versions is idempotent.
			resume = keys.MVCCBound(c.userKey)
		}
	}
	if err := c.done(); err != nil {
		return nil, err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return nil, fmt.Errorf("commit batch: %w", err)
	}
	return resume, nil
}

// garbage is the batch of deletions of one compaction step.
type garbage struct {
	batch *pebble.Batch
	limit int
	n     int
}

func (g *garbage) full() bool { return g.n >= g.limit }

func (g *garbage) delete(k []byte) error {
	if err := g.batch.Delete(k, nil); err != nil {
		return fmt.Errorf("delete %q: %w", k, err)
	}
	g.n++
	return nil
}

// collectKey deletes the versions of the loaded user key older than the one at
// the cursor (the newest version <= the compaction revision rev), then that
// one too if it is a tombstone older than rev. A tombstone at rev itself is
// kept: a watch may start at the compaction revision and must see that
// delete. The tombstone goes last so that no prefix of the deletions ever
// uncovers an older live version. It stops early when the batch is full and
// returns whether the iterator is still valid.
func (g *garbage) collectKey(c *cursor, rev int64) (bool, error) {
	rec, err := c.record()
	if err != nil {
		return false, err
	}
	var tombstoneKey []byte
	if rec.tombstone && c.rev < rev {
		tombstoneKey = append([]byte(nil), c.it.Key()...)
	}
	valid := c.it.Next()
	for ; valid && c.sameKey(); valid = c.it.Next() {
		if g.full() {
			return valid, nil
		}
		if err := g.delete(c.it.Key()); err != nil {
			return false, err
		}
	}
	if tombstoneKey != nil && !g.full() {
		if err := g.delete(tombstoneKey); err != nil {
			return false, err
		}
	}
	return valid, nil
}
