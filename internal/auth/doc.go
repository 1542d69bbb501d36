// Package auth implements etcd-compatible authentication and authorization:
// users, roles and key permissions, replicated through Raft into the system
// keyspace (see package keys), and the checks every client request passes.
//
//   - state.go: the replicated auth state (enabled flag, revision, users,
//     roles), read from Pebble and cached in memory until the node applies a
//     change;
//   - perm.go: whether a set of key permissions covers a key, a range or a
//     prefix for reading or writing;
//   - lease.go: what a user may do with a lease, which depends on the keys
//     attached to it (keep-alive, attaching a key, revoke, listing);
//   - apply.go: the deterministic apply of the auth commands (replica calls
//     it; no clocks, no randomness: passwords arrive already hashed);
//   - tokens.go: simple tokens (registered on every node when the
//     Authenticate command applies, node-local TTL) and signed JWT tokens;
//   - login.go: the throttling of failed logins per user name and client
//     address, and password checks that cost the same for unknown users;
//   - service.go: the etcd Auth gRPC service;
//   - interceptor.go: unary and stream interceptors that authenticate every
//     request (token metadata, or the CN of a verified TLS client certificate)
//     and check it against the user's permissions, including the Watch stream
//     and the coordination services.
//
// Revocation takes effect on the next request: a request is checked against
// the node's current auth state and carries how it was checked (Fence) into
// its Raft command. A command with a login fails at apply with
// ErrGRPCAuthOldRevision if the auth state changed in between, and one
// checked while auth was disabled if auth was enabled meanwhile; the node
// then checks it again and proposes it anew until it goes through. What
// depends on the keys attached to a lease is checked at apply
// (CheckLeaseUse). Linearizable reads are checked again after their ReadIndex
// wait.
package auth
