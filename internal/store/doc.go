// Package store hosts the replicas of a node, by range ID, and owns the
// goroutines that drive them.
//
// Each replica has one goroutine, the only one that touches the replica. Other
// goroutines talk to it through a mailbox: incoming Raft messages, proposals,
// reads, snapshot outcomes and ticks are appended under a mutex and the
// goroutine is woken. It drains the whole mailbox before each HandleReady, so
// everything that arrived during one fsync is proposed together and persisted
// by the next single fsync: this is where proposals are batched.
//
// The store also implements the transport's Handler (incoming traffic) and
// the replicas' Sender (outgoing traffic).
package store
