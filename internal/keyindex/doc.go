// Package keyindex keeps, in memory, the newest version of every live key
// of a range: its create and mod revisions, version and lease, not its value.
//
// It answers what a read at the current revision needs before it touches
// the store: which keys are live in a range, how many, and in which order by
// create or mod revision. A read then fetches from Pebble only the values it
// returns. Without it, a scan seeks once per user key through every version
// and tombstone of the keys it passes, and scans that sort by revision (the
// queues of etcd's Mutex and Election) read every value to return one.
//
// An Index is owned by one goroutine (the replica's), which applies each
// batch's changes and then takes a Snapshot: a frozen copy in O(1) that any
// goroutine may read while the owner goes on writing. The index is a B+tree
// whose nodes carry a generation: Snapshot starts a new one, and the index
// copies a node of an older generation (which snapshots may share) before
// changing it, so a write copies the nodes on its path once per snapshot.
//
// Leaves keep their keys' bytes packed in one byte slice and the rest of
// their entries in an array of pointer-free slots: the garbage collector
// marks a leaf as three objects and never scans the entries, where one
// object per entry and one per key made marking a large index the longest
// part of each collection (docs/benchmarks.md has the figures).
package keyindex
