// Package queuewire holds the job queues' internal messages: the payloads
// of their Raft commands (batches of operations, the leader's ticks) and
// the records stored under the queues' reserved keys. The code is
// generated from queuewire.proto by scripts/genproto.sh; the client API is
// api/queuepb.
package queuewire
