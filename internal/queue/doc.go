// Package queue is the node side of Synod's job queues: the gRPC service
// (api/queuepb), the claim streams a node serves, the batching of every
// client's operations into shared Raft commands, and, on the range leader,
// the time-driven work. What the queues are, and every decision about
// their jobs, is the replicated state machine of package machine.
//
// # Batching
//
// Every operation (a push, a worker's attach, a completion...) goes to the
// node's batcher, which gathers them while its proposers are busy; a free
// proposer takes what gathered and proposes it as one command
// (machine.KindBatch), stamped with the node's clock. Operations authorized
// alike (auth.Fence) share commands; pushes go in commands of their own,
// which alone count against the storage quota.
//
// # Claim streams
//
// A worker opens a Claim stream on any node with its queue, ID, session
// lease and capacity. The node attaches it (a replicated worker record:
// lease and capacity); from then on the state machine claims jobs for it
// in whatever command brings work and room together, and every node learns
// of the claims from the applied effects: the node serving the worker's
// stream sends them, reading the payloads from its store. A stream that
// (re)connects is sent every job claimed for the worker on its lease, so a
// claim made while the worker moved between nodes is not lost; the worker
// drops duplicates by ID and token. Completions and failures come back on
// the stream, into the batcher; their answers go out on the stream. When a
// stream ends, the node detaches the worker (unless another stream of the
// worker attached it since); when the lease ends, its jobs are released by
// the state machine.
//
// # Time
//
// On the range leader, a loop proposes what time makes due, as
// machine.KindTick commands fenced to its term: dispatching jobs whose run
// time came (or that a lease's end released) to workers with room, failing
// attempts past their deadline, deleting finished jobs past their
// retention and firing cron schedules (package cron). It sleeps until the
// next known due time, and wakes on applied effects.
package queue
