// Package testcluster runs a Synod cluster of N nodes inside one test
// process, over real gRPC on loopback, for integration tests.
//
// Each node keeps its Pebble instance on its own crashable in-memory
// filesystem by default, so that Crash loses exactly the writes the node had
// not synced, like a power failure. Before the filesystem is cloned, every
// connection of the node (client and peer, in and out) is severed at the
// socket, so the node cannot acknowledge anything that the crash then loses.
//
// Set SYNOD_TEST_LOG=debug (or info, warn) to see the nodes' logs.
package testcluster
