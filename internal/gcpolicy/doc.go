// Package gcpolicy sets the Go garbage collector's policy of a Synod server
// process: collect less often than Go's default (GOGC=100), under a soft
// memory limit that bounds the heap.
//
// A node's steady-state live heap is small next to the garbage each request
// makes (protobuf messages, Raft entries, gRPC buffers), so at GOGC=100 the
// collector runs often and costs a quarter of the CPU under write load. At 400
// it costs much less (docs/benchmarks.md has the figures), and the memory
// limit keeps a node that does hold a large heap from growing fivefold. Both
// yield to the GOGC and GOMEMLIMIT environment variables when they are set.
package gcpolicy
