package txnlock

import (
	"encoding/json"
	"fmt"
)

// Prewrite locks a transaction's spans in one range and records its writes
// there (raftcmd.KindTxnPrewrite). The prewrite of the primary's range
// (Primary set) also writes the transaction's record, pending.
type Prewrite struct {
	Locks
	// IsPrimary is set on the prewrite of the range of the primary key.
	IsPrimary bool `json:"ip,omitempty"`
	// Generation is the generation of the range's descriptor the
	// coordinator routed the prewrite with: a range whose span changed
	// since (a split) refuses it, so that no span the transaction names
	// goes unlocked (0: not checked).
	Generation uint64 `json:"g,omitempty"`
}

// Commit commits a transaction at Rev in the range of its primary key
// (raftcmd.KindTxnCommit): its record becomes committed, and its locks in
// that range are resolved. It fails if the record says aborted.
type Commit struct {
	Txn     int64  `json:"t"`
	Primary []byte `json:"p"`
	Rev     int64  `json:"r"`
}

// Resolve resolves a transaction's locks in one range (raftcmd.KindTxnResolve):
// its writes are made at Rev, or, with Rev 0 (aborted), dropped. Forget,
// sent to the range of the primary once every lock of the transaction is
// resolved, also deletes its record: a lock met later (none can be, but a
// replica that lags may still show one) finds no record, which reads as
// aborted, and its resolution is then a no-op where the lock is gone.
type Resolve struct {
	Txn    int64 `json:"t"`
	Rev    int64 `json:"r,omitempty"`
	Forget bool  `json:"f,omitempty"`
}

// Push asks the record of a transaction where it stands, in the range of
// its primary key (raftcmd.KindTxnPush). A pending record past its deadline
// at Now (Unix milliseconds, the pusher's clock), or any pending one when
// Abort is set, becomes aborted. A missing record reads as pending until
// Deadline (the deadline of the lock the pusher met: the primary's
// prewrite may still be on its way), then, or at once with Abort, it is
// written aborted, so that a late prewrite of the primary fails. The
// result is the Record.
type Push struct {
	Txn      int64  `json:"t"`
	Primary  []byte `json:"p"`
	Now      int64  `json:"n"`
	Deadline int64  `json:"d,omitempty"`
	Abort    bool   `json:"a,omitempty"`
}

// EncodeCommand returns the payload of a Prewrite, Commit, Resolve or Push.
func EncodeCommand(v any) []byte { return Encode(v) }

// DecodeCommand decodes the payload of a command into v (a pointer to one
// of the command types).
func DecodeCommand(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %T: %w", v, err)
	}
	return nil
}
