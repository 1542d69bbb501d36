package rangesm

import (
	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/rangedesc"
)

// Result is the outcome of an applied command.
type Result struct {
	// Index is the log index the command was applied at.
	Index uint64
	// Resp is the command's response (for example *etcdserverpb.PutResponse).
	Resp any
	// Err is the command's own error (deterministic, the same on every
	// replica) or why it did not apply.
	Err error
}

// LeaseChangeKind says what happened to a lease.
type LeaseChangeKind int

// Lease changes reported in Effects.
const (
	LeaseGranted LeaseChangeKind = iota + 1
	LeaseRevoked
	LeaseCheckpointed
)

// LeaseChange is one applied change to the lease table, for the lessor.
type LeaseChange struct {
	Kind LeaseChangeKind
	ID   int64
	// TTL is the granted TTL in seconds (LeaseGranted).
	TTL int64
	// RemainingMs is the checkpointed remaining TTL (LeaseCheckpointed).
	RemainingMs int64
}

// Effects are what an applied batch changed that the node must act on
// outside the replica (physical compaction, watch notification, lease
// expiry, auth caches), once the batch is committed.
type Effects struct {
	// KV is the range's KV counters after the batch.
	KV kv.Meta
	// Leases are the applied lease changes, in order.
	Leases []LeaseChange
	// Compactions lists the compaction revisions applied, in order.
	Compactions []int64
	// Events are the KV changes applied, in revision order.
	Events []kv.Event
	// SnapshotInstalled is set when the range's state was replaced by a
	// snapshot from the leader: derived state must be rebuilt.
	SnapshotInstalled bool
	// ConfChanged is set when a configuration change was applied.
	ConfChanged bool
	// AuthTokens are the simple tokens assigned by applied Authenticate
	// commands: every node registers them (node-local, with a TTL).
	AuthTokens []auth.Token
	// AuthChanged is set when an auth command was applied: the node's
	// cached auth state is stale.
	AuthChanged bool
	// TxnLocksChanged is set when a batch took or released locks of
	// transactions across ranges; TxnLockFloor is then the lowest floor
	// of the locks the range holds after it (txnlock.Table.Floor, 0 for
	// none): no transaction holding them commits at or below it.
	TxnLocksChanged bool
	TxnLockFloor    int64
	// TxnMaxCommit, set with SnapshotInstalled (by the node, from the
	// installed state), is the highest revision a transaction across
	// ranges committed at in the range: it may hold versions up to there,
	// above its revision.
	TxnMaxCommit int64
	// Splits are the splits applied, in order: the range became Left,
	// and Right was made (its state is in the batch).
	Splits []Split
	// Extensions are what the data range's extensions (job queues, rate
	// limiters) recorded for their services on this node, in apply order;
	// each service knows its own types.
	Extensions []any
}

// HasEffects reports whether there is anything for the node to act on:
// events, compactions, lease, membership or auth changes, or an installed
// snapshot.
func (e *Effects) HasEffects() bool {
	return len(e.Events) > 0 || len(e.Compactions) > 0 || len(e.Leases) > 0 ||
		e.SnapshotInstalled || e.ConfChanged || len(e.AuthTokens) > 0 || e.AuthChanged || len(e.Extensions) > 0 || e.TxnLocksChanged ||
		len(e.Splits) > 0
}

// Split is an applied split of a data range.
type Split struct {
	// Left is the split range's descriptor after the split, Right the
	// new range's.
	Left, Right rangedesc.Descriptor
	// Revision is the range's revision at the split, the new range's
	// first: it holds no version above it.
	Revision int64
}
