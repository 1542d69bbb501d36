// Package etcdapi serves the etcd v3 gRPC services (KV, Maintenance, Cluster)
// with the wire types of go.etcd.io/etcd/api/v3, so that etcdctl, clientv3 and
// every other etcd client work against Synod unchanged.
//
// The services validate requests (same errors, same gRPC codes as etcd), hand
// them to a Backend (the node) and translate the node's errors into the
// rpctypes errors etcd clients understand. They hold no state of their own.
package etcdapi
