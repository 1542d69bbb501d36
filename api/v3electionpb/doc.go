// Package v3electionpb holds the protobuf messages and gRPC service of
// etcd's v3election API (Campaign, Proclaim, Leader, Observe, Resign),
// wire-compatible with etcd's
// go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb, which
// Synod must not import. The code is generated from v3election.proto by
// scripts/genproto.sh.
package v3electionpb
