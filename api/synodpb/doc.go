// Package synodpb holds the protobuf messages and gRPC service of Synod's
// own coordination APIs: the Groups service (membership groups) and the
// Limits service (rate limiters). The code is generated from groups.proto
// and limits.proto by scripts/genproto.sh; the messages embed
// etcd's ResponseHeader, so headers read as in the etcd services.
package synodpb
