// Package e2e tests the synod binary end to end: it builds cmd/synod, runs
// `synod demo` and clusters of `synod start` processes on free local ports,
// and talks to them with the synod client commands and with etcdctl
// (Debian's etcd-client package), which must be installed.
//
// The tests run in parallel (t.Parallel, -parallel at a time): they spend
// their time waiting for processes to start, elect and expire leases, and
// each one has its own data directories and ports.
//
// With SYNOD_TEST_PRESPLIT=1 every cluster they bootstrap (synod start,
// synod demo) starts pre-split into many data ranges, with a size limit of
// 1 MiB per range (internal/testbin, PresplitArgs); CI runs the suite both
// ways.
package e2e
