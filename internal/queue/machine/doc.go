// Package machine is the replicated part of Synod's job queues: the
// extension of the data range's state machine (datarange.Extension) that
// applies the queues' Raft commands, deterministically, on every replica.
//
// A queue's data are MVCC user keys under keys.QueuesPrefix (see
// internal/keys/doc.go): per job an immutable spec (payload and options), a
// state rewritten at every change, and an output (last error, progress,
// result); plus the queue's settings, idempotency keys, groups' fairness
// state, attached workers and cron schedules. They are written through the
// range's KV applier, all writes of a command in one revision: the revision
// of a claim is its fencing token, and a job's ID is the revision of its
// push shifted left 16 bits plus its place in the push.
//
// In memory a replica keeps what decides claims (pending jobs by priority
// and time, groups, workers with room, running jobs by lease and deadline),
// rebuilt from the keys by Load. Every decision depends only on that state
// and the command: times travel in commands (the proposer's clock for
// client operations, the leader's, fenced to its term, for the time-driven
// work in KindTick), and Load rebuilds exactly what applying built (the
// tests check both, with replicas that restart at random).
//
// Pending jobs without a group or dependencies that are due after their
// queue's horizon (a couple of minutes ahead of the latest command's time,
// stored in the queue's horizon key) are cold: only their run time and ID
// are in memory, in structures without pointers that the garbage collector
// does not scan, and a command promotes them, from their stored records,
// before the horizon passes them (cold.go). A backlog of a million jobs
// scheduled far ahead thus costs each replica's collector nothing to mark.
//
// Workers attach to a queue with a capacity; whenever work and room meet
// (a push, a completion, an attach, a due time) the command that brings
// them together claims the jobs, so a claim is part of the command that
// made it possible and every node learns of it from the applied effects.
package machine
