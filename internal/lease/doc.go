// Package lease implements etcd's TTL leases in two parts.
//
// The Table is the replicated part: lease records and the index of the keys
// attached to each lease, kept in the system keyspace and changed only by
// applying Raft commands (grant, revoke, checkpoint, and puts/deletes of
// attached keys). Every replica holds the same table.
//
// The Lessor is the leader's part: it alone decides when a lease expires. It
// keeps an in-memory expiry per lease, renewed by keepalives, and tells the
// node which leases to revoke (through Raft, so that all replicas delete the
// attached keys in the same revision) and which remaining TTLs to checkpoint.
// The Lessor reads no clock: callers pass the time, which keeps it
// deterministic in tests. Its leases wait in indexed min-heaps, so that its
// periodic work (Expired, Checkpoints) costs what is due, not what exists,
// and a renewal costs O(1) there (see Lessor).
//
// Leader changes. A new leader does not expire leases wholesale, nor reset
// them to their full TTL blindly: it starts each lease from the remaining TTL
// last checkpointed through Raft, or from its full TTL if none was. A lease is
// checkpointed only once it has gone unrenewed for half its TTL (a healthy
// client renews every third of it, so healthy leases cost no Raft traffic),
// and then again each time its remaining TTL has dropped by the checkpoint
// interval. A renewal of a checkpointed lease first resets the checkpoint
// through Raft, so that a failover can never cut a renewed lease short.
package lease
