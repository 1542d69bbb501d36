package kv

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/synod-io/synod/internal/keyindex"
	"github.com/synod-io/synod/internal/mvcc"
)

// Meta is the KV part of a range's replicated applied state. The replica
// persists it atomically with the applied index after every apply batch.
type Meta struct {
	// Revision is the revision of the last write applied (0 before any write).
	Revision int64
	// CompactRevision is the revision of the last compaction: reads below it
	// fail with ErrGRPCCompacted.
	CompactRevision int64
}

// DefaultMaxTxnOps is etcd's default limit on the operations of a txn.
const DefaultMaxTxnOps = 128

// Limits bounds what a single request may contain.
type Limits struct {
	// MaxTxnOps is the maximum number of compares, and of operations in each
	// branch, of one txn (etcd default 128). Zero or less means
	// DefaultMaxTxnOps.
	MaxTxnOps int
}

// Event is one change produced by applying a command: the new KV (for a
// delete, a KV with only Key and ModRevision set) and the previous live KV,
// if there was one. The watch hub delivers these. The KVs may be shared with
// the command's response: treat them as read-only.
type Event struct {
	Type   mvccpb.Event_EventType
	KV     *mvccpb.KeyValue
	PrevKV *mvccpb.KeyValue
	// PrevValueUnread means PrevKV has everything but its value, which apply
	// did not read: a put over a live key learns the previous version's
	// revisions and lease from the index of live keys, and only watchers
	// that ask for previous values need more. ReadPrev reads it.
	PrevValueUnread bool
}

// ReadPrev reads the value of e's previous version, if apply left it
// unread, from r, which must hold that version's revision. When compaction
// has removed it, e is left without a previous version, as etcd sends an
// event whose previous version it cannot read.
func (e *Event) ReadPrev(r pebble.Reader) error {
	if !e.PrevValueUnread {
		return nil
	}
	prev, err := mvcc.Get(r, e.PrevKV.Key, e.PrevKV.ModRevision)
	if err != nil {
		return fmt.Errorf("read previous version of %q at %d: %w", e.PrevKV.Key, e.PrevKV.ModRevision, err)
	}
	if prev == nil || prev.ModRevision != e.PrevKV.ModRevision {
		prev = nil // compacted
	}
	e.PrevKV, e.PrevValueUnread = prev, false
	return nil
}

// Leases tells apply which leases exist and records key attachment. A nil
// Leases means no lease exists: a put naming a lease fails with
// rpctypes.ErrGRPCLeaseNotFound.
//
// The methods' errors are storage failures, not command errors: apply stops.
type Leases interface {
	Exists(id int64) (bool, error)
	Attach(id int64, key []byte) error
	Detach(id int64, key []byte) error
}

// Applier executes committed write commands deterministically in one
// indexed Pebble batch. Reads made by the commands (txn compares, prev_kv,
// ranges inside a txn) see the batch's earlier writes.
//
// A command failing with an rpctypes.ErrGRPC* error has written nothing to
// the batch, recorded no event and left Meta unchanged. Any other error is a
// storage failure (a Pebble error or corrupt data) after which the batch and
// Events may hold part of the command: the caller must discard them.
type Applier struct {
	Batch *pebble.Batch
	// Revision, if not zero, is the revision the command's writes take:
	// the one its range's leader stamped it with, from the cluster's
	// revision oracle (raftcmd.Command.Revision).
	Revision int64
	// Reader, used only when Batch is nil, is what a read-only txn served
	// outside apply reads (see ReadTxn).
	Reader pebble.Reader
	// Live, used only with Batch, indexes the keys live in the state being
	// applied: every write updates it (and its revision), so the reads of a
	// txn that follow see them, as they see the batch's. nil: none.
	Live *keyindex.Index
	// LiveSnapshot, used only with Reader, indexes the keys live in Reader
	// at Meta's revision (nil: none).
	LiveSnapshot *keyindex.Snapshot
	// NoReadResults skips the gets of a txn, which write nothing and whose
	// results only the member answering the client needs: the others apply
	// the txn for its writes. Their responses are then empty (a header of
	// the txn's revision), while their checks, and so the errors a txn can
	// fail with, stay the same.
	NoReadResults bool
	// Writer, if set, makes the MVCC writes into Batch, reusing its iterator
	// across the commands of one apply batch.
	Writer *mvcc.Writer
	Meta   *Meta
	// Committed is a revision up to which the range's state is final
	// though Meta's revision may be below it: the highest revision at which
	// a transaction across ranges made writes in the range (ApplyAt, which
	// leaves Meta's revision below it), or, on a range that holds part of
	// the keyspace, the one below the command's stamp (the range holds no
	// other version below the stamp). The command's reads see versions up
	// to the higher of the two (readRevision), and a command that writes
	// nothing answers with it. Its own writes take a revision above both
	// (the stamping rules refuse a stamp at or below a commit).
	Committed int64
	Leases    Leases
	Events    []Event
}

// readRevision is the revision the command's reads of the store are at:
// every version the range holds before the command.
func (a *Applier) readRevision() int64 { return max(a.Meta.Revision, a.Committed) }

// reader is what the applier's reads see: the batch being applied, with its
// own writes, or Reader for a read-only txn.
func (a *Applier) reader() pebble.Reader {
	if a.Batch != nil {
		return a.Batch
	}
	return a.Reader
}

// index is the index of the keys live in reader(), or nil.
func (a *Applier) index() keyindex.Reader {
	switch {
	case a.Batch != nil && a.Live != nil:
		return a.Live
	case a.Batch == nil && a.LiveSnapshot != nil:
		return a.LiveSnapshot
	}
	return nil
}

// BuildIndex builds the index of the keys live in r at revision rev.
func BuildIndex(r pebble.Reader, rev int64) (*keyindex.Index, error) {
	return BuildIndexIn(r, rev, nil, nil)
}

// BuildIndexIn is BuildIndex for the user keys [start, end) (an empty end:
// to the end of the keyspace): a data range's.
func BuildIndexIn(r pebble.Reader, rev int64, start, end []byte) (*keyindex.Index, error) {
	return BuildIndexUpTo(r, rev, rev, start, end)
}

// BuildIndexUpTo is BuildIndexIn for a range that holds versions above its
// revision rev, up to upTo (transactions across ranges commit there below
// other ranges' revisions, and apply keeps them in the index): the index
// is at rev and holds the live keys at upTo.
func BuildIndexUpTo(r pebble.Reader, rev, upTo int64, start, end []byte) (*keyindex.Index, error) {
	x := keyindex.New(rev)
	err := mvcc.LiveIn(r, max(rev, upTo), start, end, func(kv *mvccpb.KeyValue) error {
		x.Put(indexEntry(kv))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index live keys at revision %d: %w", rev, err)
	}
	return x, nil
}

// indexEntry is the index entry of a live version; the index copies the key.
func indexEntry(kv *mvccpb.KeyValue) keyindex.Entry {
	return keyindex.Entry{
		Key:            kv.Key,
		CreateRevision: kv.CreateRevision,
		ModRevision:    kv.ModRevision,
		Version:        kv.Version,
		Lease:          kv.Lease,
	}
}
