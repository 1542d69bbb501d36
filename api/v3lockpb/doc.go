// Package v3lockpb holds the protobuf messages and gRPC service of etcd's
// v3lock API (Lock, Unlock), wire-compatible with etcd's
// go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb, which Synod must
// not import. The code is generated from v3lock.proto by
// scripts/genproto.sh.
package v3lockpb
