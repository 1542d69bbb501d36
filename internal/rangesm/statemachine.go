package rangesm

import (
	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/raftcmd"
)

// A StateMachine gives a range's commands their meaning. The replica owns
// everything Raft: the log, the HardState, configuration changes, the
// applied index, truncation, snapshots, proposals and reads. The state
// machine owns what a committed command does to the range's replicated data,
// and the in-memory state it derives from that data (an index of live keys,
// a cache of leases).
//
// Like the replica, a state machine has no goroutines, clocks or I/O other
// than the batches and readers it is handed: every replica of a range
// applies the same commands to the same result.
type StateMachine interface {
	// Load (re)builds the in-memory state the machine derives from its
	// range's applied data, read from r, whose applied state is st: when
	// the replica opens, and after a snapshot replaced the data.
	Load(r pebble.Reader, st *AppliedState) error
	// Begin starts applying one batch of committed entries into b. st is
	// the applied state the batch moves forward (the machine may change
	// its KV counters and NoSpace); out collects what the node must act on
	// once the batch is committed.
	Begin(b *pebble.Batch, st *AppliedState, out *Effects) BatchApplier
	// Published is what readers get with each published state, in
	// Published.State (for the KV machine, the index of live keys as of
	// that state). It is called right after a batch or an install is
	// committed, before the state is published.
	Published() any
}

// A BatchApplier applies the entries of one batch, in log order.
type BatchApplier interface {
	// Apply applies one command, at index in term. An error in the Result
	// is the command's own and deterministic (the command then left no
	// write in the batch); a returned error is a storage failure that may
	// have left part of the command in the batch, which must be discarded
	// (the replica stops).
	Apply(cmd raftcmd.Command, index, term uint64) (Result, error)
	// ConfChange applies what a configuration change means to the
	// machine's state (member records), given the command its context
	// carries (zero if none). Raft's configuration is the replica's.
	ConfChange(cc *pb.ConfChangeV2, cmd raftcmd.Command) error
	// Finish ends the batch before it is committed, writing what the
	// machine keeps per batch.
	Finish() error
	// Committed tells the machine the batch is committed: its in-memory
	// state may now move to what the batch wrote.
	Committed() error
	// Close releases what the batch holds, whether it was committed or not.
	Close()
}

// A Spanner is a state machine whose replicated state's Pebble spans can
// change (a data range's, with its span, at a split): a replica asks it
// for them instead of keeping its configuration's. Spans must be safe for
// concurrent use.
type Spanner interface {
	Spans() []keys.Span
}

// A Partial state machine says whether its range holds only part of the
// keyspace: several ranges then share one revision order, and a replica
// of it that stamps commands does so with fresh revisions (replica
// Config.FreshRevisions). The replica asks after every Load.
type Partial interface {
	Partial() bool
}
