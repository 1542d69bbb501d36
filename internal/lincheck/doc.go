// Package lincheck records histories of etcd KV operations and checks them:
// linearizability with porcupine, the real-time order of revisions, and that
// no acknowledged write is missing after the cluster restarts.
//
// A Recorder collects operations as clients invoke them and see them return.
// An operation whose outcome is unknown (a timeout, Unavailable, a broken
// connection) may or may not have taken effect: it is kept, with its return
// time set to the end of the history, so the checker may place its effect
// anywhere after its invocation, or nowhere. Reads that fail are dropped:
// they changed nothing.
//
// The model is a single register per key holding a value and its mod
// revision, so porcupine checks each key on its own (a history is
// linearizable iff each key's is, since operations touch one key each). What
// crosses keys is checked by CheckRevisions: an operation that starts after
// another returned must see at least that one's revision, and no two writes
// share a revision.
//
// The operations are those of Synod's KV service: Get, Put, Delete and a
// compare-and-swap Txn. Watches are checked against the store's event log
// (CheckEventLog, CheckWatchers: every event once, in revision order, with
// its previous version, agreeing with the history), leases for early expiry
// (CheckLeases), locks for mutual exclusion of their fenced writes
// (CheckLock).
package lincheck
