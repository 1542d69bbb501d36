package server

import (
	"context"
	"log/slog"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"github.com/synod-io/synod/internal/mvcc"
)

// compactor physically removes old MVCC versions in the background, after a
// compaction has been applied through Raft (which already makes reads below
// the revision fail).
type compactor struct {
	db     *pebble.DB
	logger *slog.Logger
	// installMu is held shared by each compaction batch and exclusively by a
	// replica installing a snapshot.
	installMu *sync.RWMutex
	wake      chan struct{}

	mu struct {
		sync.Mutex
		target  int64         // highest revision requested
		done    int64         // highest revision physically compacted
		changed chan struct{} // closed and replaced when done advances
	}
}

// compactBatchKeys bounds the deletions of one compaction batch.
const compactBatchKeys = 10000

func newCompactor(db *pebble.DB, installMu *sync.RWMutex, logger *slog.Logger) *compactor {
	c := &compactor{db: db, installMu: installMu, logger: logger, wake: make(chan struct{}, 1)}
	c.mu.changed = make(chan struct{})
	return c
}

func (c *compactor) schedule(rev int64) {
	c.mu.Lock()
	if rev > c.mu.target {
		c.mu.target = rev
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *compactor) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		}
		for {
			c.mu.Lock()
			target, done := c.mu.target, c.mu.done
			c.mu.Unlock()
			if target <= done {
				break
			}
			if err := mvcc.Compact(ctx, c.db, target, compactBatchKeys, c.installMu.RLocker()); err != nil {
				if ctx.Err() == nil {
					c.logger.Error("physical compaction failed", "revision", target, "err", err)
				}
				break
			}
			c.logger.Debug("physical compaction done", "revision", target)
			c.mu.Lock()
			c.mu.done = target
			close(c.mu.changed)
			c.mu.changed = make(chan struct{})
			c.mu.Unlock()
		}
	}
}

// wait returns once versions below rev have been physically removed.
func (c *compactor) wait(ctx context.Context, rev int64) error {
	for {
		c.mu.Lock()
		done, changed := c.mu.done, c.mu.changed
		c.mu.Unlock()
		if done >= rev {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
