package kv

import (
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/synod-io/synod/internal/keyindex"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/txnlock"
)

// writeRevision chooses the revision of the writes of the next command. It is
// the only place that does: the revision the command was stamped with
// (Applier.Revision), or the store's plus one for a command without one (or
// a stamp not above the store's revision, which the stamping rules exclude:
// a range's stamps increase with its log).
func (a *Applier) writeRevision() int64 {
	if a.Revision > a.Meta.Revision {
		return a.Revision
	}
	return a.Meta.Revision + 1
}

// WriteRevision returns the revision the next command's writes take (for
// an extension that records it besides them).
func (a *Applier) WriteRevision() int64 { return a.writeRevision() }

// command tracks the writes of one command while it is applied.
type command struct {
	a       *Applier
	baseRev int64 // Meta.Revision before the command
	rev     int64 // revision of the command's writes
	sub     int32 // sub-revision of the next write
	written bool  // whether anything has been written
	// atRev marks the writes of a transaction across ranges, made at the
	// revision it committed at, which may lie below the store's: they
	// leave Meta.Revision and the index's revision where they are.
	atRev bool
}

// indexRev is the revision the index of live keys must be at for the
// command to use it.
func (c *command) indexRev() int64 {
	if c.atRev {
		return c.baseRev
	}
	return c.currentRev()
}

// setIndexRevision moves the index's revision to the command's, unless the
// command writes at a revision of its own.
func (c *command) setIndexRevision(x *keyindex.Index) {
	if !c.atRev {
		x.SetRevision(c.rev)
	}
}

// ApplyAt makes the writes of a transaction across ranges that committed
// at rev (txnlock): puts of the keys with their values and leases, and
// deletions, all at rev, which may lie below the store's revision (the
// transaction's locks kept every key it writes unchanged since it read
// them, so each key's newest version is below rev). Meta.Revision stays:
// it follows the range's stamped log, on which the closed revision of the
// range rests.
func (a *Applier) ApplyAt(rev int64, writes []txnlock.Write) error {
	c := &command{a: a, baseRev: a.Meta.Revision, rev: rev, atRev: true}
	for _, w := range writes {
		var err error
		if w.Delete {
			_, err = c.deleteRange(&pb.DeleteRangeRequest{Key: w.Key})
		} else {
			_, err = c.put(&pb.PutRequest{Key: w.Key, Value: w.Value, Lease: w.Lease})
		}
		if err != nil {
			return fmt.Errorf("write %q at %d: %w", w.Key, rev, err)
		}
	}
	return nil
}

func (a *Applier) begin() *command {
	return &command{a: a, baseRev: a.Meta.Revision, rev: a.writeRevision()}
}

// addWrites records n writes.
func (c *command) addWrites(n int) {
	if n > 0 {
		c.sub += int32(n)
		c.written = true
	}
}

// currentRev is the store's revision as seen from inside the command: the
// command's own revision once it has written something.
func (c *command) currentRev() int64 {
	if c.written {
		return c.rev
	}
	return c.baseRev
}

// headerRev is the revision of the command's response: its writes', or,
// if it wrote nothing, what its reads saw (readRevision).
func (c *command) headerRev() int64 {
	if c.written {
		return c.rev
	}
	return c.a.readRevision()
}

// finish advances Meta.Revision, once, if the command wrote anything.
func (c *command) finish() {
	if c.written {
		c.a.Meta.Revision = c.rev
	}
}

// Put applies a put request.
func (a *Applier) Put(r *pb.PutRequest) (*pb.PutResponse, error) {
	if len(r.GetKey()) == 0 {
		return nil, rpctypes.ErrGRPCEmptyKey
	}
	// etcd checks the lease before the key a put ignoring value or lease
	// needs.
	if err := a.checkLease(r.GetLease()); err != nil {
		return nil, err
	}
	if err := a.checkPutTarget(r, nil); err != nil {
		return nil, err
	}
	c := a.begin()
	resp, err := c.put(r)
	if err != nil {
		return nil, err
	}
	c.finish()
	return resp, nil
}

// DeleteRange applies a delete request.
func (a *Applier) DeleteRange(r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if len(r.GetKey()) == 0 {
		return nil, rpctypes.ErrGRPCEmptyKey
	}
	c := a.begin()
	resp, err := c.deleteRange(r)
	if err != nil {
		return nil, err
	}
	c.finish()
	return resp, nil
}

// Compact records a compaction at the requested revision. The versions it
// makes unreachable are removed later by mvcc.Compact.
func (a *Applier) Compact(r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	rev := r.GetRevision()
	if rev > a.Meta.Revision {
		return nil, rpctypes.ErrGRPCFutureRev
	}
	if rev <= a.Meta.CompactRevision {
		return nil, rpctypes.ErrGRPCCompacted
	}
	a.Meta.CompactRevision = rev
	return &pb.CompactionResponse{Header: &pb.ResponseHeader{Revision: a.Meta.Revision}}, nil
}

// CompactAt records a compaction at the requested revision like Compact,
// raising the store's revision to it when it is below (raftcmd.KindCompactAt:
// the caller made sure no write at or below it can still come).
func (a *Applier) CompactAt(r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if r.GetRevision() <= a.Meta.CompactRevision {
		return nil, rpctypes.ErrGRPCCompacted
	}
	if rev := r.GetRevision(); rev > a.Meta.Revision {
		a.Meta.Revision = rev
		if x := a.Live; x != nil {
			x.SetRevision(rev)
		}
	}
	return a.Compact(r)
}

// checkLease fails unless lease is 0 (none) or exists.
func (a *Applier) checkLease(lease int64) error {
	if lease == 0 {
		return nil
	}
	if a.Leases == nil {
		return rpctypes.ErrGRPCLeaseNotFound
	}
	ok, err := a.Leases.Exists(lease)
	if err != nil {
		return fmt.Errorf("look up lease %x: %w", lease, err)
	}
	if !ok {
		return rpctypes.ErrGRPCLeaseNotFound
	}
	return nil
}

// checkPutTarget fails when a put ignoring its value or lease targets a key
// that does not exist. pending describes the writes the put follows within
// its command (nil outside a txn).
func (a *Applier) checkPutTarget(r *pb.PutRequest, pending *pendingWrites) error {
	if !r.GetIgnoreValue() && !r.GetIgnoreLease() {
		return nil
	}
	exists, err := pending.exists(r.GetKey(), func(key []byte) (bool, error) {
		kv, err := mvcc.Get(a.Batch, key, a.readRevision())
		return kv != nil, err
	})
	if err != nil {
		return fmt.Errorf("read %q: %w", r.GetKey(), err)
	}
	if !exists {
		return rpctypes.ErrGRPCKeyNotFound
	}
	return nil
}

// put writes a put request whose checks passed.
func (c *command) put(r *pb.PutRequest) (*pb.PutResponse, error) {
	key, value, lease := r.GetKey(), r.GetValue(), r.GetLease()
	var cur *mvccpb.KeyValue // the live version, when the request needs it
	if r.GetIgnoreValue() || r.GetIgnoreLease() {
		var err error
		cur, err = mvcc.Get(c.a.Batch, key, c.rev)
		if err != nil {
			return nil, fmt.Errorf("read %q: %w", key, err)
		}
		if cur == nil {
			// Prevented by the checks; reaching it means they are wrong.
			return nil, fmt.Errorf("put %q: key vanished after its existence was checked", key)
		}
		if r.GetIgnoreValue() {
			value = cur.Value
		}
		if r.GetIgnoreLease() {
			lease = cur.Lease
		}
	}
	var prev, kv *mvccpb.KeyValue
	var err error
	var old keyindex.Entry
	live, unread := false, false
	x := c.a.Live
	indexed := x != nil && x.Revision() == c.indexRev()
	if indexed {
		old, live = x.Get(key)
	}
	switch {
	case indexed && !live:
		// Not live: there is no previous version to read, and a new key
		// (the common case) would cost a seek through every level.
		kv, err = mvcc.PutNew(c.a.Batch, key, value, lease, c.rev, c.sub)
	case indexed && !r.GetPrevKv():
		// Live: the index knows the previous version's revisions and lease,
		// all the new version needs. Its value is read only if a watcher
		// asks for it (Event.ReadPrev); reading it here cost a seek through
		// every level of the store for every overwrite (ignore_value and
		// ignore_lease have read it already).
		prev = cur
		if prev == nil {
			prev = &mvccpb.KeyValue{Key: old.Key, CreateRevision: old.CreateRevision, ModRevision: old.ModRevision, Version: old.Version, Lease: old.Lease}
			unread = true
		}
		kv, err = mvcc.PutKnown(c.a.Batch, key, value, lease, c.rev, c.sub, old.CreateRevision, old.Version+1)
	case c.a.Writer != nil:
		prev, kv, err = c.a.Writer.Put(key, value, lease, c.rev, c.sub)
	default:
		prev, kv, err = mvcc.Put(c.a.Batch, key, value, lease, c.rev, c.sub)
	}
	if err != nil {
		return nil, err
	}
	c.addWrites(1)
	if err := c.moveLease(key, prev.GetLease(), lease); err != nil {
		return nil, err
	}
	if x := c.a.Live; x != nil {
		x.Put(indexEntry(kv))
		c.setIndexRevision(x)
	}
	c.a.Events = append(c.a.Events, Event{Type: mvccpb.Event_PUT, KV: kv, PrevKV: prev, PrevValueUnread: unread})
	resp := &pb.PutResponse{Header: &pb.ResponseHeader{Revision: c.rev}}
	if r.GetPrevKv() {
		resp.PrevKv = prev
	}
	return resp, nil
}

// moveLease moves key's attachment from lease from to lease to (0: none).
func (c *command) moveLease(key []byte, from, to int64) error {
	if from == to || c.a.Leases == nil {
		return nil
	}
	if from != 0 {
		if err := c.a.Leases.Detach(from, key); err != nil {
			return fmt.Errorf("detach %q from lease %x: %w", key, from, err)
		}
	}
	if to != 0 {
		if err := c.a.Leases.Attach(to, key); err != nil {
			return fmt.Errorf("attach %q to lease %x: %w", key, to, err)
		}
	}
	return nil
}

// deleteRange deletes the keys a delete request selects.
func (c *command) deleteRange(r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	start, end := rangeBounds(r.GetKey(), r.GetRangeEnd())
	prevs, err := mvcc.DeleteRange(c.a.Batch, start, end, c.rev, c.sub)
	if err != nil {
		return nil, err
	}
	c.addWrites(len(prevs))
	for _, prev := range prevs {
		if err := c.moveLease(prev.Key, prev.Lease, 0); err != nil {
			return nil, err
		}
		tombstone := &mvccpb.KeyValue{Key: prev.Key, ModRevision: c.rev}
		c.a.Events = append(c.a.Events, Event{Type: mvccpb.Event_DELETE, KV: tombstone, PrevKV: prev})
		if x := c.a.Live; x != nil {
			x.Delete(prev.Key)
			c.setIndexRevision(x)
		}
	}
	resp := &pb.DeleteRangeResponse{
		Header:  &pb.ResponseHeader{Revision: c.headerRev()},
		Deleted: int64(len(prevs)),
	}
	if r.GetPrevKv() {
		resp.PrevKvs = prevs
	}
	return resp, nil
}
