package datarange

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/lease"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangedesc"
	"github.com/synod-io/synod/internal/rangesm"
)

// applyLeaseGrant records a new lease. Its ID and TTL were chosen by the
// proposer, so every replica records the same lease.
func applyLeaseGrant(t lease.Table, m *kv.Meta, req *etcdpb.LeaseGrantRequest) (any, *rangesm.LeaseChange, error) {
	exists, err := t.Exists(req.ID)
	if err != nil {
		return nil, nil, err
	}
	if exists {
		return nil, nil, rpctypes.ErrGRPCLeaseExist
	}
	if err := t.Put(lease.Record{ID: req.ID, TTL: req.TTL}); err != nil {
		return nil, nil, err
	}
	resp := &etcdpb.LeaseGrantResponse{Header: &etcdpb.ResponseHeader{Revision: m.Revision}, ID: req.ID, TTL: req.TTL}
	return resp, &rangesm.LeaseChange{Kind: rangesm.LeaseGranted, ID: req.ID, TTL: req.TTL}, nil
}

// ErrLeaseSpansRanges is the error of a lease revocation in the range that
// keeps the lease table when a key attached to the lease lies in another
// range: the proposer revokes it with a transaction across the ranges.
var ErrLeaseSpansRanges = status.Error(codes.Unavailable, "synod: the lease holds keys of several ranges")

// applyLeaseRevoke deletes a lease and every key attached to it, all in one
// revision, so that watchers see the deletions together. The keys must be
// the range's own (ErrLeaseSpansRanges).
func applyLeaseRevoke(a *kv.Applier, t lease.Table, d rangedesc.Descriptor, req *etcdpb.LeaseRevokeRequest) (any, *rangesm.LeaseChange, error) {
	exists, err := t.Exists(req.ID)
	if err != nil {
		return nil, nil, err
	}
	if !exists {
		return nil, nil, rpctypes.ErrGRPCLeaseNotFound
	}
	attached, err := lease.AttachedKeys(a.Batch, req.ID)
	if err != nil {
		return nil, nil, err
	}
	for _, k := range attached {
		if !holds(d, k, nil) {
			return nil, nil, ErrLeaseSpansRanges
		}
	}
	events := len(a.Events)
	if len(attached) > 0 {
		txn := &etcdpb.TxnRequest{}
		for _, k := range attached {
			txn.Success = append(txn.Success, &etcdpb.RequestOp{Request: &etcdpb.RequestOp_RequestDeleteRange{
				RequestDeleteRange: &etcdpb.DeleteRangeRequest{Key: k},
			}})
		}
		if _, err := a.Txn(txn); err != nil {
			return nil, nil, err
		}
	}
	if err := t.Delete(req.ID, notDetached(attached, a.Events[events:], req.ID)); err != nil {
		return nil, nil, err
	}
	resp := &etcdpb.LeaseRevokeResponse{Header: &etcdpb.ResponseHeader{Revision: a.Meta.Revision}}
	return resp, &rangesm.LeaseChange{Kind: rangesm.LeaseRevoked, ID: req.ID}, nil
}

// tellRevoked tells the services (extensions) that lease id was revoked,
// if a transaction across ranges revoked it and left that to this command
// (keys.LeaseHooksKey).
func (a *batch) tellRevoked(ka *kv.Applier, cmd raftcmd.Command, index, term uint64, id int64) error {
	k := keys.LeaseHooksKey(a.m.cfg.RangeID, id)
	_, closer, err := a.b.Get(k)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		return nil // told already
	case err != nil:
		return fmt.Errorf("read lease hooks of %x: %w", id, err)
	}
	_ = closer.Close()
	if ok, err := a.leases().Exists(id); err != nil {
		return err
	} else if !ok {
		// (Granted again since, the ID being the client's, the services
		// keep what they hold on it.)
		if err := a.leaseRevoked(ka, cmd, index, term, id); err != nil {
			return err
		}
	}
	return a.b.Delete(k, nil)
}

// LeasesToTell returns the leases revoked by transactions across ranges
// whose services are not told yet (tellRevoked), as r holds them.
func LeasesToTell(r pebble.Reader, id keys.RangeID) ([]int64, error) {
	span := keys.LeaseHooksSpan(id)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: span.Start, UpperBound: span.End})
	if err != nil {
		return nil, err
	}
	var out []int64
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		out = append(out, int64(binary.BigEndian.Uint64(k[len(k)-8:])))
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("read lease hooks: %w", err)
	}
	return out, nil
}

// notDetached returns the attached keys (in key order) whose deletion,
// recorded in events (in the same order), did not detach them from lease
// id: none, unless the index of attached keys and the keys disagree.
func notDetached(attached [][]byte, events []kv.Event, id int64) [][]byte {
	var left [][]byte
	for _, k := range attached {
		if len(events) > 0 && bytes.Equal(events[0].KV.GetKey(), k) {
			if events[0].PrevKV.GetLease() != id {
				left = append(left, k)
			}
			events = events[1:]
			continue
		}
		left = append(left, k)
	}
	return left
}

// applyLeaseCheckpoints records the remaining TTLs the leader checkpointed.
// Leases that no longer exist are skipped.
func applyLeaseCheckpoints(t lease.Table, req *etcdpb.LeaseCheckpointRequest, out *rangesm.Effects) error {
	for _, cp := range req.Checkpoints {
		ok, err := t.Checkpoint(cp.ID, cp.Remaining_TTL)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		out.Leases = append(out.Leases, rangesm.LeaseChange{Kind: rangesm.LeaseCheckpointed, ID: cp.ID, RemainingMs: cp.Remaining_TTL})
	}
	return nil
}
