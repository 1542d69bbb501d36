package coord

import (
	"context"

	"github.com/synod-io/synod/internal/watch"
)

// hubWatch is an in-process watcher of the node's watch hub: the hub queues
// its events and notifies it, and next hands them over, so it shares the
// hub's guarantees (every event once, in revision order, history then live,
// whole revisions at a time).
type hubWatch struct {
	hub   *watch.Hub
	w     *watch.Watcher
	ready chan struct{}
}

// watch starts a watcher; close must be called when done. Watchers that
// share a ready channel (of capacity 1) can be waited on together.
func (s *Services) watch(opts watch.Options, ready chan struct{}) *hubWatch {
	if ready == nil {
		ready = make(chan struct{}, 1)
	}
	hw := &hubWatch{hub: s.b.Hub(), ready: ready}
	hw.w = hw.hub.Watch(opts, hw)
	return hw
}

// Notify implements watch.Sink.
func (hw *hubWatch) Notify(*watch.Watcher) {
	select {
	case hw.ready <- struct{}{}:
	default:
	}
}

// next waits for the watcher's next response. A response with
// CompactRevision set means the history asked for is compacted and the
// watcher is done.
func (hw *hubWatch) next(ctx context.Context) (watch.Response, error) {
	for {
		if resp, ok := hw.hub.Take(hw.w); ok {
			return resp, nil
		}
		select {
		case <-ctx.Done():
			return watch.Response{}, ctx.Err()
		case <-hw.ready:
		}
	}
}

// poll returns the watcher's next response if it has one.
func (hw *hubWatch) poll() (watch.Response, bool) { return hw.hub.Take(hw.w) }

func (hw *hubWatch) close() { hw.hub.Cancel(hw.w) }
