package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangedesc"
	"github.com/synod-io/synod/internal/txnlock"
)

// Transactions across data ranges (issue 15, step 3): Percolator's
// two-phase commit over the ranges' Raft groups, coordinated by the node
// the client reached. See internal/txnlock and docs/design.md, "Ranges".
//
//  1. R from the oracle with read fences on every range the txn names;
//     locks of other transactions that started below R are resolved
//     (waited for while their coordinator is alive), so the store at R is
//     final on those ranges.
//  2. The txn is evaluated at R (kv's own apply code, in a batch that is
//     thrown away): the branch, its reads, and the writes it makes. A txn
//     that writes nothing is answered at R.
//  3. Prewrite: every range locks the spans the txn names there (its
//     compares and operations, both branches) and records its writes, all
//     at once; the primary key's range also writes the txn's record. A
//     prewrite fails if another transaction holds one of the spans, or if
//     a key in them changed after R; the coordinator then aborts its own
//     record, drops what it locked, waits for the other transaction if
//     there is one, and runs the txn again from a new R.
//  4. C from the oracle; the response is evaluated again with C as the
//     writes' revision; the record is committed at C (the commit point);
//     then every other range makes its writes at C and drops its locks.

// txnLockTTL is how long a transaction's locks hold against others before
// whoever meets them may abort it: its coordinator is then presumed dead.
func (s *Server) txnLockTTL() time.Duration { return 4 * s.ElectionTimeout() }

// placeholderGap puts the writes of a txn's first evaluation above any
// revision the oracle can have handed out since its read revision.
const placeholderGap = 1 << 40

// errTxnRetry makes crossRangeTxn run the txn again from a new revision.
var errTxnRetry = errors.New("retry the transaction")

// crossRangeTxn runs a write txn whose keys lie in several data ranges
// atomically.
func (s *Server) crossRangeTxn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	spans := txnSpans(req)
	wait := time.Millisecond
	for {
		set := s.descs.Load()
		resp, err := s.tryCrossRangeTxn(ctx, req, set, spans)
		if isRangeChanged(err) {
			// A split changed the ranges it was routed to (Propose
			// routes it again).
			return nil, err
		}
		if !errors.Is(err, errTxnRetry) {
			if err != nil {
				s.metrics.CrossRangeTxns.WithLabelValues("failed").Inc()
				if ctx.Err() != nil {
					return nil, ctxError(ctx)
				}
			}
			return resp, err
		}
		s.metrics.TxnRetries.Inc()
		// Two transactions that abort each other back off apart.
		select {
		case <-ctx.Done():
			return nil, ctxError(ctx)
		case <-time.After(wait/2 + rand.N(wait)):
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// ctxError is the error of a request whose context ended: cancelled by the
// client, or past its deadline.
func ctxError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return rpctypes.ErrGRPCTimeout
	}
	return ctx.Err()
}

// txnSpans returns the spans a txn names.
func txnSpans(req *pb.TxnRequest) []txnlock.Span {
	var spans []txnlock.Span
	kv.TxnKeys(req, func(key, end []byte, _ int64) bool {
		s, e := kv.RangeBounds(key, end)
		spans = append(spans, txnlock.Span{Start: s, End: e})
		return true
	})
	return spans
}

// evalTxn evaluates req on the store at rev, writing at writeRev (0: the
// next revision), in a batch that is thrown away, and returns the
// response and the writes.
func (s *Server) evalTxn(req *pb.TxnRequest, meta kv.Meta, writeRev int64) (*pb.TxnResponse, []txnlock.Write, error) {
	b := s.db.NewIndexedBatch()
	defer b.Close()
	// Leases are the first range's to check, at the prewrite: here every
	// lease exists.
	a := kv.Applier{Batch: b, Meta: &meta, Revision: writeRev, Leases: anyLease{}}
	resp, err := a.Txn(req)
	if err != nil {
		return nil, nil, err
	}
	var writes []txnlock.Write
	for _, ev := range a.Events {
		w := txnlock.Write{Key: ev.KV.Key}
		if ev.Type == mvccpb.DELETE {
			w.Delete = true
		} else {
			w.Value, w.Lease = ev.KV.Value, ev.KV.Lease
		}
		writes = append(writes, w)
	}
	return resp, writes, nil
}

func (s *Server) tryCrossRangeTxn(ctx context.Context, req *pb.TxnRequest, set *rangedesc.Set, spans []txnlock.Span) (*pb.TxnResponse, error) {
	var r router
	r.txn(set, req)
	ids := r.ids
	rev, err := s.fenceRanges(ctx, ids)
	if err != nil {
		return nil, err
	}
	if err := s.resolveLocksBelow(ctx, ids, rev, spans); err != nil {
		return nil, err
	}
	compact, err := compactRevisionIn(s.db, ids)
	if err != nil {
		return nil, err
	}
	if compact > rev {
		return nil, errTxnRetry // a compaction overtook R
	}
	meta := kv.Meta{Revision: rev, CompactRevision: compact}
	// The store may hold versions above R of keys the txn names (the
	// prewrite will find them, and the txn runs again): its writes are
	// made far above R here, so that they go above those.
	resp, writes, err := s.evalTxn(req, meta, rev+placeholderGap)
	if err != nil {
		return nil, err // etcd's own error, as applying it at R gives (or a storage error)
	}
	if len(writes) == 0 {
		// The branch taken writes nothing: a read at R.
		if !s.sameRanges(set, ids) {
			return nil, datarange.ErrRangeChanged // read at R from ranges that split
		}
		s.metrics.CrossRangeTxns.WithLabelValues("read").Inc()
		resp.Header.Revision = rev
		return resp, nil
	}

	primary := writes[0].Key
	primaryRange := set.Lookup(primary).RangeID
	deadline := time.Now().Add(s.txnLockTTL()).UnixMilli()
	prewrites := map[keys.RangeID]*txnlock.Prewrite{}
	for _, id := range ids {
		d, _ := set.Get(id)
		prewrites[id] = &txnlock.Prewrite{Locks: txnlock.Locks{Txn: rev, Primary: primary, Deadline: deadline}, IsPrimary: id == primaryRange, Generation: d.Generation}
	}
	for _, sp := range spans {
		var end []byte
		if sp.End != nil {
			end = sp.End
		} else {
			end = []byte{0}
		}
		for _, d := range set.Overlapping(sp.Start, end) {
			p := prewrites[d.RangeID]
			var dEnd []byte
			if len(d.End) > 0 {
				dEnd = d.End
			}
			if c, ok := sp.Clip(d.Start, dEnd); p != nil && ok {
				p.Spans = append(p.Spans, c)
			}
		}
	}
	for _, w := range writes {
		id := set.Lookup(w.Key).RangeID
		p := prewrites[id]
		if p == nil {
			return nil, fmt.Errorf("txn writes %q in range %d, which it does not name", w.Key, id)
		}
		p.Writes = append(p.Writes, w)
	}
	if _, ok := prewrites[primaryRange]; !ok {
		return nil, fmt.Errorf("primary %q in range %d, which the txn does not name", primary, primaryRange)
	}
	if held := leaseHolds(set, writes); len(held) > 0 {
		// The first range keeps the lease table: it checks the leases
		// exist, holds them against revocation until the commit, and
		// records the keys of other ranges put with one.
		p := prewrites[keys.FirstDataRangeID]
		if p == nil {
			d, _ := set.Get(keys.FirstDataRangeID)
			p = &txnlock.Prewrite{Locks: txnlock.Locks{Txn: rev, Primary: primary, Deadline: deadline}, Generation: d.Generation}
			prewrites[keys.FirstDataRangeID] = p
			ids = append(slices.Clone(ids), keys.FirstDataRangeID)
		}
		p.Leases = held
	}
	run := &txnRun{txn: rev, primary: primary, primaryRange: primaryRange, ids: ids, prewrites: prewrites, cost: quotaCost(req)}
	var final *pb.TxnResponse
	commitRev, err := s.commitRun(ctx, run, func(commitRev int64) error {
		var finalWrites []txnlock.Write
		var eerr error
		final, finalWrites, eerr = s.evalTxn(req, meta, commitRev)
		if eerr != nil || !sameWrites(writes, finalWrites) {
			// The locks keep every key the txn names as it was at R: a bug.
			s.logger.Error("txn evaluated again at its commit revision differs", "txn", rev, "err", eerr)
			return errTxnRetry
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.metrics.CrossRangeTxns.WithLabelValues("committed").Inc()
	final.Header.Revision = commitRev
	return final, nil
}

// leaseHolds returns the holds on leases (in the first range) of a txn
// that makes writes: one per lease a put names, with the keys of other
// ranges put with it.
func leaseHolds(set *rangedesc.Set, writes []txnlock.Write) []txnlock.LeaseLock {
	var held []txnlock.LeaseLock
	for _, w := range writes {
		if w.Lease == 0 {
			continue
		}
		i := slices.IndexFunc(held, func(l txnlock.LeaseLock) bool { return l.ID == w.Lease })
		if i < 0 {
			i = len(held)
			held = append(held, txnlock.LeaseLock{ID: w.Lease})
		}
		if set.Lookup(w.Key).RangeID != keys.FirstDataRangeID {
			held[i].Attach = append(held[i].Attach, w.Key)
		}
	}
	return held
}

// txnRun is one run of a transaction across ranges, from its prewrites on:
// what it locks and writes in each range.
type txnRun struct {
	// txn is its read revision R, which names it.
	txn          int64
	primary      []byte
	primaryRange keys.RangeID
	// ids are the ranges it prewrites, the primary's among them.
	ids       []keys.RangeID
	prewrites map[keys.RangeID]*txnlock.Prewrite
	// cost is what it may add to the replicated state (quotaCost).
	cost int64
	// primaryTerm, if set, fences the primary's prewrite and the commit
	// to that term of its range (a lease revocation the lessor decided as
	// its leader).
	primaryTerm uint64
}

// commitRun prewrites every range of a run at once, takes the commit
// revision C from the oracle, asks atCommit whether the run may commit at
// C, commits the record at C (the commit point) and resolves the other
// ranges' locks at C. It returns C, or errTxnRetry when the run must start
// again (the prewrite met another transaction, or a version above R; the
// record was aborted), having aborted the run.
func (s *Server) commitRun(ctx context.Context, r *txnRun, atCommit func(commitRev int64) error) (int64, error) {
	// The prewrites carry how the request was authorized (each range
	// refuses one checked in an older auth state: etcd's fence); the
	// other commands act for a transaction already past it.
	fenced := ctx
	ctx = auth.WithoutFence(ctx)
	rev, primary, primaryRange := r.txn, r.primary, r.primaryRange

	// Every range at once: whoever meets a lock before the primary's
	// record exists reads the transaction as pending until the lock's
	// deadline (then aborts it, and the primary's prewrite, if it comes
	// that late, fails).
	var secondaries []keys.RangeID
	for _, id := range r.ids {
		if id != primaryRange {
			secondaries = append(secondaries, id)
		}
	}
	errs := make([]error, len(r.ids))
	var wg sync.WaitGroup
	for i, id := range r.ids {
		wg.Go(func() {
			var term uint64
			if id == primaryRange {
				term = r.primaryTerm
			}
			_, errs[i] = s.proposeIn(fenced, id, raftcmd.KindTxnPrewrite, txnlock.EncodeCommand(r.prewrites[id]), term, r.cost)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return 0, s.afterFailedPrewrite(ctx, rev, primary, primaryRange, secondaries, r.ids[i], err)
		}
	}

	c, err := s.Revisions(ctx, 1)
	if err != nil {
		s.abortTxn(ctx, rev, primary, primaryRange, secondaries)
		return 0, err
	}
	commitRev := int64(c)
	if err := atCommit(commitRev); err != nil {
		s.abortTxn(ctx, rev, primary, primaryRange, secondaries)
		return 0, err
	}
	// A fenced run commits in the term it prewrote in too: a lessor
	// deposed meanwhile must not revoke a lease its successor renewed.
	_, err = s.proposeIn(ctx, primaryRange, raftcmd.KindTxnCommit, txnlock.EncodeCommand(&txnlock.Commit{Txn: rev, Primary: primary, Rev: commitRev}), r.primaryTerm, 0)
	var aborted *txnlock.AbortedError
	if err != nil && !errors.As(err, &aborted) {
		// The commit may or may not have applied: the record says, and
		// aborts the txn if it did not.
		out, perr := s.proposeTxnCommand(ctx, primaryRange, raftcmd.KindTxnPush, &txnlock.Push{Txn: rev, Primary: primary, Now: time.Now().UnixMilli(), Abort: true}, 0)
		rec, _ := out.(txnlock.Record)
		switch {
		case perr != nil:
			return 0, err // whoever meets the locks finds out
		case rec.Status == txnlock.Committed && rec.CommitRev == commitRev:
			err = nil
		default:
			err = &txnlock.AbortedError{Txn: rev}
		}
	}
	if errors.As(err, &aborted) {
		// Aborted by another node that found the txn past its deadline,
		// or by the push above.
		s.abortTxn(ctx, rev, primary, primaryRange, secondaries)
		return 0, errTxnRetry
	}
	if s.resolveTxnIn(ctx, rev, commitRev, secondaries) == nil {
		s.forgetTxn(rev, primaryRange)
	}
	return commitRev, nil
}

// anyLease is a lease table in which every lease exists and attachments
// are not recorded (kv.Leases).
type anyLease struct{}

func (anyLease) Exists(int64) (bool, error) { return true, nil }
func (anyLease) Attach(int64, []byte) error { return nil }
func (anyLease) Detach(int64, []byte) error { return nil }

// sameWrites reports whether two evaluations of a txn write the same.
func sameWrites(a, b []txnlock.Write) bool {
	return slices.EqualFunc(a, b, func(x, y txnlock.Write) bool {
		return string(x.Key) == string(y.Key) && string(x.Value) == string(y.Value) && x.Lease == y.Lease && x.Delete == y.Delete
	})
}

// afterFailedPrewrite handles a prewrite's failure: the txn's record is
// aborted and its locks dropped; if another transaction held a span, it
// is waited for; the txn then runs again, unless the failure says nothing
// about the locks (the request timed out, for one).
func (s *Server) afterFailedPrewrite(ctx context.Context, txn int64, primary []byte, primaryRange keys.RangeID, secondaries []keys.RangeID, id keys.RangeID, err error) error {
	var locked *txnlock.LockedError
	var conflict *txnlock.ConflictError
	var aborted *txnlock.AbortedError
	s.abortTxn(ctx, txn, primary, primaryRange, secondaries)
	switch {
	case errors.As(err, &locked):
		if err := s.resolveLock(ctx, id, locked); err != nil {
			return err
		}
		return errTxnRetry
	case errors.As(err, &conflict), errors.As(err, &aborted):
		return errTxnRetry
	case isRangeChanged(err):
		return datarange.ErrRangeChanged
	}
	return err
}

// abortTxn aborts transaction txn's record and drops its locks, as far as
// it can: what it cannot drop, whoever meets it drops once the record is
// aborted or past its deadline.
func (s *Server) abortTxn(ctx context.Context, txn int64, primary []byte, primaryRange keys.RangeID, secondaries []keys.RangeID) {
	if cur := s.descs.Load().Lookup(primary).RangeID; cur != primaryRange {
		// A split moved the primary's key (its prewrite was refused):
		// its record, if any, is where the key is now.
		secondaries = append(slices.Clone(secondaries), primaryRange)
		primaryRange = cur
	}
	if _, err := s.proposeTxnCommand(ctx, primaryRange, raftcmd.KindTxnPush, &txnlock.Push{Txn: txn, Primary: primary, Now: time.Now().UnixMilli(), Abort: true}, 0); err != nil {
		s.logger.Debug("abort txn", "txn", txn, "err", err)
		return // its secondaries' locks stay until it is pushed
	}
	if s.resolveTxnIn(ctx, txn, 0, secondaries) == nil {
		s.forgetTxn(txn, primaryRange)
	}
}

// forgetTxn deletes the record of transaction txn, whose locks are all
// resolved, in the background: the client's answer does not wait for it.
// A record left behind (the node stopped first) is a few bytes.
func (s *Server) forgetTxn(txn int64, primaryRange keys.RangeID) {
	s.goBackground(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
		if _, err := s.proposeTxnCommand(ctx, primaryRange, raftcmd.KindTxnResolve, &txnlock.Resolve{Txn: txn, Forget: true}, 0); err != nil {
			s.logger.Debug("forget txn record", "txn", txn, "err", err)
		}
	})
}

// resolveTxnIn resolves transaction txn's locks in the ranges ids at rev (0:
// aborted), all at once; it fails if a range did not.
func (s *Server) resolveTxnIn(ctx context.Context, txn, rev int64, ids []keys.RangeID) error {
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			_, errs[i] = s.proposeTxnCommand(ctx, id, raftcmd.KindTxnResolve, &txnlock.Resolve{Txn: txn, Rev: rev}, 0)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("resolve transaction %d in range %d: %w", txn, ids[i], err)
		}
	}
	return nil
}

// proposeTxnCommand proposes one of the commands of transactions across
// ranges in range id.
func (s *Server) proposeTxnCommand(ctx context.Context, id keys.RangeID, kind raftcmd.Kind, cmd any, cost int64) (any, error) {
	return s.proposeIn(ctx, id, kind, txnlock.EncodeCommand(cmd), 0, cost)
}

// resolveLock resolves the locks of a transaction that a command or a read
// met in range id: it asks the transaction's record (in the range of its
// primary), makes committed locks at their revision and drops aborted ones.
// While the transaction is pending it waits for its locks to leave this
// node's replica of range id (its coordinator resolves them), asking the
// record again now and then, and once its deadline passed (which aborts
// it).
func (s *Server) resolveLock(ctx context.Context, id keys.RangeID, l *txnlock.LockedError) error {
	ctx = auth.WithoutFence(ctx)
	wait := time.Millisecond
	var asked time.Time
	for {
		if !asked.IsZero() && !s.holdsLocksOf(id, l.Txn) {
			return nil // resolved meanwhile
		}
		now := time.Now()
		if asked.IsZero() || now.Sub(asked) >= txnAskInterval || now.UnixMilli() > l.Deadline {
			asked = now
			set := s.descs.Load()
			primaryRange := set.Lookup(l.Primary).RangeID
			out, err := s.proposeTxnCommand(ctx, primaryRange, raftcmd.KindTxnPush, &txnlock.Push{Txn: l.Txn, Primary: l.Primary, Now: now.UnixMilli(), Deadline: l.Deadline}, 0)
			if isRangeChanged(err) {
				// A split moved the primary's key: ask where it is now.
				if err := s.awaitNewDescriptors(ctx, set); err != nil {
					return err
				}
				asked = time.Time{}
				continue
			}
			if err != nil {
				return err
			}
			rec, ok := out.(txnlock.Record)
			if !ok {
				return fmt.Errorf("push of transaction %d returned %T", l.Txn, out)
			}
			if rec.Status != txnlock.Pending {
				s.metrics.TxnLocksResolved.WithLabelValues(rec.Status.String()).Inc()
				var others []keys.RangeID
				for _, d := range s.dataRanges() {
					if d != primaryRange && (d == id || s.holdsLocksOf(d, l.Txn)) {
						others = append(others, d)
					}
				}
				return s.resolveTxnIn(ctx, l.Txn, rec.CommitRev, others)
			}
		}
		// Pending: its coordinator is at work, or dead, and then the
		// deadline ends it.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// txnAskInterval is how often a node waiting for a pending transaction's
// locks asks its record again (each ask is a Raft command).
const txnAskInterval = 100 * time.Millisecond

// holdsLocksOf reports whether this node's replica of range id holds locks
// of transaction txn.
func (s *Server) holdsLocksOf(id keys.RangeID, txn int64) bool {
	pub := s.rangePublished(id)
	return pub != nil && datarange.Locks(pub.Derived).Get(txn) != nil
}

// resolveLocksBelow resolves, in the data ranges ids, the locks over spans
// (nil: any) of the transactions that started below rev: a read at rev must
// see what they commit at or below it. Locks taken later commit above rev.
// It returns once this node's replicas hold none of them.
func (s *Server) resolveLocksBelow(ctx context.Context, ids []keys.RangeID, rev int64, spans []txnlock.Span) error {
	for {
		id, l := s.lockBelow(ids, rev, spans)
		if l == nil {
			return nil
		}
		if err := s.resolveLock(ctx, id, txnlock.Locked(l)); err != nil {
			return err
		}
	}
}

// lockBelow returns a lock in this node's replicas of the ranges ids of a
// transaction that started below rev over one of spans (nil: any).
func (s *Server) lockBelow(ids []keys.RangeID, rev int64, spans []txnlock.Span) (keys.RangeID, *txnlock.Locks) {
	for _, id := range ids {
		pub := s.rangePublished(id)
		if pub == nil {
			continue
		}
		for _, l := range datarange.Locks(pub.Derived).All() {
			if l.Txn >= rev {
				continue
			}
			if spans == nil || slices.ContainsFunc(spans, l.Overlaps) {
				return id, l
			}
		}
	}
	return 0, nil
}

// expiredLocksLoop resolves, every close interval, the locks past their
// deadline in the data ranges this node leads: a coordinator that died
// leaves them, and they hold the ranges' closed revision (watches,
// serializable reads) back.
func (s *Server) expiredLocksLoop(ctx context.Context) {
	everyInterval(ctx, s.closeInterval(), func() { s.resolveExpiredLocks(ctx) })
}

// resolveExpiredLocks resolves the locks past their deadline in the data
// ranges this node leads.
func (s *Server) resolveExpiredLocks(ctx context.Context) {
	now := time.Now().UnixMilli()
	for _, id := range s.dataRanges() {
		pub := s.rangePublished(id)
		if pub == nil || !s.isRangeLeader(id) {
			continue
		}
		for _, l := range datarange.Locks(pub.Derived).All() {
			if l.Deadline >= now {
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
			if err := s.resolveLock(rctx, id, txnlock.Locked(l)); err != nil && ctx.Err() == nil {
				s.logger.Debug("resolve expired txn locks", "txn", l.Txn, "err", err)
			}
			cancel()
		}
	}
}

// TxnRecords returns how many transaction records this node's replicas of
// the data ranges hold: those of transactions whose locks are not all
// resolved yet, and the few left behind.
func (s *Server) TxnRecords() (int, error) {
	n := 0
	for _, id := range s.dataRanges() {
		span := keys.TxnRecordSpan(id)
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: span.Start, UpperBound: span.End})
		if err != nil {
			return 0, err
		}
		for valid := it.First(); valid; valid = it.Next() {
			n++
		}
		if err := it.Close(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// PendingLocks returns how many transactions hold locks in this node's
// replicas of the data ranges (summed over the ranges).
func (s *Server) PendingLocks() int {
	n := 0
	for _, id := range s.dataRanges() {
		if pub := s.rangePublished(id); pub != nil {
			n += datarange.Locks(pub.Derived).Len()
		}
	}
	return n
}
