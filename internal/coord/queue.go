package coord

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/watch"
)

// The queue of a lock or an election: the keys under its prefix, ordered by
// create revision. The first key owns it.

// defaultSessionTTL is the TTL of the lease granted to a Lock or Campaign
// that names none: etcd's default session TTL.
const defaultSessionTTL = 60

// cleanupTimeout bounds the removal of a waiter's key when its wait fails.
const cleanupTimeout = 5 * time.Second

// queueKey is the key of the participant on lease in the queue pfx (which
// ends with '/'), as etcd's concurrency package names it.
func queueKey(pfx []byte, lease int64) []byte {
	return fmt.Appendf(append([]byte(nil), pfx...), "%x", lease)
}

// ensureLease returns lease, or a new lease of etcd's default session TTL
// when it is 0 (what etcd's services do for a request without a lease).
func (s *Services) ensureLease(ctx context.Context, lease int64) (int64, error) {
	if lease != 0 {
		return lease, nil
	}
	resp, err := s.b.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: defaultSessionTTL})
	if err != nil {
		return 0, err
	}
	return resp.ID, nil
}

// entry is a participant's place in a queue.
type entry struct {
	key   []byte
	rev   int64 // the key's create revision: the fencing token
	lease int64
	// value is the key's value when it already existed (Campaign compares
	// it with the value to proclaim).
	value   []byte
	created bool
	// owner reports whether the key was first in the queue at once; hdr is
	// then the header of the transaction that found it so.
	owner bool
	hdr   *pb.ResponseHeader
	// pred, when set, is the key just before e's when e's was created, at
	// revision rev: the first one to wait for.
	pred []byte
}

// enqueue puts the participant's key, with value, on lease at the end of
// queue pfx, or finds it there (the same lease enqueues once).
//
// The caller's cancellation does not cut the transaction short (the
// backend's request timeout still bounds it): a write cancelled after it
// was proposed has an unknown outcome, and a key left behind that way would
// hold its place, blocking the queue behind it, until its lease ended. If
// ctx ended meanwhile, the key this call created is removed again and ctx's
// error returned; a key that existed before (an earlier call on the same
// lease) is left alone.
func (s *Services) enqueue(ctx context.Context, pfx []byte, lease int64, value []byte) (entry, error) {
	if err := ctx.Err(); err != nil {
		return entry{}, err // gone already: write nothing
	}
	e, err := s.enqueueTxn(context.WithoutCancel(ctx), pfx, lease, value)
	if err != nil {
		return entry{}, err
	}
	if err := ctx.Err(); err != nil {
		if e.created {
			s.abandon(ctx, e)
		}
		return entry{}, err
	}
	return e, nil
}

// enqueueTxn is enqueue's one transaction, which also reads the head of the
// queue: when it creates the key, the two newest keys (its own, and its
// predecessor's if any), and otherwise the first key.
func (s *Services) enqueueTxn(ctx context.Context, pfx []byte, lease int64, value []byte) (entry, error) {
	key := queueKey(pfx, lease)
	newest := &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{
		Key: pfx, RangeEnd: keys.PrefixRangeEnd(pfx), Limit: 2, KeysOnly: true,
		SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_CREATE}}}
	first := &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: firstCreated(pfx)}}
	resp, err := s.b.Txn(ctx, &pb.TxnRequest{
		Compare: []*pb.Compare{{
			Key: key, Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
			TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 0},
		}},
		Success: []*pb.RequestOp{
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: key, Value: value, Lease: lease}}},
			newest,
		},
		Failure: []*pb.RequestOp{
			{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: key}}},
			first,
		},
	})
	if err != nil {
		return entry{}, err
	}
	e := entry{key: key, lease: lease, created: resp.Succeeded, hdr: resp.Header}
	heads := resp.Responses[1].GetResponseRange().GetKvs()
	if resp.Succeeded {
		// Every other key of the queue was created before this txn.
		e.rev = resp.Header.Revision
		if len(heads) == 0 || heads[0].CreateRevision != e.rev {
			return entry{}, status.Error(codes.Internal, "queue key missing from its own transaction")
		}
		if len(heads) > 1 {
			e.pred = heads[1].Key
		}
		e.owner = e.pred == nil
		return e, nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		return entry{}, status.Error(codes.Internal, "queue key vanished inside a transaction")
	}
	e.rev, e.value = kvs[0].CreateRevision, kvs[0].Value
	e.owner = len(heads) == 0 || heads[0].CreateRevision == e.rev
	return e, nil
}

// firstCreated reads the key of pfx with the lowest create revision.
func firstCreated(pfx []byte) *pb.RangeRequest {
	return &pb.RangeRequest{Key: pfx, RangeEnd: keys.PrefixRangeEnd(pfx), Limit: 1,
		SortOrder: pb.RangeRequest_ASCEND, SortTarget: pb.RangeRequest_CREATE}
}

// errKeyLost is returned when a participant's key disappeared while it
// waited: its lease ended, or somebody deleted the key.
var errKeyLost = errors.New("key deleted while waiting")

// waitTurn waits until e's key is the first of queue pfx and still exists,
// and returns the header of the read that found it so. A waiter watches its
// predecessor only, so each release wakes one waiter; it also watches its own
// key, to give up at once if that is deleted (its lease ended).
func (s *Services) waitTurn(ctx context.Context, pfx []byte, e entry) (*pb.ResponseHeader, error) {
	if e.owner {
		return e.hdr, nil
	}
	ready := make(chan struct{}, 1)
	own := s.watch(watch.Options{Key: e.key, StartRevision: e.rev + 1, NoPut: true}, ready)
	defer own.close()
	pred, seen := e.pred, e.rev // pred existed at revision seen
	for {
		if pred == nil {
			// One linearizable read (a read-only txn: no Raft entry) finds
			// the nearest older key and checks that e's key still exists.
			resp, err := s.b.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{
				{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{
					Key: pfx, RangeEnd: keys.PrefixRangeEnd(pfx), Limit: 1, KeysOnly: true,
					SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_CREATE, MaxCreateRevision: e.rev - 1}}},
				{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: e.key, KeysOnly: true}}},
			}})
			if err != nil {
				return nil, err
			}
			mine := resp.Responses[1].GetResponseRange().GetKvs()
			if len(mine) == 0 || mine[0].CreateRevision != e.rev {
				return nil, errKeyLost
			}
			older := resp.Responses[0].GetResponseRange().GetKvs()
			if len(older) == 0 {
				// Every key created before e's is gone, and keys created
				// later have higher revisions: e owns the queue as long as
				// its key exists.
				return resp.Header, nil
			}
			pred, seen = older[0].Key, resp.Header.Revision
		}
		w := s.watch(watch.Options{Key: pred, StartRevision: seen + 1, NoPut: true}, ready)
		lost, err := waitDeletion(ctx, ready, w, own)
		w.close()
		if err != nil {
			return nil, err
		}
		if lost {
			return nil, errKeyLost
		}
		pred = nil
	}
}

// waitDeletion waits, on their shared ready channel, until pred's key is
// deleted (or its history compacted: the caller reads again), or own's key
// is deleted (lost). A compacted own watch proves nothing; the caller's final
// read decides.
func waitDeletion(ctx context.Context, ready chan struct{}, pred, own *hubWatch) (lost bool, err error) {
	ownDone := false
	for {
		if resp, ok := pred.poll(); ok && (resp.CompactRevision > 0 || hasDelete(resp.Events)) {
			return false, nil
		}
		if !ownDone {
			if resp, ok := own.poll(); ok {
				if hasDelete(resp.Events) {
					return true, nil
				}
				ownDone = resp.CompactRevision > 0
			}
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-ready:
		}
	}
}

func hasDelete(evs []*mvccpb.Event) bool {
	for _, ev := range evs {
		if ev.Type == mvccpb.DELETE {
			return true
		}
	}
	return false
}

// dequeue deletes e's key if it is still the one e created.
func (s *Services) dequeue(ctx context.Context, key []byte, rev int64) (*pb.TxnResponse, error) {
	return s.b.Txn(ctx, &pb.TxnRequest{
		Compare: []*pb.Compare{{
			Key: key, Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
			TargetUnion: &pb.Compare_CreateRevision{CreateRevision: rev},
		}},
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: key}}}},
	})
}

// abandon removes the key of a wait that failed, as etcd does, so that the
// failed waiter does not keep its place (and block the queue) until its
// lease ends. It runs even when ctx is done.
func (s *Services) abandon(ctx context.Context, e entry) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if _, err := s.dequeue(ctx, e.key, e.rev); err != nil {
		s.logger.Debug("remove the key of a failed wait", "key", string(e.key), "err", err)
	}
}

// rpcError turns an error of the services into a gRPC error: the backend's
// errors are gRPC errors already, context errors become their codes.
func rpcError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}
