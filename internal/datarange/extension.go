package datarange

import (
	"bytes"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangesm"
)

// An Extension applies the commands of one of Synod's services whose data
// lives in data ranges, in a key span reserved for it (the job queues, the
// rate limiters). It is part of the data range's state machine: it runs on
// the replica's goroutine, deterministically (no clocks, no I/O but the
// batches and readers it is handed; a time a command depends on travels in
// the command), and a data range has one instance of each extension.
type Extension interface {
	// Name names the extension in errors and logs.
	Name() string
	// Kinds are the command kinds it applies (within its block of
	// raftcmd's kinds); no two extensions share one.
	Kinds() []raftcmd.Kind
	// Load (re)builds the extension's in-memory state from the range's
	// applied data in r: when the replica opens, and after a snapshot
	// replaced the data.
	Load(r pebble.Reader) error
	// Apply applies one of its commands. As for every command, an error
	// in the Result is the command's own and deterministic, and the
	// command must then have left no write in the batch (check before
	// writing); a returned error is a storage failure.
	Apply(env *Env, cmd raftcmd.Command) (Result, error)
	// LeaseRevoked is called in the batch that revokes lease id (it
	// expired, or a client revoked it), after the lease's keys were
	// deleted, so that what the extension binds to the lease ends with it
	// (the claims of a worker whose session ended).
	LeaseRevoked(env *Env, id int64) error
	// Committed is called once a batch in which it applied a command or
	// saw a lease revoked is committed: in-memory state may move to what
	// the batch wrote.
	Committed()
}

// Env is what an extension may use while it applies a command.
type Env struct {
	// Batch is the apply batch (an indexed batch: reads see its writes).
	Batch *pebble.Batch
	// KV applies etcd operations (compares, ranges, puts, deletes, txns)
	// in this batch with their revisions, index and watch events, as the
	// KV commands do: an extension that keeps its data as MVCC keys in
	// its reserved span writes it through KV.
	KV *kv.Applier
	// Leases is the range's lease table (Exists): a lease a transaction
	// across ranges is revoking does not exist, and the command, if it
	// fails, waits for the revocation and goes again.
	Leases kv.Leases
	// Term and Index are those of the command's log entry.
	Term, Index uint64
	// Local is set when this node proposed the command: only it answers,
	// so work whose only purpose is the response may be skipped elsewhere.
	Local bool
	// NoSpace is set while a NOSPACE alarm refuses what adds data.
	NoSpace bool
	// Effects collects what the extension's service on this node must act
	// on once the batch is committed (wake the streams a new job is for),
	// in Effects.Extensions.
	Effects *rangesm.Effects
	// Start and End are the range's span (End nil: no end). KV reads and
	// writes only what this range holds: an extension must refuse keys
	// outside it (Holds), which on a split store other ranges own.
	Start, End []byte
}

// Holds reports whether the keys of an etcd key and range end (empty: the
// key alone; "\x00": every key from key on) lie in the range's span.
func (e *Env) Holds(key, rangeEnd []byte) bool {
	start, end := kv.RangeBounds(key, rangeEnd)
	if bytes.Compare(start, e.Start) < 0 {
		return false
	}
	if e.End == nil {
		return true
	}
	return end != nil && bytes.Compare(end, e.End) <= 0
}

// extensionKinds maps each command kind to the extension that applies it.
func extensionKinds(exts []Extension) (map[raftcmd.Kind]Extension, error) {
	m := map[raftcmd.Kind]Extension{}
	for _, x := range exts {
		for _, k := range x.Kinds() {
			if k < raftcmd.KindQueueFirst {
				return nil, fmt.Errorf("extension %s claims command kind %d, below the services' kinds", x.Name(), k)
			}
			if o, dup := m[k]; dup {
				return nil, fmt.Errorf("extensions %s and %s both claim command kind %d", o.Name(), x.Name(), k)
			}
			m[k] = x
		}
	}
	return m, nil
}
