package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/keyindex"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangedesc"
	"github.com/synod-io/synod/internal/replica"
)

// Splits (issue 15, step 4). A split is one command in the log of the
// range it splits (raftcmd.KindRangeSplit, applied by
// internal/datarange/split.go): every replica applies it at the same
// index, the range keeps the keys below the split key, and a new range
// with the same replicas takes the rest, its state written by the same
// batch. When this node applies it (splitsApplied, on the range's
// goroutine, before the batch's events go anywhere), its routing table
// (descs) gets both descriptors, the watch merger the new range, and the
// store a replica of it. Requests routed before the split that name the
// new range's keys are refused by the old range (datarange.ErrRangeChanged)
// and routed again (retryRouted); reads check that the ranges they read
// did not change under them (sameRanges).

// splitsApplied acts on the splits range id applied in out: it runs on the
// range's goroutine, after the batch is committed and before its events
// are handed on.
func (s *Server) splitsApplied(id keys.RangeID, out *replica.ApplyOutput) {
	s.descMu.Lock()
	set := s.descs.Load()
	var news []rangedesc.Descriptor
	for _, sp := range out.Splits {
		next, err := set.With(sp.Left, sp.Right)
		if err != nil {
			s.logger.Error("split applied but the ranges do not fit the node's descriptors", "left", sp.Left, "right", sp.Right, "err", err)
			continue
		}
		set = next
		news = append(news, sp.Right)
	}
	// Several data ranges from now on: every replica stamps with fresh
	// revisions (the split range switched itself when it applied it).
	s.store.UseFreshRevisions()
	if s.merger.Load() == nil && len(news) > 0 {
		// The first split: until now the hub got the range's batches
		// as they applied, up to its revision before this batch.
		sp := out.Splits[0]
		s.merger.Store(newSplitMerger(id, sp.Right.RangeID, s.hub.Revision(), sp.Revision, out.KV.CompactRevision))
	}
	// The new ranges' replicas first, so that no request routed with the
	// new descriptors finds one missing.
	s.adding.Store(set)
	leads := s.isRangeLeader(id)
	var started []rangedesc.Descriptor
	for _, d := range news {
		if err := s.store.AddReplica(d.RangeID); err != nil {
			s.logger.Error("start the replica of a range made by a split", "range", d.RangeID, "err", err)
			continue
		}
		started = append(started, d)
	}
	s.descs.Store(set)
	s.adding.Store(nil)
	s.descMu.Unlock()
	for _, d := range started {
		if leads {
			// The split range's leader campaigns at once in the new
			// range, rather than every replica waiting out an election
			// timeout first.
			newID := d.RangeID
			s.goBackground(func(ctx context.Context) { s.campaignNew(ctx, newID) })
		}
		s.logger.Info("range split", "range", uint64(id), "new range", uint64(d.RangeID), "at", fmt.Sprintf("%q", d.Start))
	}
	s.metrics.RangeSplits.Add(float64(len(news)))
}

// newSplitMerger starts the merger at a node's first split: range left,
// whose events the hub got up to hubRev, and range right, made at the
// split revision splitRev (no version of it lies above).
func newSplitMerger(left, right keys.RangeID, hubRev, splitRev, compact int64) *watchMerger {
	m, _ := newWatchMerger(map[keys.RangeID]kv.Meta{
		left: {Revision: hubRev, CompactRevision: compact},
	}, map[keys.RangeID]*rangeTxns{left: {}})
	m.mu.Lock()
	defer m.mu.Unlock()
	m.addRangeLocked(left, right, splitRev)
	return m
}

// sameRanges reports whether the data ranges ids, routed with set, still
// hold the spans set gave them as this node applied them: a read served
// from them is then what it was routed for.
func (s *Server) sameRanges(set *rangedesc.Set, ids []keys.RangeID) bool {
	if s.descs.Load() != set {
		return false
	}
	for _, id := range ids {
		pub := s.rangePublished(id)
		if pub == nil {
			continue // refused elsewhere (joining)
		}
		d, ok := datarange.Descriptor(pub.Derived)
		want, known := set.Get(id)
		if ok && known && d.Generation != want.Generation {
			return false
		}
	}
	return true
}

// awaitNewDescriptors waits, up to ctx's end, until this node's
// descriptors are no longer set (a split it was routed with changed is
// being applied here, or will be once it catches up).
func (s *Server) awaitNewDescriptors(ctx context.Context, set *rangedesc.Set) error {
	if s.descs.Load() != set {
		return nil
	}
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	deadline := time.NewTimer(s.cfg.RequestTimeout)
	defer deadline.Stop()
	for s.descs.Load() == set {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return rpctypes.ErrGRPCTimeout
		case <-t.C:
		}
	}
	return nil
}

// errRerouted makes a read route itself again: a range it read split.
var errRerouted = errors.New("the ranges changed while the request was served")

// isRangeChanged reports whether err says a command reached a range that
// no longer holds its keys (datarange.ErrRangeChanged, also from a peer).
func isRangeChanged(err error) bool {
	if errors.Is(err, datarange.ErrRangeChanged) {
		return true
	}
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unavailable && st.Message() == status.Convert(datarange.ErrRangeChanged).Message()
}

// SplitRange splits the data range holding key at key. Splitting at a
// range's start (an existing boundary) succeeds and changes nothing. It
// returns the descriptors of the ranges on either side of key.
func (s *Server) SplitRange(ctx context.Context, key []byte) (left, right rangedesc.Descriptor, err error) {
	if len(key) == 0 {
		return left, right, status.Error(codes.InvalidArgument, "synod: empty split key")
	}
	if bytes.Compare(key, keys.ReservedEnd) < 0 {
		return left, right, status.Errorf(codes.InvalidArgument, "synod: split key %q must sort above every reserved key (%q...): the services' keys stay in the first range", key, keys.ReservedPrefix)
	}
	var newID keys.RangeID
	backoff := 10 * time.Millisecond
	deadline := time.Now().Add(s.cfg.RequestTimeout)
	for {
		set := s.descs.Load()
		d := set.Lookup(key)
		if bytes.Equal(d.Start, key) {
			for _, l := range set.All() {
				if bytes.Equal(l.End, key) {
					left = l
				}
			}
			return left, d, nil
		}
		if newID == 0 {
			if newID, err = s.allocRangeID(ctx); err != nil {
				return left, right, err
			}
		}
		res, err := s.proposeIn(ctx, d.RangeID, raftcmd.KindRangeSplit, rangedesc.SplitCommand{Key: key, NewID: newID, Generation: d.Generation}.Encode(), 0, 0)
		if err == nil {
			r := res.(datarange.SplitResult)
			// The meta copies follow (rangesLoop finishes it if this
			// fails).
			if err := s.storeMeta(ctx, r.Left, r.Right); err != nil {
				s.logger.Warn("store a split's descriptors in the meta copies", "err", err)
			}
			return r.Left, r.Right, nil
		}
		switch {
		case isRangeChanged(err):
			// Another split got there first: route again, once this node
			// applied it.
			if err := s.awaitNewDescriptors(ctx, set); err != nil {
				return left, right, err
			}
		case errors.Is(err, datarange.ErrSplitBusy) && time.Now().Before(deadline):
			// Transactions across ranges hold keys above the split key:
			// they resolve within their TTL at most.
			select {
			case <-ctx.Done():
				return left, right, ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 200*time.Millisecond)
		default:
			return left, right, err
		}
	}
}

// allocRangeID takes a new range ID from the system range's counter.
func (s *Server) allocRangeID(ctx context.Context) (keys.RangeID, error) {
	res, err := s.proposeIn(ctx, keys.SystemRangeID, raftcmd.KindRangeIDAlloc, raftcmd.EncodeOracleCeiling(1), 0, 0)
	if err != nil {
		return 0, err // as the system range answered: its gRPC code tells a client what to do
	}
	return keys.RangeID(res.(uint64)), nil
}

// refreshDescriptors brings this node's descriptors up to date with its
// ranges' own (a snapshot may have shrunk one) and the meta copies in
// its replica of the system range (which name the ranges a split made
// that this node's replica of the split range never applied), and starts
// a replica, without state until its first snapshot, of each range it
// learned of. A range that overlaps one this node has state of waits
// (routable).
func (s *Server) refreshDescriptors() {
	meta, err := rangedesc.Load(s.db)
	if err != nil {
		s.logger.Warn("read the meta range descriptors", "err", err)
		return
	}
	s.descMu.Lock()
	cur := s.descs.Load()
	own := map[keys.RangeID]rangedesc.Descriptor{}
	for _, d := range cur.All() {
		pub := s.rangePublished(d.RangeID)
		if pub == nil || !pub.Initialized {
			continue
		}
		if od, ok := datarange.Descriptor(pub.Derived); ok {
			own[d.RangeID] = od
		}
	}
	set, err := rangedesc.NewSet(routable(own, cur.All(), meta))
	if err != nil {
		s.descMu.Unlock()
		return // not known yet: the watchers stay held
	}
	if sameDescriptors(set, cur) {
		if m := s.merger.Load(); m != nil {
			// Nothing left to learn: a hold set after the ranges were
			// learned (holdForLearnedRanges ran late) ends.
			m.learnedAll(s.hub)
		}
		s.descMu.Unlock()
		return
	}
	var added []keys.RangeID
	for _, d := range set.All() {
		if s.rangePublished(d.RangeID) == nil {
			added = append(added, d.RangeID)
		}
	}
	if len(added) > 0 || len(set.All()) > 1 {
		s.store.UseFreshRevisions()
	}
	m := s.merger.Load()
	if m == nil && len(set.All()) > 1 {
		// The node's one range took a snapshot from after its first
		// split, and this ran before the node acted on the install
		// (holdForLearnedRanges then holds the watchers).
		m = s.newMergerAtHub(cur.All()[0].RangeID)
	}
	if m != nil {
		for _, id := range added {
			m.addLearned(id)
		}
		// Every range is known again: the ranges learned hold the
		// watchers until their snapshots come.
		m.learnedAll(s.hub)
	}
	s.adding.Store(set)
	for _, id := range added {
		if err := s.store.AddReplica(id); err != nil {
			s.logger.Error("start the replica of a range learned from the meta copies", "range", uint64(id), "err", err)
			continue
		}
		s.logger.Info("range learned from the meta copies: waiting for its first snapshot", "range", uint64(id))
	}
	s.descs.Store(set)
	s.adding.Store(nil)
	s.descMu.Unlock()
}

// sameDescriptors reports whether a and b hold the same descriptors.
func sameDescriptors(a, b *rangedesc.Set) bool {
	return slices.EqualFunc(a.All(), b.All(), func(x, y rangedesc.Descriptor) bool {
		return x.RangeID == y.RangeID && x.Generation == y.Generation && bytes.Equal(x.Start, y.Start) && bytes.Equal(x.End, y.End)
	})
}

// storeMetaDescriptors, on the system range's leader, stores in the meta
// copies the descriptors this node's ranges hold that are newer than the
// copies: a split's proposer stores them itself, and this finishes what a
// crash cut short.
func (s *Server) storeMetaDescriptors(ctx context.Context) {
	var stale []rangedesc.Descriptor
	for _, d := range s.descs.Load().All() {
		m, ok, err := rangedesc.Get(s.db, d.RangeID)
		if err != nil {
			return
		}
		if !ok || m.Generation < d.Generation {
			stale = append(stale, d)
		}
	}
	if len(stale) == 0 {
		return
	}
	if err := s.storeMeta(ctx, stale...); err != nil && ctx.Err() == nil {
		s.logger.Warn("store range descriptors in the meta copies", "err", err)
	}
}

// storeMeta stores descriptors in the system range's meta copies.
func (s *Server) storeMeta(ctx context.Context, ds ...rangedesc.Descriptor) error {
	_, err := s.proposeIn(ctx, keys.SystemRangeID, raftcmd.KindRangeDescs, rangedesc.EncodeList(ds), 0, 0)
	return err
}

// checkSnapshotFits refuses the first snapshot of a data range made by a
// split while this node's replica of the split range has not applied the
// split yet (their spans overlap): the older entries it has still to apply
// would overwrite the snapshot's keys. The leader sends it again later.
func (s *Server) checkSnapshotFits(id keys.RangeID) error {
	pub := s.rangePublished(id)
	if pub == nil || pub.Initialized || id == keys.SystemRangeID {
		return nil
	}
	set := s.descs.Load()
	d, ok := set.Get(id)
	if !ok {
		return nil
	}
	return s.checkNoOverlap(id, d)
}

// checkNoOverlap fails if d, range id's span, overlaps the span of another
// data range this node has state of (which has not applied their split
// yet).
func (s *Server) checkNoOverlap(id keys.RangeID, d rangedesc.Descriptor) error {
	for _, o := range s.descs.Load().All() {
		if o.RangeID == id {
			continue
		}
		op := s.rangePublished(o.RangeID)
		if op == nil || !op.Initialized {
			continue
		}
		if od, ok := datarange.Descriptor(op.Derived); ok && od.Overlaps(d) {
			return fmt.Errorf("range %d over %v overlaps range %d here, which has not applied their split yet", id, d, o.RangeID)
		}
	}
	return nil
}

// DefaultRangeMaxBytes is the size above which a data range splits by
// itself (Config.RangeMaxBytes).
const DefaultRangeMaxBytes = 64 << 20

// splitLargeRanges splits each data range this node leads whose keys and
// their versions take more than RangeMaxBytes on disk (Pebble's estimate),
// at its middle live key.
func (s *Server) splitLargeRanges(ctx context.Context) {
	if s.cfg.RangeMaxBytes <= 0 {
		return
	}
	for _, d := range s.descs.Load().All() {
		if !s.isRangeLeader(d.RangeID) {
			continue
		}
		span := keys.MVCCSpanOf(d.Start, d.End)
		size, err := s.db.EstimateDiskUsage(span.Start, span.End)
		if err != nil || int64(size) <= s.cfg.RangeMaxBytes {
			continue
		}
		key := s.middleKey(d)
		if key == nil {
			continue // one live key, or all of them reserved: nothing to split at
		}
		if _, _, err := s.SplitRange(ctx, key); err != nil {
			if ctx.Err() == nil {
				s.logger.Warn("split a range past its size", "range", uint64(d.RangeID), "bytes", size, "at", fmt.Sprintf("%q", key), "err", err)
			}
			continue
		}
		s.logger.Info("split a range past its size", "range", uint64(d.RangeID), "bytes", size, "at", fmt.Sprintf("%q", key))
	}
}

// middleKey returns the live key in the middle of data range d's, as this
// node's replica holds them, if it is a key the range can split at (above
// its start and above every reserved key); nil otherwise.
func (s *Server) middleKey(d rangedesc.Descriptor) []byte {
	pub := s.rangePublished(d.RangeID)
	if pub == nil {
		return nil
	}
	x := datarange.Index(pub.Derived)
	if x == nil || x.Len() < 2 {
		return nil
	}
	var key []byte
	n := 0
	var end []byte // none: the keyspace's (Ascend's nil)
	if len(d.End) > 0 {
		end = d.End
	}
	x.Ascend(d.Start, end, func(e *keyindex.Entry) bool {
		n++
		if n > x.Len()/2 {
			key = bytes.Clone(e.Key)
			return false
		}
		return true
	})
	if key == nil || bytes.Compare(key, d.Start) <= 0 || bytes.Compare(key, keys.ReservedEnd) < 0 {
		return nil
	}
	return key
}

// campaignNew campaigns in range id, which a split this node's replica of
// the split range led just made, until the range has a leader: its other
// replicas drop the votes asked for before they applied the split
// themselves, and would otherwise wait out an election timeout or more.
func (s *Server) campaignNew(ctx context.Context, id keys.RangeID) {
	for range 4 * s.cfg.ElectionTicks {
		if pub := s.rangePublished(id); pub == nil || pub.Lead != 0 {
			return
		}
		_ = s.store.Do(ctx, id, func(r *replica.Replica) { _ = r.CampaignIfLeaderless() })
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * s.cfg.TickInterval):
		}
	}
}

// holdForLearnedRanges is called when range id installed a snapshot from
// after a split this node's replica never applied: the ranges the split
// made hold versions this node does not have yet, some maybe below what
// the hub was handed. Until refreshDescriptors learned them, the watch
// merger hands the hub nothing more (the hub then catches every watcher up
// from history once every range's state is here); the merger is made now
// if this was the node's one range.
func (s *Server) holdForLearnedRanges(id keys.RangeID) {
	s.descMu.Lock()
	defer s.descMu.Unlock()
	m := s.merger.Load()
	if m == nil {
		m = s.newMergerAtHub(id)
	}
	m.holdForLearned()
}

// newMergerAtHub makes the watch merger of a node whose one data range
// (id) turned out to have split: it starts where the hub is. The caller
// holds descMu.
func (s *Server) newMergerAtHub(id keys.RangeID) *watchMerger {
	var compact int64
	if pub := s.rangePublished(id); pub != nil {
		compact = pub.KV.CompactRevision
	}
	m, _ := newWatchMerger(map[keys.RangeID]kv.Meta{id: {Revision: s.hub.Revision(), CompactRevision: compact}},
		map[keys.RangeID]*rangeTxns{id: {}})
	s.merger.Store(m)
	s.store.UseFreshRevisions()
	return m
}

// errFound stops a snapshot's scan for its descriptor.
var errFound = errors.New("found")

// checkSnapshotSpan refuses a snapshot of a data range whose span, as the
// snapshot holds it, overlaps another range this node has state of: a
// range made by a split whose split range here has not applied the split
// yet (checkSnapshotFits checks the span this node knows before the data
// comes; a leader that has not applied a later split may send one from
// before it). The leader sends it again later.
func (s *Server) checkSnapshotSpan(id keys.RangeID, data *replica.IncomingSnapshot) error {
	if id == keys.SystemRangeID {
		return nil
	}
	want := keys.RangeDescriptorKey(id)
	var d rangedesc.Descriptor
	err := data.Iterate(func(k, v []byte) error {
		if !bytes.Equal(k, want) {
			return nil
		}
		var err error
		if d, err = rangedesc.Decode(v); err != nil {
			return err
		}
		return errFound
	})
	if !errors.Is(err, errFound) {
		return err // none (a range from before own descriptors): nothing to check
	}
	return s.checkNoOverlap(id, d)
}
