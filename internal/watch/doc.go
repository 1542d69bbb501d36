// Package watch delivers a range's changes to etcd watchers: every event of
// the watched key range exactly once, in revision order, with no gap between
// history and live events.
//
// A Hub receives the events of each applied batch (Publish, called by the
// node right after the batch is committed) and fans them out to its synced
// watchers, each of which has a bounded buffer of pending events that its
// stream drains. Writers never wait for watchers: when a watcher's events do
// not fit, the watcher becomes unsynced and is left behind. Unsynced watchers,
// and new watchers that start in the past, are caught up by the hub's own
// goroutine from MVCC history (the idea of etcd's unsynced watcher group),
// a window of revisions at a time and only as fast as their stream drains;
// once a watcher has caught up with the published revision, possibly with the
// help of a ring of recent events, it becomes synced again.
//
// The seam between history and live events is handled by one rule: every
// watcher remembers the first revision it has not been given (next), and
// nothing below it is ever queued again. A catch-up that read a view newer
// than the published revision simply makes the hub skip those revisions for
// that watcher when they are published.
//
// Memory is bounded: per watcher by its pending buffer, per stream (the
// watchers of one Sink) and per hub by byte budgets that count the pending
// events and the responses a stream's sender has taken and not yet released,
// and by the ring. A watcher whose events do not fit drops what it had
// queued and is left behind; the watchers of a stream are caught up only
// after its sender has shown it moves, so a client that stops reading makes
// the hub hold little and read no history for it.
//
// A watcher that asks for history below the compaction revision is told the
// compaction revision and cancelled, as etcd does.
package watch
