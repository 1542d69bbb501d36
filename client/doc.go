// Package client is the Go client of Synod: a connection to a cluster (with
// the etcd client's KV, Watch and Lease, and failover across endpoints), and
// the coordination primitives built on them — sessions, locks with fencing
// tokens, semaphores, readers-writer locks, elections and membership groups.
//
// # Sessions
//
// A Session is a lease that the client keeps alive in the background. Locks,
// elections and group memberships made on a session last as long as its
// lease: when a process dies, its lease expires after its TTL and everything
// it held is released. Session.Done is closed as soon as the lease can no
// longer be confirmed alive (counted from the time each renewal was sent, so
// it is never late).
//
// # Locks and fencing tokens
//
// A Mutex is held by a session. Lock waits in a queue where each waiter
// watches only the waiter before it, so a release wakes one waiter. A lock
// is safe only with fencing: a holder can be paused (a GC pause, a stopped
// VM) past its lease, and another session then takes the lock while the
// first still believes it holds it. Every acquisition therefore has a token,
// Mutex.Token, the create revision of its ownership key, which strictly
// increases with each acquisition of the lock. Writes to Synod guarded by
// the token (Mutex.GuardedTxn, Mutex.GuardedPut: a transaction whose
// condition is CREATE(key) = token) succeed only while the lock is held, so
// a paused former holder cannot overwrite its successor's work; pass the
// token to any other resource you protect, which should refuse tokens lower
// than the highest it has seen. Mutex.Lost is closed when the lock is lost.
//
// The keys are those of etcd's concurrency package, etcdctl lock/elect and
// Synod's Lock and Election services (<name>/<lease in hex>): all of them
// share the same locks and elections.
//
// # Groups
//
// A Group tracks the live members of a service. Members join with an ID and
// metadata on their session, and Watch reports joins, updates, leaves and
// expiries in revision order, from a revision, without gaps.
//
// # Rate limits
//
// Limits are data in the cluster (Client.SetLimit): a name, an algorithm
// (GCRA, sliding window, fixed or calendar windows, concurrency), its
// parameters and a mode. A Limiter applies one to a key, in the shape of
// golang.org/x/time/rate: Allow, Wait and Reserve, every node of the
// cluster sharing the same counts. A concurrency limit hands out Permits on
// a session's lease (Client.Acquire): a crashed holder's permit comes back
// when its lease expires. Client.Limits is the raw service, for batches
// over several limits that are granted all or nothing.
package client
