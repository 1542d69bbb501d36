// Package allocator decides where the replicas of ranges live: given the
// state of a cluster (its nodes, with their locality, liveness and counts
// of replicas and leaders; its ranges, with their replicas, leader and
// replication factor; and the moves already in flight), Plan returns an
// ordered, bounded list of actions that repair, trim and rebalance the
// ranges' replicas and spread their leadership, plus what metrics need
// (per-node counts, under-replicated and unavailable ranges).
//
// The package is pure: no goroutines, clocks, I/O or randomness. The same
// input gives the same plan, whatever the order of its nodes and ranges;
// every tie is broken by the lowest node ID (then range ID). Whoever calls
// it (the system range's leader, once wired) carries the actions out and
// calls it again with the new state: a move takes several calls.
//
// Rules, in priority order, as CockroachDB's allocator orders them:
//
//  1. Repair. A learner on a dead or decommissioning node is removed. A
//     range with fewer voters than its factor gets a learner; one with a
//     voter on a dead (then decommissioning) node gets a learner to replace
//     it, and once that learner is promoted the range has one voter too
//     many and the dead (or decommissioning) one is removed. Leadership is
//     moved off decommissioning nodes. The most urgent ranges go first
//     (fewest live voters beyond a quorum). A range whose live voters are
//     not a quorum is reported unavailable and left alone: nothing but its
//     dead nodes' return can help it.
//  2. Moves in progress and over-replication. A caught-up learner is
//     promoted; a range with more voters than its factor loses the one on a
//     dead node, else on a decommissioning node, else the one that adds
//     least diversity, else the one on the fullest node.
//  3. Rebalance. A replica moves (learner added, promoted, then the old one
//     removed) first wherever that spreads its range over more distinct
//     localities, then from a node above the mean replica count to one
//     below it while any node is outside the mean by more than 10% or 2
//     replicas, whichever is larger, and only where the move keeps the
//     range's diversity. Diversity comes before balance: a region of one
//     node holds a replica of every range.
//  4. Leadership. Leadership is transferred, among a range's live voters,
//     from nodes above the mean leader count to nodes below it, by the same
//     bound.
//
// New replicas go to live nodes (never dead or decommissioning ones) that
// hold no replica of the range, best first by diversity (distinct
// localities first, CockroachDB's diversity score), then fewest replicas,
// then least disk used. Each range gets at most one action per call, so at
// most one membership change is under way per range, and a voter is
// removed only if the live voters left are a quorum of the voters left and
// only once leadership has left it: the allocator's own moves never take a
// range's quorum away. New replicas take their IDs from the range's
// next-replica-ID counter, so an ID is never used twice.
//
// Not wired into the server yet: every node still holds a replica of every
// range (docs/design.md, "Placement (issue 16): the allocator").
package allocator
