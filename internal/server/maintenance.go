package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/cockroachdb/pebble/v2"
	"github.com/synod-io/synod/internal/backup"
	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/keyindex"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/replica"
)

// DefaultQuotaBytes is the default storage quota. etcd's is 2 GiB with 8 GiB
// as a practical ceiling, set by bbolt; Pebble has no such ceiling, but a
// quota still stops a runaway writer before the disk fills.
const DefaultQuotaBytes = 8 << 30

// HashKV hashes the KV state at rev (0: current); equal on every member that
// applied the same history, whatever its physical compaction did.
func (s *Server) HashKV(ctx context.Context, rev int64) (*pb.HashKVResponse, error) {
	if s.multiRange() {
		return s.hashKVRanges(ctx, rev)
	}
	snap, m, err := s.view()
	if err != nil {
		return nil, err
	}
	defer snap.Close()
	h, hashRev, err := kv.HashKV(snap, m, rev)
	if err != nil {
		return nil, err
	}
	hdr := s.Header()
	hdr.Revision = m.Revision
	return &pb.HashKVResponse{Header: hdr, Hash: h, CompactRevision: m.CompactRevision, HashRevision: hashRev}, nil
}

// hashKVRanges is HashKV over several data ranges: at the revision the
// node knows them all closed at when rev is 0, else at rev once every
// range is fenced above it (a fresh revision from the oracle), so that
// members with equal data give equal hashes at equal revisions.
func (s *Server) hashKVRanges(ctx context.Context, rev int64) (*pb.HashKVResponse, error) {
	type hashed struct {
		hash    uint32
		hashRev int64
		meta    kv.Meta
	}
	fn := func(r pebble.Reader, _ *keyindex.Snapshot, m kv.Meta) (hashed, error) {
		h, hashRev, err := kv.HashKV(r, m, rev)
		return hashed{h, hashRev, m}, err
	}
	var out hashed
	var err error
	if rev == 0 {
		out, err = readResolved(s, s.dataRanges(), fn)
	} else {
		out, err = readAtOracle(ctx, s, s.dataRanges(), nil, fn)
	}
	if err != nil {
		return nil, err
	}
	hdr := s.Header()
	hdr.Revision = out.meta.Revision
	return &pb.HashKVResponse{Header: hdr, Hash: out.hash, CompactRevision: out.meta.CompactRevision, HashRevision: out.hashRev}, nil
}

// Hash hashes the KV state at the current revision (etcd's Hash hashes its
// whole backend file, which says little across members; this one is
// comparable).
func (s *Server) Hash(ctx context.Context) (*pb.HashResponse, error) {
	r, err := s.HashKV(ctx, 0)
	if err != nil {
		return nil, err
	}
	return &pb.HashResponse{Header: r.Header, Hash: r.Hash}, nil
}

// Alarm lists, raises or disarms alarms.
func (s *Server) Alarm(ctx context.Context, req *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	if req.Action == pb.AlarmRequest_GET {
		if err := s.linearize(ctx); err != nil {
			return nil, err
		}
		alarms, err := cluster.ListAlarms(s.db)
		if err != nil {
			return nil, err
		}
		var out []*pb.AlarmMember
		for _, a := range alarms {
			if (req.MemberID == 0 || a.MemberID == req.MemberID) && (req.Alarm == pb.AlarmType_NONE || a.Alarm == req.Alarm) {
				out = append(out, a)
			}
		}
		return &pb.AlarmResponse{Header: s.revisionHeader(), Alarms: out}, nil
	}
	res, err := s.Propose(ctx, raftcmd.KindAlarm, req)
	if err != nil {
		return nil, err
	}
	resp, ok := res.(*pb.AlarmResponse)
	if !ok {
		return nil, fmt.Errorf("alarm returned %T", res)
	}
	resp.Header = s.revisionHeader()
	return resp, nil
}

// quotaLoop raises this member's NOSPACE alarm when its replicated state
// passes the quota (see storageUsage), or when a write was refused because
// it would have. It wakes when a flush or compaction ends, when a write finds
// the quota reached, and every second. Disarming is the operator's call,
// after compaction and defragmentation; the alarm stays off while the state
// is under the quota.
func (s *Server) quotaLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.usage.changed:
		}
		s.usage.refresh()
		if s.cfg.QuotaBackendBytes < 0 {
			continue
		}
		refused := s.quotaRefused.Load()
		if (!refused && s.dbSize() <= s.cfg.QuotaBackendBytes) || !s.HasLeader() {
			continue
		}
		if s.noSpaceRaised() {
			s.quotaRefused.Store(false)
			continue
		}
		s.logger.Warn("storage over quota: raising the NOSPACE alarm", "size", s.dbSize(), "quota", s.cfg.QuotaBackendBytes)
		actx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		_, err := s.Alarm(actx, &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: s.id.MemberID, Alarm: pb.AlarmType_NOSPACE})
		cancel()
		switch {
		case err == nil:
			s.quotaRefused.Store(false)
		case ctx.Err() == nil:
			s.logger.Error("raise NOSPACE alarm", "err", err)
		}
	}
}

// noSpaceRaised reports whether this member's NOSPACE alarm is active, as
// far as this member has applied.
func (s *Server) noSpaceRaised() bool {
	if !s.Published().NoSpace {
		return false
	}
	alarms, err := cluster.ListAlarms(s.db)
	if err != nil {
		return false
	}
	for _, a := range alarms {
		if a.MemberID == s.id.MemberID && a.Alarm == pb.AlarmType_NOSPACE {
			return true
		}
	}
	return false
}

// checkQuota refuses a request that would take this member's replicated
// state past the quota, and has the NOSPACE alarm raised (as etcd's API
// layer does), so that every member refuses writes from then on.
func (s *Server) checkQuota(cost int64) error {
	if cost == 0 || s.cfg.QuotaBackendBytes < 0 || s.dbSize()+cost <= s.cfg.QuotaBackendBytes {
		return nil
	}
	s.quotaRefused.Store(true)
	s.usage.notify()
	return rpctypes.ErrGRPCNoSpace
}

// dbSize is what the quota counts: the estimated bytes of the replicated
// state (see storageUsage).
func (s *Server) dbSize() int64 { return s.usage.size() }

// Defragment flushes and compacts the whole Pebble instance, which drops
// what compaction and deletes left behind: the size the quota counts
// shrinks to the live data. Unlike etcd's, it does not block the member:
// Pebble compacts in the background while serving.
func (s *Server) Defragment(ctx context.Context) (*pb.DefragmentResponse, error) {
	// Catch up with the leader first, so that a compaction acknowledged by
	// another member is applied here too, and let its old versions be
	// deleted: the defragmentation then frees them. Without a leader, this
	// member defragments what it has.
	lctx, cancel := context.WithTimeout(ctx, 2*s.ElectionTimeout())
	err := s.linearize(lctx)
	cancel()
	if err == nil {
		if err := s.compactor.wait(ctx, s.compactedEverywhere()); err != nil {
			return nil, err
		}
	} else if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err := s.db.Flush(); err != nil {
		return nil, fmt.Errorf("flush: %w", err)
	}
	if err := s.db.Compact(ctx, []byte{0x00}, []byte{0xff, 0xff, 0xff, 0xff}, true); err != nil {
		return nil, fmt.Errorf("compact: %w", err)
	}
	s.usage.refresh()
	s.logger.Info("defragmented", "size", s.dbSize(), "disk", s.db.Metrics().DiskSpaceUsage())
	return &pb.DefragmentResponse{}, nil // etcd's has no header either
}

// Snapshot writes a consistent backup of the first range to w.
func (s *Server) Snapshot(ctx context.Context, w io.Writer) (int64, error) {
	if s.multiRange() {
		return s.snapshotRanges(ctx, w) // its read fences catch up with every range
	}
	// First catch up with the leader's commit index, so that the backup holds
	// every write acknowledged before it was asked for, whichever member
	// serves it (etcd's holds what that member applied). Without a quorum the
	// backup is of this member's state: that is when one is needed most.
	lctx, cancel := context.WithTimeout(ctx, 2*s.ElectionTimeout())
	err := s.linearize(lctx) // a member that has just started waits for the leader
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		s.logger.Warn("backup of this member's state, which may lag the cluster: cannot reach the leader", "err", err)
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	st, err := replica.LoadAppliedState(snap, keys.FirstDataRangeID)
	if err != nil {
		return 0, err
	}
	h := backup.Header{
		ClusterID: s.id.ClusterID, MemberID: s.id.MemberID,
		Revision: st.KV.Revision, CompactRevision: st.KV.CompactRevision,
		AppliedIndex: st.Index, CreatedUnix: time.Now().Unix(),
	}
	n, err := backup.Write(&ctxWriter{ctx: ctx, w: w}, snap, replicatedSpans(), h, nil)
	if err != nil {
		return n, fmt.Errorf("write backup: %w", err)
	}
	s.logger.Info("backup streamed", "bytes", n, "revision", st.KV.Revision)
	return n, nil
}

// snapshotRanges writes a backup of the store over several data ranges at
// one revision R: R comes from the oracle with read fences on every range
// (nothing at or below it can commit anywhere once this node applied the
// fences), and the backup leaves out every version above R, which some
// ranges applied and others not yet. (The lease attachments are rebuilt by
// the restore from the versions kept.) It needs a quorum of every range.
func (s *Server) snapshotRanges(ctx context.Context, w io.Writer) (int64, error) {
	ids := s.dataRanges()
	for attempt := 0; ; attempt++ {
		rev, err := s.fenceRanges(ctx, ids)
		if err != nil {
			return 0, fmt.Errorf("fence the data ranges for a backup: %w", err)
		}
		if err := s.resolveLocksBelow(ctx, ids, rev, nil); err != nil {
			return 0, fmt.Errorf("resolve transactions for a backup: %w", err)
		}
		snap := s.db.NewSnapshot()
		compact, err := compactRevisionIn(snap, ids)
		if err != nil {
			snap.Close()
			return 0, err
		}
		if compact > rev {
			// A compaction overtook R: versions at R may be gone. Take a
			// fresh one.
			snap.Close()
			if attempt < 3 {
				continue
			}
			return 0, fmt.Errorf("a backup at revision %d: compactions above it (%d) kept overtaking it; try again", rev, compact)
		}
		var index uint64
		if st, err := replica.LoadAppliedState(snap, keys.FirstDataRangeID); err == nil {
			index = st.Index
		}
		h := backup.Header{
			ClusterID: s.id.ClusterID, MemberID: s.id.MemberID,
			Revision: rev, CompactRevision: compact,
			AppliedIndex: index, CreatedUnix: time.Now().Unix(),
		}
		mvccSpan := keys.MVCCSpan()
		var scratch []byte
		keep := func(k []byte) bool {
			if bytes.Compare(k, mvccSpan.Start) < 0 || bytes.Compare(k, mvccSpan.End) >= 0 {
				return true
			}
			var v int64
			var err error
			if scratch, v, err = keys.DecodeMVCCKey(scratch[:0], k); err != nil {
				return true // not a version: kept as read
			}
			return v <= rev
		}
		n, err := backup.Write(&ctxWriter{ctx: ctx, w: w}, snap, replicatedSpans(), h, keep)
		snap.Close()
		if err != nil {
			return n, fmt.Errorf("write backup: %w", err)
		}
		s.logger.Info("backup streamed", "bytes", n, "revision", rev, "ranges", len(ids))
		return n, nil
	}
}

// SnapshotSizeEstimate estimates the size of a backup.
func (s *Server) SnapshotSizeEstimate() int64 {
	var total uint64
	for _, span := range replicatedSpans() {
		if n, err := s.db.EstimateDiskUsage(span.Start, span.End); err == nil {
			total += n
		}
	}
	return int64(total)
}

// ctxWriter stops writing once ctx is done (the client went away).
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c *ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
