// Package storage opens the single Pebble instance a Synod node keeps all of
// its state in: the Raft logs and HardStates of the ranges it replicates, their
// applied state, and the MVCC data. The key layout is defined by package keys.
//
// Durability rule: a batch that Raft needs to be durable (HardState, log
// entries, an installed snapshot) is committed with Sync. Batches of applied
// state are committed without Sync; Pebble's write-ahead log keeps batches in
// order, so after a crash the applied state is a prefix of what was applied and
// the Raft log, which was synced, replays the rest.
package storage
