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
//	     0x01 "layout"                             version of this layout (Layout; absent: version 1, one range)
//	     0x01 "r" <rangeID:8> "hs"                 Raft HardState of a range
//	     0x01 "r" <rangeID:8> "rt"                 Raft truncated state (index, term)
//	     0x01 "r" <rangeID:8> "rl" <index:8>       Raft log entry
//	0x02 range-local, replicated
//	     0x02 "r" <rangeID:8> "as"                 applied state of a range
//	     0x02 "r" <rangeID:8> "sys"                a data range's copy of the system state (auth, NOSPACE)
//	     0x02 "r" <rangeID:8> "tl" <txn:8>         a transaction's locks in a data range
//	     0x02 "r" <rangeID:8> "tr" <txn:8>         a transaction's record
//	     0x02 "r" <rangeID:8> "tx"                 the highest revision a transaction committed at
//	     0x02 "r" <rangeID:8> "rd"                 a data range's own descriptor
//	     0x02 "r" <rangeID:8> "lh" <leaseID:8>     a lease revoked across ranges whose services are not told yet
//	0x03 system keyspace, replicated: the system range's (members, alarms,
//	     auth, the oracle's ceiling, the range descriptors), but the leases,
//	     which the first data range holds (with every key attached, in any range)
//	     0x03 "member" <memberID:8>                cluster member
//	     0x03 "removed" <memberID:8>               member removed from the cluster
//	     0x03 "alarm" <memberID:8> <type:4>        active alarm of a member
//	     0x03 "lease:" <leaseID:8>                 lease record
//	     0x03 "lkey:" <leaseID:8> <user key>       key attached to a lease
//	     0x03 "auth:enabled"                       auth enabled flag (1 byte)
//	     0x03 "auth:rev"                           auth revision (8 bytes), bumped by every auth change
//	     0x03 "auth:user:" <name>                  user (authpb.User, bcrypt password hash)
//	     0x03 "auth:role:" <name>                  role (authpb.Role, its key permissions)
//	     0x03 "oracle:ceiling"                     the revision oracle's ceiling (8 bytes)
//	     0x03 "range:" <rangeID:8>                 a data range's descriptor (internal/rangedesc)
//	0x10 MVCC user data
//	     0x10 <escaped user key> 0x00 0x01 <^revision:8>
//	0x11 service state, replicated, unversioned (services.go)
//	     0x11 <escaped reserved user key> 0x00 0x01  state of a service's key (a limiter key's checkpoint)
//
// User keys starting with 0x01 "synod/" (ReservedPrefix) are reserved for
// Synod's services whose data lives in data ranges; the etcd KV API refuses
// to write them. Each service has its own part:
//
//	0x01 "synod/limit/" <name> "/def"                      rate limit definition (synodpb.Limit)
//	0x01 "synod/limit/" <name> "/permit/" <hex key> "/" <id>  concurrency permit, on its holder's lease
//	0x01 "synod/limit/" <name> "/state/" <key>              (0x11 span) a key's checkpointed state
//	0x01 "synod/queue/" ...                                 job queues
//
// Reserved user keys (MVCC data like any other, so snapshots, backups,
// compaction, watches and range splits treat them alike) hold the data of
// Synod's services that live in data ranges, written only by their own Raft
// commands: the etcd KV API refuses any write that touches them, and with
// auth enabled only root may read them.
//
//	"\x01synod/"                                 ReservedPrefix
//	"\x01synod/queue/" <queue> "/config"          a queue's settings
//	"\x01synod/queue/" <queue> "/horizon"         its horizon: pending jobs due later are kept cold (decimal ms)
//	"\x01synod/queue/" <queue> "/job/" <id:16 hex>   a job's spec and payload (immutable)
//	"\x01synod/queue/" <queue> "/state/" <id:16 hex> a job's state, rewritten at each change
//	"\x01synod/queue/" <queue> "/out/" <id:16 hex>   its last error, progress and result
//	"\x01synod/queue/" <queue> "/idem/" <key>     idempotency key -> job ID
//	"\x01synod/queue/" <queue> "/group/" <group>  a group's fairness state
//	"\x01synod/queue/" <queue> "/worker/" <id>    an attached worker: lease and capacity
//	"\x01synod/queue/" <queue> "/cron/" <name>    a cron schedule
//
// Integers are big-endian so that they sort numerically. User keys are escaped
// (0x00 becomes 0x00 0xff) and terminated by 0x00 0x01, so that all versions of
// one user key are contiguous and user keys keep their byte order. The revision
// is stored inverted (^rev), so the newest version of a key sorts first and a
// read at revision R is a single SeekGE to (key, ^R).
package keys
