// Package keys defines the layout of every key Synod writes to a node's Pebble
// instance. Keeping the whole keyspace in one file makes it possible to reason
// about which keys are replicated (part of a range's state machine, shipped in
// snapshots) and which are local to a node (Raft log, HardState, node identity).
//
// The layout, by first byte:
//
//	0x01 node-local, unreplicated
//	     0x01 "ident"                              node identity (cluster ID, member ID, name)
//	     0x01 "removed"                            this node was removed from its cluster
//	     0x01 "lost"                               this node found its data gone (a restart refuses)
//	     0x01 "peersecret"                         the cluster's peer secret (never in snapshots or backups)
//	     0x01 "r" <rangeID:8> "hs"                 Raft HardState of a range
//	     0x01 "r" <rangeID:8> "rt"                 Raft truncated state (index, term)
//	     0x01 "r" <rangeID:8> "rl" <index:8>       Raft log entry
//	0x02 range-local, replicated
//	     0x02 "r" <rangeID:8> "as"                 applied state of a range
//	0x03 system keyspace, replicated (members, leases, auth; later the meta range)
//	     0x03 "member" <memberID:8>                cluster member
//	     0x03 "removed" <memberID:8>               member removed from the cluster
//	     0x03 "alarm" <memberID:8> <type:4>        active alarm of a member
//	     0x03 "lease:" <leaseID:8>                 lease record
//	     0x03 "lkey:" <leaseID:8> <user key>       key attached to a lease
//	     0x03 "auth:enabled"                       auth enabled flag (1 byte)
//	     0x03 "auth:rev"                           auth revision (8 bytes), bumped by every auth change
//	     0x03 "auth:user:" <name>                  user (authpb.User, bcrypt password hash)
//	     0x03 "auth:role:" <name>                  role (authpb.Role, its key permissions)
//	0x10 MVCC user data
//	     0x10 <escaped user key> 0x00 0x01 <^revision:8>
//
// Integers are big-endian so that they sort numerically. User keys are escaped
// (0x00 becomes 0x00 0xff) and terminated by 0x00 0x01, so that all versions of
// one user key are contiguous and user keys keep their byte order. The revision
// is stored inverted (^rev), so the newest version of a key sorts first and a
// read at revision R is a single SeekGE to (key, ^R).
package keys
