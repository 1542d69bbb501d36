// Package datarange is the state machine of a data range
// (rangesm.StateMachine): it applies etcd's KV commands (put, delete, txn,
// compaction) to the range's MVCC data, keeps the index of its live keys,
// and applies the lease commands, with the auth checks etcd makes at apply
// time (the revision fence, lease permissions) and the NOSPACE refusal. It
// keeps the locks and records of transactions across ranges (txn.go,
// internal/txnlock), and holds the range's own writes to them. The system
// state (members, alarms, auth) is the system range's; a data range keeps
// a copy of what its commands are checked against. See "Ranges" in
// docs/design.md.
package datarange
