package datarange

import (
	"bytes"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/lease"
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

// applyLeaseRevoke deletes a lease and every key attached to it, all in one
// revision, so that watchers see the deletions together.
func applyLeaseRevoke(a *kv.Applier, t lease.Table, req *etcdpb.LeaseRevokeRequest) (any, *rangesm.LeaseChange, error) {
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
