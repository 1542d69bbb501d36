// Package coord serves Synod's coordination services on the node's own KV,
// leases and watch hub: etcd's v3lock (Lock, Unlock) and v3election
// (Campaign, Proclaim, Leader, Observe, Resign) services, wire-compatible
// with etcd's, and Synod's Groups service (membership groups).
//
// # Locks and elections
//
// They use the key layout of etcd's concurrency package, so that the
// services, go.etcd.io/etcd/client/v3/concurrency, etcdctl lock/elect and
// Synod's Go client all contend for the same locks and elections: a
// participant of name N holds the key N/<lease ID in hex>, attached to its
// lease, and the participant whose key has the lowest create revision owns
// the lock (leads the election). A participant whose lease ends loses its key
// and so its place.
//
// Waiting has no herd effect: a waiter watches only its predecessor, the key
// of N with the largest create revision below its own, for deletion. A
// release (or an expiry) therefore wakes exactly one waiter, which reads the
// lock's keys once to find its next predecessor or learn that it owns the
// lock: 1,000 waiters cost one wake-up and one read per release. The watches
// are in-process watchers of the node's hub, one exact-key watcher each.
//
// # Fencing tokens
//
// The token of an acquisition is the create revision of the owner's key. It
// strictly increases with each acquisition of a lock (or each new leader of
// an election): keys are ordered by create revision, a key's create revision
// is above every revision before it, and a waiter owns the lock only once
// every key with a lower create revision is gone. Lock returns it as
// LockResponse.Header.Revision, Campaign as CampaignResponse.Leader.Rev (and
// Header.Revision). The guarded write is a Txn comparing CREATE(key) =
// token: it succeeds only while the holder's key still exists as created at
// that acquisition, so a holder paused past its lease, whose key is gone,
// can no longer write (its token may also be passed to any other resource
// that remembers the highest token seen).
//
// # Groups
//
// A member of group G with ID M is the key synod/groups/G/members/M, holding
// the member's metadata, attached to its lease. Leave deletes it and, in the
// same revision, writes synod/groups/G/left/M (on the member's lease): a
// watcher that sees the member key deleted without that marker at the same
// revision reports an expiry. Watch streams the group's changes from a
// revision without gaps: it is a watcher of the group's prefix on the hub,
// history first, then live.
package coord
