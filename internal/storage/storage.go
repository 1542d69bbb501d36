package storage

import (
	"bytes"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/synod-io/synod/internal/keys"
)

// Options configures Open.
type Options struct {
	// Dir is the directory of the Pebble instance. It is created if missing.
	Dir string
	// FS is the filesystem to use; nil means the operating system's. Tests
	// pass vfs.NewStrictMem() to simulate crashes that lose unsynced writes.
	FS vfs.FS
	// CacheBytes is the size of the block cache (default 64 MiB).
	CacheBytes int64
	// Logger receives Pebble's messages; nil discards them.
	Logger *slog.Logger
	// EventListener, if set, also receives Pebble's events (the server
	// follows flushes and compactions to keep its size estimate current).
	// Its functions run on Pebble's goroutines and must not block.
	EventListener *pebble.EventListener
}

// The memtables: their size, and how many may exist before writes stall
// (Pebble's default).
const (
	memTableSize                = 32 << 20
	memTableStopWritesThreshold = 2
)

// Open opens (or creates) the Pebble instance of a node.
func Open(o Options) (*pebble.DB, error) {
	fs := o.FS
	if fs == nil {
		fs = vfs.Default
	}
	cacheBytes := o.CacheBytes
	if cacheBytes <= 0 {
		cacheBytes = 64 << 20
	}
	if err := fs.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", o.Dir, err)
	}
	// Pebble charges every memtable, the mutable one and those waiting to be
	// flushed, to the block cache (Cache.Reserve). The cache is made larger
	// by the most memtables can hold, so that blocks always have CacheBytes:
	// without this, two 32 MiB memtables left a 64 MiB cache no room at all
	// and every read went to the file system.
	cache := pebble.NewCache(cacheBytes + memTableStopWritesThreshold*memTableSize)
	defer cache.Unref()
	db, err := pebble.Open(o.Dir, options(o, fs, cache))
	if err != nil {
		return nil, fmt.Errorf("open pebble at %s: %w", o.Dir, err)
	}
	return db, nil
}

// options are the Pebble options of a node's instance.
func options(o Options, fs vfs.FS, cache *pebble.Cache) *pebble.Options {
	po := &pebble.Options{
		FS:                          fs,
		Cache:                       cache,
		FormatMajorVersion:          pebble.FormatNewest,
		MemTableSize:                memTableSize,
		MemTableStopWritesThreshold: memTableStopWritesThreshold,
		Logger:                      pebbleLogger{o.Logger},
		EventListener:               listeners(stallListener(o.Logger), o.EventListener),
	}
	// Values of separatedValueSize bytes and more are written by a flush into
	// blob files, and compactions move references to them instead of the
	// values: each byte of a large value is written to the disk about once
	// after the write-ahead log, not once per level it passes. Blob files
	// whose values are 20% unreferenced (overwritten, deleted, removed Raft
	// log entries) are rewritten once five minutes old.
	po.Experimental.ValueSeparationPolicy = func() pebble.ValueSeparationPolicy {
		return pebble.ValueSeparationPolicy{
			Enabled:               true,
			MinimumSize:           separatedValueSize,
			MaxBlobReferenceDepth: 10,
			RewriteMinimumAge:     5 * time.Minute,
			TargetGarbageRatio:    0.2,
		}
	}
	po.Experimental.SpanPolicyFunc = spanPolicy
	return po
}

// spanPolicy keeps the node-local keys, the Raft logs above all, apart from
// the replicated state: a flush or compaction ends its output table where
// they end, so that no table holds both log entries (written and deleted
// within seconds) and data, and their values stay inline, so that an entry
// flushed before its truncation leaves no blob file behind, and the space
// estimate of the replicated spans (EstimateDiskUsage, which scales a
// table's blob references by the share of its blocks in the span) counts
// no log entries.
func spanPolicy(start []byte) (pebble.SpanPolicy, []byte, error) {
	local := keys.NodeLocalSpan()
	if bytes.Compare(start, local.End) < 0 {
		return pebble.SpanPolicy{ValueStoragePolicy: pebble.ValueStorageLowReadLatency}, local.End, nil
	}
	return pebble.SpanPolicy{}, nil, nil
}

// separatedValueSize is the smallest value kept apart from its key: the
// 256-byte values of etcd's usual workloads stay in the sstables, where a
// read finds them in the same block as the key.
const separatedValueSize = 1024

// listeners combines the node's own listener with the caller's.
func listeners(a, b *pebble.EventListener) *pebble.EventListener {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	l := pebble.TeeEventListener(*a, *b)
	return &l
}

// stallListener logs Pebble's write stalls: while one lasts, every write of
// the node waits (Raft appends, applies, so every proposal), until flushes or
// compactions catch up. An operator seeing slow writes should see why.
func stallListener(l *slog.Logger) *pebble.EventListener {
	if l == nil {
		return nil
	}
	var began atomic.Int64 // unix nanoseconds
	return &pebble.EventListener{
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			began.Store(time.Now().UnixNano())
			l.Warn("storage: writes stalled", "reason", info.Reason)
		},
		WriteStallEnd: func() {
			l.Warn("storage: writes resumed", "stalled", time.Since(time.Unix(0, began.Load())))
		},
	}
}

// pebbleLogger adapts slog to Pebble's printf-style logger.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l != nil {
		p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	if p.l != nil {
		p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

// Fatalf is called by Pebble on unrecoverable corruption. Continuing would risk
// serving or replicating bad data, so the process stops, as Pebble expects.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if p.l != nil {
		p.l.Error(msg, "component", "pebble")
	}
	panic("pebble: " + msg)
}
