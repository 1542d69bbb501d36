// Package e2e tests the synod binary end to end: it builds cmd/synod, runs
// `synod demo` and clusters of `synod start` processes on free local ports,
// and talks to them with the synod client commands and with etcdctl
// (Debian's etcd-client package), which must be installed.
package e2e
