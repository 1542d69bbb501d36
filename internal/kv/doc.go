// Package kv implements the etcd v3 KV service semantics (Range, Put,
// DeleteRange, Txn, Compact) on top of package mvcc, with the errors etcd
// returns (the rpctypes.ErrGRPC* values).
//
// # Three entry points
//
// Validate* functions are pure checks made before a request is proposed to
// Raft. The Applier executes committed write commands, in Raft log order, in
// one indexed Pebble batch; it must be deterministic, so it reads no clock,
// uses no randomness and never lets map iteration order reach its results.
// Range serves reads outside apply from a DB or snapshot reader.
//
// # Keys and ranges
//
// An empty range_end selects the key alone; the range_end "\x00" selects
// every key >= key (so key "\x00" with range_end "\x00" selects all keys); a
// range_end <= key selects nothing, without error.
//
// # Revisions
//
// A command that writes gets one revision (chosen in Applier.writeRevision
// only: the revision its range's leader stamped it with from the cluster's
// revision oracle, or Meta.Revision+1 for a command of a log written before
// stamping) for all its writes, which are numbered by a
// sub-revision from 0 in write order; Meta.Revision then advances once. A
// command that writes nothing (a delete matching no key, a txn whose path has
// no effective write) leaves the revision unchanged. Every error from the
// rpctypes set is detected before the first write, so a failing command
// leaves the batch, Meta and Events untouched.
//
// Reads at revision <= 0 read the current revision; reads above it fail with
// ErrGRPCFutureRev and reads below Meta.CompactRevision with
// ErrGRPCCompacted. Range response headers carry the current revision, not
// the revision read, as etcd's do.
//
// # Txn
//
// As in etcd, the compares of a txn and of all its nested txns are evaluated
// against the state before the txn; the operations of the chosen path then
// run in order and see the txn's own earlier writes. Duplicate-key rules
// (ValidateTxn) follow etcd, including its quirks: a delete whose range_end
// is "\x00" is not considered to cover any put, and a put made by a nested
// txn does not conflict with a delete made by a later nested txn.
//
// # Sorting and limits
//
// Range follows etcd's order of work: storage returns keys in key order,
// revision filters are applied, then sorting, then the limit. When the sort
// order is NONE and no filter is set, etcd applies the limit in key order
// before sorting by a non-KEY target; Range does the same. Sorts are stable:
// KVs that tie on the sort target stay in ascending key order.
package kv
