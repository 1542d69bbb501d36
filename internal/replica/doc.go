// Package replica drives one Raft group: the replica of one range on one node.
//
// A Replica is the only owner of its raft.RawNode. Like the raft library it
// wraps, it has no goroutines, clocks or network of its own: the caller (the
// node's store) feeds it ticks, incoming messages, proposals and read
// requests, and calls HandleReady, which
//
//  1. sends the messages Raft allows before persistence (appends, heartbeats,
//     votes requests; never acknowledgements),
//  2. writes the HardState, new entries and any incoming snapshot to Pebble in
//     one batch, synced when Raft says so (MustSync),
//  3. sends the acknowledgements (MsgAppResp, MsgVoteResp, MsgPreVoteResp),
//     which Raft predicates on that state being durable,
//  4. applies the committed entries in one indexed batch, together with the
//     new applied state and, when the log is long, its truncation,
//  5. completes the proposals made on this node and the linearizable reads
//     whose read index has been applied, and calls Advance.
//
// This keeps the replica deterministic: a test can run several replicas in one
// goroutine, passing messages by hand.
//
// Snapshots are never materialized in the Raft log: Storage.Snapshot takes a
// Pebble snapshot of the applied state at that instant and the transport
// streams the range's replicated spans from it. The receiving replica stages
// the data and installs it, atomically with the new HardState and an emptied
// log, when Raft hands the snapshot back in a Ready.
package replica
