// Package cluster describes the members of a Synod cluster: parsing of the
// --initial-cluster flag, the derivation of member and cluster IDs, and the
// member records kept in the replicated system keyspace (keys.MemberKey), which
// back the etcd Cluster.MemberList API.
//
// IDs are derived, as etcd does, from what every node already knows at
// bootstrap (names, peer URLs and the cluster token), so all nodes compute the
// same IDs without talking to each other.
package cluster
