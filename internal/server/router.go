package server

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangedesc"
	"github.com/synod-io/synod/internal/rangesm"
	"github.com/synod-io/synod/internal/replica"
)

// The ranges of a node, and which one serves what. There is one system
// range (members, alarms, auth, the oracle, the data ranges' descriptors)
// and data ranges, each over a span of the user keys, described in the
// system range (internal/rangedesc). For now a cluster has one data range
// over every key, with the leases and the services whose data lives in
// data ranges; the code below is the only place that says which request
// goes where.

// loadDescriptors reads the data ranges' descriptors as this node's system
// range applied them (a node that joined and has no data yet, or a data
// dir from before descriptors, has the initial ones).
func (s *Server) loadDescriptors() error {
	meta, err := rangedesc.Load(s.db)
	if err != nil {
		return err
	}
	// The ranges' own descriptors (written at bootstrap and by splits,
	// carried by snapshots) say the spans of the ranges this node has
	// state of, as it applied them: the meta copies may be ahead (this
	// node's system range applied a split its split range has not), and
	// name the ranges this node has no state of yet (it joined, or took a
	// snapshot of a split range from after the split).
	local, err := rangedesc.LoadLocal(s.db)
	if err != nil {
		return err
	}
	own := map[keys.RangeID]rangedesc.Descriptor{}
	for _, d := range local {
		own[d.RangeID] = d
	}
	b := s.db.NewBatch()
	defer b.Close()
	for _, d := range meta {
		if _, ok := own[d.RangeID]; ok {
			continue
		}
		switch ok, err := rangesm.IsBootstrapped(s.db, d.RangeID); {
		case err != nil:
			return err
		case !ok:
			continue
		case d.Generation != 1:
			return fmt.Errorf("data range %d has state here but no descriptor of its own, and its meta copy is of generation %d: take a backup on a member that has it and restore", d.RangeID, d.Generation)
		}
		// A range bootstrapped before ranges kept their own descriptor
		// (no split can have touched it since: splits write it).
		if err := rangedesc.PutLocal(b, d); err != nil {
			return err
		}
		own[d.RangeID] = d
	}
	if !b.Empty() {
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("store the ranges' own descriptors: %w", err)
		}
	}
	set, err := rangedesc.NewSet(routable(own, meta))
	if err != nil {
		// A range here took a snapshot from after a split, and this
		// node's meta copies lack the range the split made: ask the
		// other members, as a joining node does (a replica of each range
		// it names then starts without state; the watch merger holds the
		// hub until their snapshots came).
		if peers, perr := s.askMembersForRanges(); perr == nil {
			set, err = rangedesc.NewSet(routable(own, peers, meta))
		}
	}
	if err != nil {
		// None answered: route with the meta copies until they catch up
		// (the split range refuses what it no longer holds;
		// refreshDescriptors). A watch from an older revision on this
		// node may miss the new range's writes since the split.
		s.logger.Warn("range descriptors do not cover the keyspace: routing with the meta copies until they catch up", "err", err)
		if set, err = rangedesc.NewSet(meta); err != nil {
			return err
		}
	}
	s.descs.Store(set)
	return nil
}

// askMembersForRanges asks the other members for the data ranges'
// descriptors, for at most a few seconds.
func (s *Server) askMembersForRanges() ([]rangedesc.Descriptor, error) {
	ms, err := cluster.ListMembers(s.db)
	if err != nil {
		return nil, err
	}
	var others []*pb.Member
	for _, m := range ms {
		if m.ID != s.id.MemberID {
			others = append(others, &pb.Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs})
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	return s.askRanges(ctx, others, s.peerSecret)
}

// routable returns the descriptors to route with: those of the ranges this
// node has state of (own), and of the others those that overlap none of
// them (a range made by a split whose range here has not applied it yet
// waits until it has: its snapshot would be overwritten by the older
// entries).
func routable(own map[keys.RangeID]rangedesc.Descriptor, others ...[]rangedesc.Descriptor) []rangedesc.Descriptor {
	var out []rangedesc.Descriptor
	for _, d := range own {
		out = append(out, d)
	}
	for _, d := range rangedesc.Newest(others...) {
		if _, ok := own[d.RangeID]; ok {
			continue
		}
		overlaps := false
		for _, o := range own {
			if d.Overlaps(o) {
				overlaps = true
				break
			}
		}
		if !overlaps {
			out = append(out, d)
		}
	}
	return out
}

// descriptor returns the descriptor of data range id.
func (s *Server) descriptor(id keys.RangeID) (rangedesc.Descriptor, bool) {
	if set := s.adding.Load(); set != nil {
		if d, ok := set.Get(id); ok {
			return d, true
		}
	}
	for _, d := range s.descs.Load().All() {
		if d.RangeID == id {
			return d, true
		}
	}
	return rangedesc.Descriptor{}, false
}

// spansOf returns the Pebble spans of range id's replicated state.
func (s *Server) spansOf(id keys.RangeID) []keys.Span {
	if d, ok := s.descriptor(id); ok {
		return keys.DataRangeSpans(id, d.Start, d.End)
	}
	return keys.ReplicatedSpans(id)
}

// multiRange reports whether the keyspace is split into several data
// ranges (Config.DataRangeSplits).
func (s *Server) multiRange() bool { return len(s.descs.Load().All()) > 1 }

// dataRanges returns the data ranges, in key order.
func (s *Server) dataRanges() []keys.RangeID { return s.descs.Load().IDs() }

// allRanges returns every range of the node: the system range, then the
// data ranges in key order.
func (s *Server) allRanges() []keys.RangeID {
	return append([]keys.RangeID{keys.SystemRangeID}, s.dataRanges()...)
}

// route returns the data ranges a client's write goes to: the one holding
// every key it names (a put's key, a delete's span, the keys and spans of
// a txn's compares and operations, nested txns included), or, for a txn
// over several ranges, each of them; cross says the write runs as a
// transaction across ranges (crossRangeTxn): it names keys of several
// ranges, or it puts a key outside the first data range with a lease (the
// first range keeps the lease table, and takes part in the transaction).
// Other commands go where rangeOf sends them.
func route(set *rangedesc.Set, kind raftcmd.Kind, req proto.Message) (ids []keys.RangeID, cross bool) {
	var r router
	switch m := req.(type) {
	case *pb.PutRequest:
		r.key(set, m.Key, nil)
		if m.Lease != 0 {
			r.lease()
		}
	case *pb.DeleteRangeRequest:
		r.key(set, m.Key, m.RangeEnd)
	case *pb.TxnRequest:
		r.txn(set, m)
	default:
		return []keys.RangeID{rangeOf(kind)}, false
	}
	if len(r.ids) == 0 {
		// An empty span or txn: any data range refuses or applies it alike.
		return []keys.RangeID{set.All()[0].RangeID}, false
	}
	return r.ids, len(r.ids) > 1 || (r.withLease && r.ids[0] != keys.FirstDataRangeID)
}

// router collects the ranges a request touches.
type router struct {
	ids       []keys.RangeID
	withLease bool
}

func (r *router) key(set *rangedesc.Set, key, end []byte) {
	for _, d := range set.Overlapping(key, end) {
		if !slices.Contains(r.ids, d.RangeID) {
			r.ids = append(r.ids, d.RangeID)
		}
	}
}

func (r *router) lease() { r.withLease = true }

func (r *router) txn(set *rangedesc.Set, t *pb.TxnRequest) {
	kv.TxnKeys(t, func(key, end []byte, lease int64) bool {
		r.key(set, key, end)
		if lease != 0 {
			r.lease()
		}
		return true
	})
}

// rangeOf returns the range that applies commands of kind.
func rangeOf(kind raftcmd.Kind) keys.RangeID {
	if kind.System() {
		return keys.SystemRangeID
	}
	return keys.FirstDataRangeID
}

// rangePublished returns the published state of this node's replica of
// range id, or nil if it has none.
func (s *Server) rangePublished(id keys.RangeID) *replica.Published {
	pub, err := s.store.Published(id)
	if err != nil {
		return nil
	}
	return pub
}

// systemPublished returns the published state of the system range (never
// nil once the node is open).
func (s *Server) systemPublished() *replica.Published {
	if pub := s.rangePublished(keys.SystemRangeID); pub != nil {
		return pub
	}
	return &replica.Published{}
}

// replicatedSpans returns the replicated spans of every range of the node,
// in key order: what a backup holds and the storage quota counts. Every
// data range names the same spans for now (the user data, the leases and
// the services' state), so the first one's stand for all of them.
func replicatedSpans() []keys.Span {
	var spans []keys.Span
	for _, id := range []keys.RangeID{keys.SystemRangeID, keys.FirstDataRangeID} {
		spans = append(spans, keys.ReplicatedSpans(id)...)
	}
	slices.SortFunc(spans, func(a, b keys.Span) int { return bytes.Compare(a.Start, b.Start) })
	return spans
}

// Leader returns the member that leads every range as this node sees it,
// or 0 while the ranges' leaders differ or one is unknown (after a failover,
// until the data ranges' leadership has followed the system range's).
func (s *Server) Leader() uint64 {
	var lead uint64
	for _, id := range s.allRanges() {
		pub := s.rangePublished(id)
		if pub == nil || pub.Lead == 0 || (lead != 0 && pub.Lead != lead) {
			return 0
		}
		lead = pub.Lead
	}
	return lead
}
