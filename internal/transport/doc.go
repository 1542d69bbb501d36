// Package transport carries Raft traffic between nodes over gRPC.
//
// Messages are batched per destination node, not per range: each node keeps
// one long-lived client stream to every peer, and one frame carries the
// messages of every range queued for that peer since the last frame, so that
// thousands of ranges share a few streams. Queues are bounded; when a queue is
// full or a stream breaks, messages are dropped and the replica is told the
// peer is unreachable (Raft retransmits what matters).
//
// Snapshots travel on their own client stream: a header frame with the Raft
// MsgSnap, then chunks of the range's key/value pairs read from a Pebble
// snapshot, then a final frame; the receiver stages the data and only then
// hands the MsgSnap to its replica.
//
// The service is described by hand (grpc.ServiceDesc) with a small codec over
// protobuf wire format, since its messages are internal to Synod. Every frame
// carries the cluster ID; frames from another cluster are refused. Who may
// connect is decided before any frame, by the transport credentials the
// server gives (peer TLS, or internal/peerauth's handshake): Config.DialOptions
// carries them, and a connection without them is refused.
//
// An optional Interceptor (Config.Interceptor) sees every outgoing message
// and snapshot first; tests use it to partition, drop, delay, duplicate and
// reorder traffic. It is nil in production.
package transport
