// Package datarange is the state machine of a data range
// (rangesm.StateMachine): it applies etcd's KV commands (put, delete, txn,
// compaction) to the range's MVCC data, keeps the index of its live keys,
// and applies the lease commands, with the auth checks etcd makes at apply
// time (the revision fence, lease permissions) and the NOSPACE refusal.
//
// Until the system range has a state machine of its own, this one also
// applies the system commands of the single range (member records, alarms,
// auth): see "Ranges" in docs/design.md.
package datarange
