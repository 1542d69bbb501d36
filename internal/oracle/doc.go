// Package oracle is the cluster's revision oracle: the one source of the
// revisions that order every committed write, on any range, once the
// keyspace is split (issue 15, step 2).
//
// The oracle runs on the system range's leader. It hands revisions out from
// memory, in batches, and keeps a ceiling stored in the system range
// (raftcmd.KindOracleCeiling) above every revision it hands out. A new
// leader starts above the stored ceiling, once it has applied every entry
// of the terms before its own, so revisions strictly increase across every
// failover; the part of a ceiling an old leader had not handed out is
// skipped (revisions have gaps).
//
// Revisions also increase in real time: a batch is served only after a
// ReadIndex round, started after every request of the batch arrived,
// confirmed that the node still led the system range in the term the
// allocator serves. A leader deposed before that round would have found a
// quorum in a later term, so a request that began after another ended gets
// the higher revision, whichever leader served either.
//
// Allocator is the deterministic part (no goroutines, clocks or I/O); the
// server drives it (internal/server/oracle.go).
package oracle
