// Package limitsm is the replicated part of Synod's rate limiters: the
// extension of the data range's state machine (datarange.Extension) that
// applies their commands, and the layout of their keys.
//
// Under the reserved prefix keys.LimitPrefix ("\x01synod/limit/"):
//
//   - a limit's definition is the MVCC key <name>/def (a StoredLimit), so
//     that every node follows the definitions with a watch, and backups,
//     snapshots and splits carry them as any key;
//   - a concurrency permit is the MVCC key <name>/permit/<hex key>/<id> on
//     its holder's lease: when the lease ends (expired or revoked) the key
//     goes with the lease's other keys, and the permit with it;
//   - a key's checkpointed state is in the service state span
//     (keys.ServiceStateKey of <name>/state/<key>), overwritten in place:
//     checkpoints come many times a second under load, and as MVCC versions
//     they would pile up history until a client compacted.
//
// Commands (raftcmd kinds 150-154): set and delete a limit, record keys'
// states (a checkpoint, fenced to the owner's term: only the leader that
// decides for the keys writes them), and acquire and release permits. Apply
// reads no clock: a checkpoint carries the owner's states and time.
package limitsm
