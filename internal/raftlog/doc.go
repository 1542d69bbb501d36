// Package raftlog implements raft.Storage for one range on the node's Pebble
// instance: the Raft log entries, the HardState and the truncated state (the
// index and term of the last entry removed from the log).
//
// A Storage is owned by the goroutine that drives its range's raft.RawNode;
// it is not safe for concurrent use. Writes are staged into a Pebble batch
// that the caller commits (with Sync where Raft requires durability); the
// in-memory view (last index, cache) is updated when staging, on the rule
// that a failed commit stops the replica for good.
//
// Recent entries are kept in a bounded in-memory cache so that the leader
// sends appends to followers without reading them back from Pebble.
package raftlog
