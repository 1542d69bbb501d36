// Package testcluster runs a Synod cluster of N nodes inside one test
// process, over real gRPC on loopback, for integration tests.
//
// Each node keeps its Pebble instance on its own crashable in-memory
// filesystem by default, so that Crash loses exactly the writes the node had
// not synced, like a power failure. Before the filesystem is cloned, every
// connection of the node (client and peer, in and out) is severed at the
// socket, so the node cannot acknowledge anything that the crash then loses.
//
// The network between the nodes can be made faulty, link by link (from one
// node to another): Partition, OneWay, Isolate and Split cut links,
// SetLinkFaults and SetAllLinkFaults lose, duplicate, delay and reorder
// messages, and Heal restores every link. Faults act on the Raft messages
// and snapshots a node sends (through the transport's Interceptor) and on
// its other calls to peers (lease forwarding); the random choices come from
// Options.Rand, so a test seeds them.
//
// Set SYNOD_TEST_LOG=debug (or info, warn) to see the nodes' logs.
package testcluster
