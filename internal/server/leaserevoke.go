package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/lease"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangedesc"
	"github.com/synod-io/synod/internal/txnlock"
)

// Leases on keys of several ranges. The first data range keeps the lease
// table: the leases' records and every key attached to one, in any range
// (a put with a lease outside the first range is a transaction across
// ranges whose part in the first range records the key; see leaseHolds).
// A lease whose keys all lie in the first range is revoked by one command
// there, as with one range. Otherwise the first range refuses that command
// (datarange.ErrLeaseSpansRanges) and the lease is revoked by a transaction
// across ranges: it holds the lease exclusively in the first range (no key
// is attached to it meanwhile, and the keys the coordinator found must be
// all the table has), locks the keys in their ranges, and deletes, at its
// commit revision, those still attached to the lease, with the lease.

// errRevokeInOneRange says that every key of the lease lies in the first
// range now: one command revokes it.
var errRevokeInOneRange = errors.New("the lease's keys lie in one range")

// revokeLease revokes lease id: by one command in the first data range, or
// by a transaction across ranges when its keys lie in several. term, if
// set, fences the revocation to that term of the first range (the lessor's
// decision as its leader).
func (s *Server) revokeLease(ctx context.Context, id int64, term uint64) (*pb.LeaseRevokeResponse, error) {
	req := &pb.LeaseRevokeRequest{ID: id}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	for {
		var out any
		var err error
		if term != 0 {
			out, err = s.proposeFenced(ctx, raftcmd.KindLeaseRevoke, req, term)
		} else {
			out, err = s.Propose(ctx, raftcmd.KindLeaseRevoke, req)
		}
		if errors.Is(err, datarange.ErrLeaseSpansRanges) {
			var resp *pb.LeaseRevokeResponse
			resp, err = s.revokeAcrossRanges(ctx, id, term)
			if errors.Is(err, errRevokeInOneRange) {
				// This node's replica of the first range saw the lease's
				// keys in it alone, the range did not: it is behind a
				// split, or a key left.
				select {
				case <-ctx.Done():
					return nil, ctxError(ctx)
				case <-time.After(10 * time.Millisecond):
				}
				continue
			}
			if err == nil {
				s.tellLeaseRevoked(ctx, id)
			}
			return resp, err
		}
		if err != nil {
			return nil, err
		}
		resp, ok := out.(*pb.LeaseRevokeResponse)
		if !ok {
			return nil, fmt.Errorf("lease revoke returned %T", out)
		}
		return resp, nil
	}
}

// tellLeaseRevoked tells the first range's services that a lease a
// transaction across ranges revoked is gone (raftcmd.KindLeaseRevoked).
// If it fails, the range's leader does it (tellRevokedLeases).
func (s *Server) tellLeaseRevoked(ctx context.Context, id int64) {
	payload, err := proto.Marshal(&pb.LeaseRevokeRequest{ID: id})
	if err == nil {
		_, err = s.proposeIn(auth.WithoutFence(ctx), keys.FirstDataRangeID, raftcmd.KindLeaseRevoked, payload, 0, 0)
	}
	if err != nil {
		s.logger.Debug("tell services of a revoked lease", "lease", fmt.Sprintf("%x", id), "err", err)
	}
}

// tellRevokedLeases tells the services of the leases revoked across
// ranges that no revocation command told yet, while this node leads the
// first data range: in the background, one pass at a time, so that the
// lessor's loop, which calls it, never waits on a proposal.
func (s *Server) tellRevokedLeases() {
	if !s.isRangeLeader(keys.FirstDataRangeID) {
		return
	}
	ids, err := datarange.LeasesToTell(s.db, keys.FirstDataRangeID)
	if err != nil {
		s.logger.Warn("read revoked leases", "err", err)
		return
	}
	if len(ids) == 0 || !s.telling.CompareAndSwap(false, true) {
		return
	}
	s.goBackground(func(ctx context.Context) {
		defer s.telling.Store(false)
		for _, id := range ids {
			rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
			s.tellLeaseRevoked(rctx, id)
			cancel()
		}
	})
}

// revokeAcrossRanges revokes lease id by a transaction across the ranges
// of its keys, run again (from a new read revision) until it commits, the
// lease is gone, or the request's deadline passes.
func (s *Server) revokeAcrossRanges(ctx context.Context, id int64, term uint64) (*pb.LeaseRevokeResponse, error) {
	wait := time.Millisecond
	for {
		set := s.descs.Load()
		resp, err := s.tryRevokeAcrossRanges(ctx, set, id, term)
		switch {
		case isRangeChanged(err):
			// A split changed the ranges: route it again once this
			// node applied it.
			if err := s.awaitNewDescriptors(ctx, set); err != nil {
				return nil, err
			}
			continue
		case errors.Is(err, errTxnRetry):
			s.metrics.TxnRetries.Inc()
			select {
			case <-ctx.Done():
				return nil, ctxError(ctx)
			case <-time.After(wait/2 + rand.N(wait)):
			}
			wait = min(2*wait, 50*time.Millisecond)
			continue
		case err != nil:
			s.metrics.CrossRangeTxns.WithLabelValues("failed").Inc()
			if ctx.Err() != nil {
				return nil, ctxError(ctx)
			}
			return nil, err
		}
		s.metrics.CrossRangeTxns.WithLabelValues("committed").Inc()
		return resp, nil
	}
}

func (s *Server) tryRevokeAcrossRanges(ctx context.Context, set *rangedesc.Set, id int64, term uint64) (*pb.LeaseRevokeResponse, error) {
	first := keys.FirstDataRangeID
	// R names the transaction; the fence makes this node's replica of the
	// first range current enough that what it reads is worth a try (the
	// prewrite checks it).
	rev, err := s.fenceRanges(ctx, []keys.RangeID{first})
	if err != nil {
		return nil, err
	}
	if _, ok, err := lease.Get(s.db, id); err != nil {
		return nil, err
	} else if !ok {
		return nil, rpctypes.ErrGRPCLeaseNotFound
	}
	known, err := lease.AttachedKeys(s.db, id)
	if err != nil {
		return nil, err
	}
	d1, _ := set.Get(first)
	deadline := time.Now().Add(s.txnLockTTL()).UnixMilli()
	// The record is the first range's: at the empty key, which it holds
	// whatever splits (not nil: a record without a primary key is one
	// written before records kept it).
	primary := []byte{}
	prewrites := map[keys.RangeID]*txnlock.Prewrite{
		first: {
			Locks: txnlock.Locks{Txn: rev, Primary: primary, Deadline: deadline, RevokeLease: id,
				Leases: []txnlock.LeaseLock{{ID: id, Revoke: true, Known: known}}},
			IsPrimary: true, Generation: d1.Generation,
		},
	}
	ids := []keys.RangeID{first}
	for _, k := range known {
		d := set.Lookup(k)
		p := prewrites[d.RangeID]
		if p == nil {
			p = &txnlock.Prewrite{Locks: txnlock.Locks{Txn: rev, Primary: primary, Deadline: deadline, RevokeLease: id}, Generation: d.Generation}
			prewrites[d.RangeID] = p
			ids = append(ids, d.RangeID)
		}
		p.Spans = append(p.Spans, txnlock.Span{Start: k, End: append(append([]byte(nil), k...), 0)})
	}
	if len(ids) == 1 {
		return nil, errRevokeInOneRange
	}
	run := &txnRun{txn: rev, primary: primary, primaryRange: first, ids: ids, prewrites: prewrites, primaryTerm: term}
	commitRev, err := s.commitRun(ctx, run, func(int64) error { return nil })
	if err != nil {
		return nil, err
	}
	return &pb.LeaseRevokeResponse{Header: &pb.ResponseHeader{Revision: commitRev}}, nil
}
