package txnlock

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
)

// Status is where a transaction stands, as its record says.
type Status uint8

// The statuses of a transaction record.
const (
	Pending   Status = 1
	Committed Status = 2
	Aborted   Status = 3
)

func (s Status) String() string {
	switch s {
	case Pending:
		return "pending"
	case Committed:
		return "committed"
	case Aborted:
		return "aborted"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Record is a transaction's record, kept by the range of its primary key.
type Record struct {
	Status Status `json:"s"`
	// CommitRev is the revision the transaction committed at (Committed).
	CommitRev int64 `json:"c,omitempty"`
	// Deadline (Unix milliseconds) is when a pending transaction may be
	// aborted by whoever meets one of its locks: its coordinator is then
	// presumed dead.
	Deadline int64 `json:"d,omitempty"`
	// Primary is the transaction's primary key, which says the range the
	// record belongs to (a split moves it with its key). Records written
	// before it was kept lack it.
	Primary []byte `json:"p"`
}

// Span is a span of user keys, [Start, End) (End nil: every key from Start
// on), as kv.RangeBounds gives an etcd key range.
type Span struct {
	Start []byte `json:"s"`
	End   []byte `json:"e,omitempty"`
}

// Contains reports whether key lies in s.
func (s Span) Contains(key []byte) bool {
	return bytes.Compare(key, s.Start) >= 0 && (s.End == nil || bytes.Compare(key, s.End) < 0)
}

// Clip returns the part of s within [start, end) (end nil: no bound), and
// whether it is not empty.
func (s Span) Clip(start, end []byte) (Span, bool) {
	out := s
	if bytes.Compare(out.Start, start) < 0 {
		out.Start = start
	}
	if end != nil && (out.End == nil || bytes.Compare(out.End, end) > 0) {
		out.End = end
	}
	return out, out.End == nil || bytes.Compare(out.Start, out.End) < 0
}

// Overlaps reports whether s and o share a key.
func (s Span) Overlaps(o Span) bool {
	return (o.End == nil || bytes.Compare(s.Start, o.End) < 0) && (s.End == nil || bytes.Compare(o.Start, s.End) < 0)
}

// Write is one write a transaction makes at its commit: a put of Key with
// Value and Lease, or its deletion.
type Write struct {
	Key    []byte `json:"k"`
	Value  []byte `json:"v,omitempty"`
	Lease  int64  `json:"l,omitempty"`
	Delete bool   `json:"d,omitempty"`
}

// Locks is what one transaction holds in one range: the spans it read or
// writes (no other write may touch them, and a read above the transaction's
// start must resolve it first) and the writes it makes there at its commit.
type Locks struct {
	// Txn identifies the transaction: its read revision R, which the
	// oracle handed out to it alone.
	Txn int64 `json:"t"`
	// Primary is the transaction's primary key: its record is in the
	// range that holds it.
	Primary []byte `json:"p"`
	// Floor is a revision the transaction's commit revision is above:
	// the higher of Txn and the range's revision when the locks were
	// taken (the commit revision comes from the oracle after that).
	Floor int64 `json:"f"`
	// Deadline is the record's deadline when the locks were taken.
	Deadline int64   `json:"d"`
	Spans    []Span  `json:"sp"`
	Writes   []Write `json:"w,omitempty"`
	// Leases are the transaction's holds on leases, in the range that
	// keeps the lease table (the first data range) only.
	Leases []LeaseLock `json:"l,omitempty"`
	// RevokeLease, set on every range a revocation of that lease locks
	// keys in, makes the prewrite write the deletion of each key of Spans
	// (single keys) that is attached to the lease when it applies: the
	// lock keeps it so until the commit.
	RevokeLease int64 `json:"rl,omitempty"`
}

// LeaseLock is a transaction's hold on a lease, in the range that keeps
// the lease table. A prewrite taking it fails if the lease does not exist
// (etcd's "requested lease not found"). Revoke holds are exclusive, others
// shared: no key is attached to a lease while its revocation runs, and a
// revocation waits for the transactions attaching keys to it.
type LeaseLock struct {
	ID int64 `json:"i"`
	// Revoke: the transaction revokes the lease at its commit (deletes its
	// record and what the table keeps of its keys).
	Revoke bool `json:"r,omitempty"`
	// Known (with Revoke) are the keys the coordinator found attached to
	// the lease, which the transaction deletes: the prewrite fails with a
	// ConflictError if the table holds any other.
	Known [][]byte `json:"k,omitempty"`
	// Attach are keys of other ranges the transaction puts with the lease:
	// the table records them at its commit.
	Attach [][]byte `json:"a,omitempty"`
}

// Overlaps returns whether any of l's spans overlaps s.
func (l *Locks) Overlaps(s Span) bool {
	for _, ls := range l.Spans {
		if ls.Overlaps(s) {
			return true
		}
	}
	return false
}

// Encode returns the stored form of v (a Record or Locks).
func Encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("txnlock: encode %T: %v", v, err)) // plain data: cannot fail
	}
	return b
}

// DecodeRecord decodes a stored record.
func DecodeRecord(b []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("decode txn record: %w", err)
	}
	return r, nil
}

// DecodeLocks decodes stored locks.
func DecodeLocks(b []byte) (*Locks, error) {
	l := &Locks{}
	if err := json.Unmarshal(b, l); err != nil {
		return nil, fmt.Errorf("decode txn locks: %w", err)
	}
	return l, nil
}

// Table is the locks a range holds, by transaction, in memory. A Table is
// immutable: With and Without return changed copies, so that readers can
// keep the one published with a state while apply moves on.
type Table struct {
	locks []*Locks // by Txn
}

// Len returns how many transactions hold locks.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.locks)
}

// All returns the locks, by transaction; the caller must not change them.
func (t *Table) All() []*Locks {
	if t == nil {
		return nil
	}
	return t.locks
}

// Get returns the locks of transaction txn, or nil.
func (t *Table) Get(txn int64) *Locks {
	if t == nil {
		return nil
	}
	i, ok := slices.BinarySearchFunc(t.locks, txn, func(l *Locks, txn int64) int { return cmp.Compare(l.Txn, txn) })
	if !ok {
		return nil
	}
	return t.locks[i]
}

// With returns t with l added (replacing the same transaction's).
func (t *Table) With(l *Locks) *Table {
	n := &Table{locks: slices.Clone(t.All())}
	i, ok := slices.BinarySearchFunc(n.locks, l.Txn, func(x *Locks, txn int64) int { return cmp.Compare(x.Txn, txn) })
	if ok {
		n.locks[i] = l
	} else {
		n.locks = slices.Insert(n.locks, i, l)
	}
	return n
}

// Without returns t without transaction txn's locks.
func (t *Table) Without(txn int64) *Table {
	n := &Table{locks: slices.Clone(t.All())}
	n.locks = slices.DeleteFunc(n.locks, func(l *Locks) bool { return l.Txn == txn })
	return n
}

// Conflict returns the locks of a transaction other than except that
// overlap s, or nil.
func (t *Table) Conflict(s Span, except int64) *Locks {
	for _, l := range t.All() {
		if l.Txn != except && l.Overlaps(s) {
			return l
		}
	}
	return nil
}

// LeaseConflict returns the locks of a transaction other than except that
// hold lease id in a way a hold of it (exclusive with revoke) excludes, or
// nil.
func (t *Table) LeaseConflict(id int64, revoke bool, except int64) *Locks {
	for _, l := range t.All() {
		if l.Txn == except {
			continue
		}
		for _, ll := range l.Leases {
			if ll.ID == id && (revoke || ll.Revoke) {
				return l
			}
		}
	}
	return nil
}

// Floor returns the lowest Floor of the locks, or 0 when there are none:
// no transaction holding locks here commits at or below it.
func (t *Table) Floor() int64 {
	var f int64
	for _, l := range t.All() {
		if f == 0 || l.Floor < f {
			f = l.Floor
		}
	}
	return f
}

// LockedError is the result of a command that met another transaction's
// locks: the proposer resolves them (LockInfo) and proposes it again.
type LockedError struct {
	Txn      int64
	Primary  []byte
	Deadline int64
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("synod: keys locked by transaction %d (primary %q)", e.Txn, e.Primary)
}

// Locked returns the LockedError for l.
func Locked(l *Locks) *LockedError {
	return &LockedError{Txn: l.Txn, Primary: l.Primary, Deadline: l.Deadline}
}

// TooOldError is the result of a command stamped with a revision below a
// version of a key it names (a transaction committed there above it): the
// proposer proposes it again, to be stamped anew.
type TooOldError struct{ Stamp, Newer int64 }

func (e *TooOldError) Error() string {
	return fmt.Sprintf("synod: command stamped %d meets a version at %d", e.Stamp, e.Newer)
}

// ConflictError is the result of a prewrite that found a version of a key
// it locks above the transaction's read revision: the transaction runs
// again from a new one.
type ConflictError struct{ Txn, Newer int64 }

func (e *ConflictError) Error() string {
	return fmt.Sprintf("synod: transaction %d meets a version at %d", e.Txn, e.Newer)
}

// AbortedError is the result of a prewrite or commit of a transaction whose
// record says it was aborted.
type AbortedError struct{ Txn int64 }

func (e *AbortedError) Error() string {
	return fmt.Sprintf("synod: transaction %d was aborted", e.Txn)
}
