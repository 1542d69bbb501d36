// Package server assembles a Synod node: the Pebble instance, the store and
// its replicas, the peer transport and its gRPC server, the client port (the
// client gRPC server with the etcd services, the JSON gateway over the same
// services, and the web console, sharing one listener: packages portmux,
// gateway and console), and the background work (physical compaction, publishing this member's client
// URLs).
//
// Open starts every goroutine; Close stops them in reverse order and waits.
package server
