// Package rangesm is the contract between a replica, which drives a range's
// Raft group, and the state machine that gives the range's commands their
// meaning: the StateMachine interface, the applied state every range keeps,
// and the results and effects of applying a batch of commands.
//
// A range is of one kind: a data range (its state machine applies etcd's KV
// and lease commands, internal/datarange), or, later, the system range
// (members, auth, alarms, the revision oracle and the range descriptors).
// The replica knows none of them.
package rangesm
