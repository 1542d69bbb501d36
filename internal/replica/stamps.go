package replica

import (
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/synod-io/synod/internal/raftcmd"
)

// Revision stamps. A data range's leader stamps every command it appends
// with a revision from the cluster's oracle (raftcmd.Command.Revision), at
// the moment it hands the command to Raft, which appends it at once: stamps
// follow the log. The replica holds blocks of revisions the node fetched
// from the oracle for it (it asks for them in its output, RevisionsWanted,
// and gets them through AddRevisions), each for the term it was asked in:
// a leader discards them when its term ends, and a new leader asks for its
// own after its election, so its stamps are above every stamp of an earlier
// term that can still commit (those were made before the election, from
// revisions the oracle handed out before). While it has none it holds the
// proposals, in order, and stamps them once revisions come.

// RevisionsWanted asks the node for revisions from the oracle: N of them,
// all above Floor, for the replica, which leads its range in Term
// (AddRevisions). Floor is the range's revision once every entry of the
// terms before is applied: the oracle skips above it, so that stamps stay
// above revisions the range took otherwise (from a log written before
// stamping, or a restored backup).
type RevisionsWanted struct {
	Term  uint64
	N     uint64
	Floor uint64
	// Seq tags a request of a replica with fresh revisions
	// (Config.FreshRevisions): its answer must carry it back.
	Seq uint64
}

// revisionBlockMin is the least a leader asks for at once, and
// revisionBlockMax the most; it asks for the next block once half of what
// it holds is used, and for twice as many each time proposals had to wait
// for revisions. A leader asks for its first block at its first proposal: one
// that writes nothing leaves no gap. What a leader held when its term ended
// is a gap in the revisions.
const (
	revisionBlockMin = 64
	revisionBlockMax = 64 << 10
)

// maxHeldProposals bounds the proposal messages a leader holds while it
// waits for revisions; more are dropped (raft.ErrProposalDropped).
const maxHeldProposals = 4096

// stamper is the leader's state of revision stamping.
type stamper struct {
	// term is the term the blocks were asked for in.
	term uint64
	// blocks are the revisions held, each [first, last], in order.
	blocks [][2]uint64
	// held are proposal messages waiting for revisions, in order; need
	// is the sum of their stamps (heldProposal.n).
	held []heldProposal
	need uint64
	// asked is set from a request for revisions (askedTick) until
	// revisions come or the request is given up.
	asked     bool
	askedTick uint64
	// want is a request not yet handed to the node.
	want *RevisionsWanted
	// size is the size of the next block asked for.
	size uint64
	// readFloor is the highest revision a read fence was raised to: no
	// stamp at or below it (fence.go). It outlives terms.
	readFloor uint64
	// fenced is set when a read fence dropped revisions: proposals that
	// then wait did not outrun the blocks, which do not grow for them.
	fenced bool
	// arrivals counts the proposal messages of the term, and askedSeq is
	// what it was when the outstanding request was made (fresh revisions
	// only).
	arrivals, askedSeq uint64
}

type heldProposal struct {
	m   *pb.Message
	ps  []*Proposal // this node's proposals among m's entries
	seq uint64      // arrival number (fresh revisions only)
	n   uint64      // the stamps m takes (stampable in the stamper's term)
}

// hold adds a proposal message to those waiting for revisions.
func (s *stamper) hold(h heldProposal) {
	s.held = append(s.held, h)
	s.need += h.n
}

// unhold removes the first proposal message waiting for revisions and
// returns it.
func (s *stamper) unhold() heldProposal {
	h := s.held[0]
	s.held[0] = heldProposal{}
	s.held = s.held[1:]
	s.need -= h.n
	return h
}

// available is the number of revisions held.
func (s *stamper) available() uint64 {
	var n uint64
	for _, b := range s.blocks {
		n += b[1] - b[0] + 1
	}
	return n
}

// take returns the next revision held.
func (s *stamper) take() uint64 {
	b := &s.blocks[0]
	rev := b[0]
	if b[0] == b[1] {
		s.blocks = s.blocks[1:]
	} else {
		b[0]++
	}
	return rev
}

// stamping reports whether this replica stamps commands now: it stamps
// them when it leads a range configured to (Config.StampRevisions); then it
// also returns the term.
func (r *Replica) stamping() (uint64, bool) {
	if !r.cfg.StampRevisions {
		return 0, false
	}
	st := r.rn.BasicStatus()
	if st.RaftState != raft.StateLeader {
		return 0, false
	}
	return st.GetTerm(), true
}

// syncStamper drops the revisions and held proposals of a term that is not
// the current one (the replica lost its leadership, or won a new term).
func (r *Replica) syncStamper(term uint64) {
	s := &r.stamps
	if s.term == term {
		return
	}
	r.dropHeld(ErrDropped)
	*s = stamper{term: term, size: revisionBlockMin, readFloor: s.readFloor}
}

// dropHeld fails the proposals held for revisions with err (ErrDropped:
// the server proposes them again in the next term) and forgets the held
// messages of other members, which they propose again in their turn.
func (r *Replica) dropHeld(err error) {
	for _, h := range r.stamps.held {
		for _, p := range h.ps {
			delete(r.proposals, p.RequestID)
			p.complete(Result{Err: err})
		}
	}
	r.stamps.held, r.stamps.need = nil, 0
}

// stepProposal hands Raft a proposal message (this node's proposals ps
// among its entries), stamping its commands first when this replica leads
// a stamped range. If it holds too few revisions, the message waits, with
// those before it, and more are asked for. ok is false if the message is
// held.
func (r *Replica) stepProposal(m *pb.Message, ps []*Proposal) (bool, error) {
	term, ok := r.stamping()
	if !ok {
		return true, r.rn.Step(m)
	}
	r.syncStamper(term)
	s := &r.stamps
	if !r.cfg.FreshRevisions && splits(m) {
		// From the split on there are several ranges: what this leader
		// stamps after appending it must follow real time across them
		// already, before it applies it (another replica may apply it
		// first and lead the new range).
		r.useFreshRevisions()
	}
	if r.cfg.FreshRevisions {
		return r.stepFresh(m, ps, term)
	}
	if n := stampable(m, term); len(s.held) > 0 || s.available() < n {
		if len(s.held) >= maxHeldProposals {
			// The oracle has been out of reach for long (the system
			// range lost its quorum): refuse rather than grow.
			r.askRevisions()
			return false, raft.ErrProposalDropped
		}
		s.hold(heldProposal{m: m, ps: ps, n: n})
		r.askRevisions()
		return false, nil
	}
	r.stamp(m)
	r.askRevisions()
	return true, r.rn.Step(m)
}

// splits reports whether m proposes a split (raftcmd.KindRangeSplit).
func splits(m *pb.Message) bool {
	for _, e := range m.Entries {
		if e.GetType() == pb.EntryNormal && len(e.Data) > 0 {
			if k, _, ok := raftcmd.Peek(e.Data); ok && k == raftcmd.KindRangeSplit {
				return true
			}
		}
	}
	return false
}

// stampable counts the entries of m that get a stamp from the leader of
// term.
func stampable(m *pb.Message, term uint64) uint64 {
	var n uint64
	for _, e := range m.Entries {
		if stamped(e, term) {
			n++
		}
	}
	return n
}

// stamped reports whether entry e gets a stamp from the leader of term: a
// command of a kind that may write keys (raftcmd.Kind.Stamped), unless it
// is fenced to another term, which refuses it at apply. The others leave
// no gap in the revisions.
func stamped(e *pb.Entry, term uint64) bool {
	if e.GetType() != pb.EntryNormal || len(e.Data) == 0 {
		return false
	}
	k, fence, ok := raftcmd.Peek(e.Data)
	return ok && k.Stamped() && (fence == 0 || fence == term)
}

// stamp sets the revision of every command of m that gets one, in order.
func (r *Replica) stamp(m *pb.Message) {
	for _, e := range m.Entries {
		if stamped(e, r.stamps.term) {
			e.Data = raftcmd.AppendRevision(e.Data, r.stamps.take())
		}
	}
}

// askRevisions asks for a block of revisions when the replica holds less
// than half a block and has not asked yet (enough for the held proposals
// at least). A new leader asks once it has applied an entry of its term,
// so every entry of earlier terms is applied and the range's revision is
// the floor.
func (r *Replica) askRevisions() {
	s := &r.stamps
	need := s.need
	if r.cfg.FreshRevisions {
		r.askFresh(need)
		return
	}
	if s.asked || s.term == 0 || r.state.Term < s.term || (s.available() >= s.size/2 && need == 0) {
		return
	}
	if need > 0 && s.size < revisionBlockMax && !s.fenced {
		// The revisions ran out before the next block came: ask for
		// more at a time.
		s.size *= 2
	}
	s.fenced = false
	s.asked, s.askedTick = true, r.tick
	s.want = &RevisionsWanted{Term: s.term, N: max(s.size, 2*need), Floor: max(uint64(max(r.state.KV.Revision, 0)), s.readFloor)}
}

// AddRevisions gives the replica n revisions from first on, asked for in
// term (RevisionsWanted), and steps the proposals that waited for them.
// Revisions of a term the replica no longer leads are dropped.
func (r *Replica) AddRevisions(term, first, n uint64) {
	r.AddRevisionsFor(RevisionsWanted{Term: term, N: n}, first)
}

// AddRevisionsFor gives the replica the revisions it asked for with w,
// from first on.
func (r *Replica) AddRevisionsFor(w RevisionsWanted, first uint64) {
	if r.cfg.FreshRevisions {
		r.addFresh(w, first)
		return
	}
	term, n := w.Term, w.N
	cur, ok := r.stamping()
	if !ok || cur != term || n == 0 {
		return
	}
	r.syncStamper(term)
	s := &r.stamps
	s.blocks = append(s.blocks, [2]uint64{first, first + n - 1})
	if s.trim() { // asked for before a read fence was raised above some of them
		s.fenced = true
	}
	s.asked = false
	for len(s.held) > 0 && s.available() >= s.held[0].n {
		h := s.unhold()
		r.stamp(h.m)
		if err := r.rn.Step(h.m); err != nil {
			r.failProposals(h.ps, err)
		}
	}
	r.askRevisions()
}

// expireStamps gives up a request for revisions left unanswered for two
// election timeouts (the oracle had no leader) and asks again; and drops
// what a replica that no longer leads its term holds.
func (r *Replica) expireStamps() {
	term, ok := r.stamping()
	r.syncStamper(term) // 0 when not leading: drops what the term held
	if !ok {
		return
	}
	if s := &r.stamps; s.asked && r.tick-s.askedTick > 2*uint64(r.cfg.ElectionTicks) {
		s.asked = false
		r.askRevisions()
	}
}

// takeRevisionsWanted returns the request for revisions not yet handed to
// the node, if any.
func (r *Replica) takeRevisionsWanted() *RevisionsWanted {
	w := r.stamps.want
	r.stamps.want = nil
	return w
}

// Fresh revisions (Config.FreshRevisions). With several data ranges, each
// leader holding blocks fetched earlier could stamp a write that begins
// after another range acknowledged a write with a revision below that
// write's: revisions would no longer follow real time across ranges. So
// such a leader stamps a proposal only with revisions fetched after the
// proposal arrived: it holds every proposal that needs a stamp, asks the
// oracle for exactly what the held ones need (tagged with the arrivals
// so far), and stamps the proposals that arrived before the request with
// the answer; what it does not use is a gap. Proposals that arrive while
// a request is out wait for the next one, so a busy leader makes one
// oracle round per batch of proposals.

// stepFresh is stepProposal for fresh revisions.
func (r *Replica) stepFresh(m *pb.Message, ps []*Proposal, term uint64) (bool, error) {
	s := &r.stamps
	n := stampable(m, term)
	if len(s.held) == 0 && n == 0 {
		return true, r.rn.Step(m)
	}
	if len(s.held) >= maxHeldProposals {
		r.askRevisions()
		return false, raft.ErrProposalDropped
	}
	s.arrivals++
	s.hold(heldProposal{m: m, ps: ps, seq: s.arrivals, n: n})
	r.askRevisions()
	return false, nil
}

// askFresh asks for the need revisions of the held proposals, unless a
// request is out.
func (r *Replica) askFresh(need uint64) {
	s := &r.stamps
	if s.asked || s.term == 0 || r.state.Term < s.term || need == 0 {
		return
	}
	s.asked, s.askedTick, s.askedSeq = true, r.tick, s.arrivals
	s.want = &RevisionsWanted{Term: s.term, N: need, Floor: max(uint64(max(r.state.KV.Revision, 0)), s.readFloor), Seq: s.arrivals}
}

// addFresh stamps the proposals that arrived before request w with the
// revisions that answer it, and drops the rest.
func (r *Replica) addFresh(w RevisionsWanted, first uint64) {
	cur, ok := r.stamping()
	if !ok || cur != w.Term || w.N == 0 {
		return
	}
	r.syncStamper(w.Term)
	s := &r.stamps
	if !s.asked || w.Seq != s.askedSeq {
		return // an answer to a request given up on
	}
	s.asked = false
	s.blocks = [][2]uint64{{first, first + w.N - 1}}
	s.trim()
	for len(s.held) > 0 && (s.held[0].seq <= w.Seq || s.held[0].n == 0) && s.available() >= s.held[0].n {
		h := s.unhold()
		r.stamp(h.m)
		if err := r.rn.Step(h.m); err != nil {
			r.failProposals(h.ps, err)
		}
	}
	s.blocks = nil
	r.askRevisions()
}

// useFreshRevisions makes a stamping replica stamp with fresh revisions
// from now on (its range split, so there are several): the blocks it holds
// are dropped (a gap), and the proposals it held for revisions wait for
// fresh ones, in order.
func (r *Replica) useFreshRevisions() {
	if r.cfg.FreshRevisions || !r.cfg.StampRevisions {
		return
	}
	r.cfg.FreshRevisions = true
	s := &r.stamps
	s.blocks, s.asked = nil, false
	for i := range s.held {
		s.arrivals++
		s.held[i].seq = s.arrivals
	}
	if s.term != 0 {
		r.askRevisions()
	}
}
