// Package metrics defines a node's Prometheus metrics. Each node has its own
// registry (several nodes share a process in tests and in `synod demo`).
//
// Most values are read when Prometheus scrapes (gauge functions over the
// node's published state), so the hot paths pay nothing for them; the gRPC
// interceptors and a few counters are the exceptions.
package metrics
