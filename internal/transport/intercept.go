package transport

import (
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/synod-io/synod/internal/keys"
)

// Interceptor sees every outgoing Raft message and snapshot before the
// transport sends it, so that tests can inject network faults (partitions,
// loss, delay, duplication, reordering) into an otherwise real cluster.
// Production nodes leave Config.Interceptor nil, which costs one nil check per
// message.
//
// Faults are injected at the sender: a node's interceptor decides what leaves
// it, so a one-way partition from a to b is a's interceptor dropping messages
// to b. Messages an interceptor drops are lost silently, as on a real network
// (the replica is not told the peer is unreachable).
type Interceptor interface {
	// Message decides the fate of one Raft message of a range, addressed to
	// m.To. It calls deliver zero times (the message is lost), once, or more
	// (duplicated), now or later from another goroutine (delayed or
	// reordered). deliver queues the message for the peer as Send would; it
	// is safe to call at any time, and does nothing once the transport is
	// closed. Message must not block.
	Message(rangeID keys.RangeID, m *pb.Message, deliver func())
	// Snapshot reports whether a snapshot of a range may be streamed to peer
	// to; false fails the send as if the peer were unreachable.
	Snapshot(rangeID keys.RangeID, to uint64) bool
}

// intercept hands msgs to the interceptor, one by one.
func (t *Transport) intercept(rangeID keys.RangeID, msgs []*pb.Message) {
	for _, m := range msgs {
		t.cfg.Interceptor.Message(rangeID, m, func() { t.deliverOne(rangeID, m) })
	}
}

// deliverOne queues one message that the interceptor let through.
func (t *Transport) deliverOne(rangeID keys.RangeID, m *pb.Message) {
	t.mu.Lock()
	if t.mu.closed {
		t.mu.Unlock()
		return
	}
	p, ok := t.peerLocked(m.GetTo())
	queued := ok && p.enqueue(outMsg{rangeID: rangeID, msg: m})
	t.mu.Unlock()
	if !queued {
		t.cfg.Handler.ReportUnreachable(rangeID, m.GetTo())
	}
}
