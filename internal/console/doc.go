// Package console serves Synod's web console at /ui/ on the client port:
// static files embedded in the binary (plain HTML, CSS and JavaScript
// modules in ui/, no build step, nothing fetched at run time) and four
// small read-only JSON endpoints that etcd's API lacks:
//
//   - GET /ui/api/session: who the request's credentials (the Authorization
//     header's token, or a verified TLS client certificate) identify, and
//     the key intervals that user may read and write, so that the console
//     shows and offers only what the user may do; open, as the gateway's
//     AuthStatus is;
//   - GET /ui/api/overview: every member with its status (the serving node
//     asks the others over the peer connection), the leader, alarms and the
//     ranges; open, as MemberList and Status are;
//   - GET /ui/api/metrics: the node's KV reads, writes and latency over the
//     last minutes, sampled from its own metrics; needs a login when auth is
//     enabled;
//   - GET /ui/api/queues: the names of the job queues the user may read
//     (read on synod/queues/<name>, as the queue service decides Stats and
//     List), which the queue API cannot list; needs a login when auth is
//     enabled.
//
// The views (ui/js/views/): the cluster, keys, leases, coordination (locks,
// elections, groups), queues (counts by state, jobs, a job's payload and
// error; cancel, and as root redrive, purge, pause and resume) and rate
// limits (parameters, counts, a peek at a key).
//
// Everything else the console shows or changes goes through the JSON
// gateway (package gateway) with the user's token in the Authorization
// header, so the server enforces every permission as it does for gRPC; the
// console's own hiding of what a user may not do is a convenience, not the
// check. The token lives in the page's memory only (not in local or
// session storage): reloading the page asks for the login again.
//
// Every answer carries a Content-Security-Policy that allows only the
// console's own scripts, styles and connections (no inline scripts, no
// framing), and X-Content-Type-Options: nosniff.
package console
