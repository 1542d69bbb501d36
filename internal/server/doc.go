// Package server assembles a Synod node: the Pebble instance, the store and
// its replicas, the peer transport and its gRPC server, the client port (the
// client gRPC server with the etcd services, and the JSON gateway over the
// same services, sharing one listener: packages portmux and gateway), and
// the background work (physical compaction, publishing this member's client
// URLs).
//
// Open starts every goroutine; Close stops them in reverse order and waits.
package server
