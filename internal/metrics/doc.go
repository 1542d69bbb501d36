// Package metrics defines a node's Prometheus metrics. Each node has its own
// registry (several nodes share a process in tests and in `synod demo`).
//
// Most values are read when Prometheus scrapes (gauge functions over the
// node's published state), so the hot paths pay nothing for them; the gRPC
// interceptors and a few counters are the exceptions.
//
// History keeps a ring of samples of the node's KV traffic (reads, writes
// and their latency quantiles, one sample a second for five minutes), read
// from the gRPC latency histogram, for the web console's charts.
package metrics
