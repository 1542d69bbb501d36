package replica

import (
	"errors"
	"testing"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/synod-io/synod/internal/raftcmd"
)

// wanted returns the last request for revisions replica id made since the
// network started, and forgets the requests.
func (nw *network) wanted(id uint64) *RevisionsWanted {
	var w *RevisionsWanted
	for _, out := range nw.applied[id] {
		if out.RevisionsWanted != nil {
			w = out.RevisionsWanted
		}
	}
	nw.applied[id] = nil
	return w
}

// transfer hands the leadership from replica from to replica to.
func (nw *network) transfer(from, to uint64) {
	nw.t.Helper()
	nw.replicas[from].TransferLeader(to)
	nw.stabilize()
	if got := nw.leader(); got != to {
		nw.t.Fatalf("leader after a transfer: got %d, want %d", got, to)
	}
}

func pending(p *Proposal) bool {
	select {
	case res := <-p.Done():
		p.done <- res
		return false
	default:
		return true
	}
}

// TestStampsFollowTheLogAndTheTerm checks the leader's revision stamps:
// proposals (a follower's too) wait until the node hands the leader the
// revisions it asked for, asked above the range's revision once the terms
// before are applied; writes take them in log order; revisions of another
// term are refused; and a leader that loses its term fails the proposals
// still waiting, to be proposed again.
func TestStampsFollowTheLogAndTheTerm(t *testing.T) {
	nw := newNetwork(t, 3, Config{StampRevisions: true})
	nw.elect(1)
	if w := nw.wanted(1); w != nil {
		t.Fatalf("a leader without proposals asked for revisions: %+v", *w)
	}
	p := nw.put(2, "a", "1")
	nw.stabilize()
	if !pending(p) {
		t.Fatalf("a put completed before the leader had revisions: %+v", result(t, p))
	}
	w := nw.wanted(1)
	term := nw.replicas[1].Status().GetTerm()
	if w == nil || w.Term != term || w.N < revisionBlockMin || w.Floor != InitialRevision {
		t.Fatalf("request for revisions: got %+v, want term %d, at least %d, floor %d", w, term, revisionBlockMin, InitialRevision)
	}
	nw.replicas[1].AddRevisions(w.Term, 100, w.N)
	nw.stabilize()
	if res := result(t, p); res.Err != nil {
		t.Fatal(res.Err)
	}
	rev := func(id uint64) int64 { return nw.replicas[id].AppliedState().KV.Revision }
	for _, id := range nw.ids {
		if got := rev(id); got != 100 {
			t.Fatalf("revision of the first put on %d: got %d, want 100 (the first revision handed over)", id, got)
		}
	}
	nw.put(1, "b", "2")
	nw.stabilize()
	if got := rev(3); got != 101 {
		t.Fatalf("revision of the second put: got %d, want 101", got)
	}

	// A new leader asks for its own revisions, above the range's.
	nw.transfer(1, 2)
	p = nw.put(2, "c", "3")
	nw.stabilize()
	w = nw.wanted(2)
	if w == nil || w.Floor != 101 || w.Term != nw.replicas[2].Status().GetTerm() {
		t.Fatalf("new leader's request: got %+v, want floor 101 in term %d", w, nw.replicas[2].Status().GetTerm())
	}
	nw.replicas[2].AddRevisions(w.Term-1, 5000, w.N) // another term's: refused
	nw.stabilize()
	if !pending(p) {
		t.Fatalf("a put completed with revisions of another term")
	}
	nw.replicas[2].AddRevisions(w.Term, 200, w.N)
	nw.stabilize()
	if res := result(t, p); res.Err != nil || rev(1) != 200 {
		t.Fatalf("put after the revisions came: got %v at revision %d, want revision 200", res.Err, rev(1))
	}

	// A leader that loses its term fails what waited for revisions.
	nw.transfer(2, 3)
	p = nw.put(3, "d", "4")
	nw.stabilize()
	if !pending(p) {
		t.Fatalf("a put completed before the leader had revisions")
	}
	nw.transfer(3, 1)
	nw.tick(1)
	if res := result(t, p); !errors.Is(res.Err, ErrDropped) {
		t.Fatalf("put held by a deposed leader: got %v, want %v", res.Err, ErrDropped)
	}
}

// TestHeldProposalsAreBounded checks that a leader waiting for revisions
// holds at most maxHeldProposals messages and refuses the next ones.
func TestHeldProposalsAreBounded(t *testing.T) {
	nw := newNetwork(t, 1, Config{StampRevisions: true})
	nw.elect(1)
	var ps []*Proposal
	for range maxHeldProposals {
		ps = append(ps, nw.put(1, "k", "v"))
	}
	over := nw.put(1, "k", "v")
	if res := result(t, over); !errors.Is(res.Err, ErrDropped) {
		t.Fatalf("proposal beyond the held bound: got %v, want %v", res.Err, ErrDropped)
	}
	for _, p := range ps[:3] {
		if !pending(p) {
			t.Fatalf("a held proposal completed without revisions")
		}
	}
}

func fenceResult(t *testing.T, f *Fence) (FenceResult, bool) {
	t.Helper()
	select {
	case res := <-f.Done():
		return res, true
	default:
		return FenceResult{}, false
	}
}

// TestReadFence checks a leader's read fences: no stamp at or below a
// fence's revision afterwards (what it held is dropped, blocks that come
// later are trimmed, new ones asked above it), the index answered covers
// every entry appended before the fence once it is on disk, a follower
// refuses, and a read made to wait for that index waits for it.
func TestReadFence(t *testing.T) {
	nw := newNetwork(t, 3, Config{StampRevisions: true})
	nw.elect(1)
	leader := nw.replicas[1]
	term := leader.Status().GetTerm()
	nw.put(1, "a", "1")
	nw.stabilize()
	w := nw.wanted(1)
	leader.AddRevisions(w.Term, 100, w.N) // [100, 100+N)
	nw.stabilize()
	rev := func(id uint64) int64 { return nw.replicas[id].AppliedState().KV.Revision }
	if rev(1) != 100 {
		t.Fatalf("revision of the first put: got %d, want 100", rev(1))
	}

	// Nothing pending: the fence is answered at once with the last index.
	f := NewFence(100 + w.N + 10)
	leader.FenceReads(f)
	res, ok := fenceResult(t, f)
	_, last := leader.LogBounds()
	if !ok || res.Err != nil || res.Term != term || res.Index != last {
		t.Fatalf("fence with nothing pending: got %+v (answered %v), want term %d index %d", res, ok, term, last)
	}
	// The revisions held are all below it: a put waits for new ones, asked
	// above the fence.
	p := nw.put(2, "b", "2")
	nw.stabilize()
	if !pending(p) {
		t.Fatalf("a put was stamped with a revision held below a read fence: %+v", result(t, p))
	}
	w = nw.wanted(1)
	if w == nil || w.Floor != 100+w.N+10 {
		t.Fatalf("request after the fence: got %+v, want floor %d", w, 100+w.N+10)
	}
	// A block asked for before a higher fence is trimmed when it comes.
	leader.FenceReads(NewFence(5000))
	leader.AddRevisions(w.Term, 4990, w.N) // [4990, 4990+N): 4990-5000 dropped
	nw.stabilize()
	if res := result(t, p); res.Err != nil || rev(2) != 5001 {
		t.Fatalf("put after the fence: got %v at revision %d, want revision 5001", res.Err, rev(2))
	}

	// Entries appended and not yet on disk: the fence waits for the next
	// Ready, and its index covers them.
	nw.put(1, "c", "3")
	f = NewFence(5001)
	leader.FenceReads(f)
	if _, ok := fenceResult(t, f); ok {
		t.Fatalf("a fence was answered before the entries appended before it were on disk")
	}
	nw.stabilize()
	res, ok = fenceResult(t, f)
	if !ok || res.Err != nil {
		t.Fatalf("fence after a Ready: got %+v (answered %v)", res, ok)
	}
	if got, _ := nw.get(1, "c"); got != "3" {
		t.Fatalf("put before the fence: got %q, want 3", got)
	}
	if _, last := leader.LogBounds(); res.Index != last {
		t.Fatalf("fence index: got %d, want %d (the put's entry)", res.Index, last)
	}

	// A follower is no leader to fence.
	f = NewFence(6000)
	nw.replicas[2].FenceReads(f)
	if res, ok := fenceResult(t, f); !ok || !errors.Is(res.Err, ErrNotLeader) {
		t.Fatalf("fence on a follower: got %+v (answered %v), want %v", res, ok, ErrNotLeader)
	}

	// A read waits until its replica applied the fence's index.
	_, last = leader.LogBounds()
	rd := NewReadAtLeast(last+1, term)
	nw.replicas[3].ReadIndex(rd)
	nw.stabilize()
	select {
	case err := <-rd.Done():
		t.Fatalf("read completed before index %d was applied: %v", last+1, err)
	default:
	}
	nw.put(1, "d", "4")
	nw.stabilize()
	select {
	case err := <-rd.Done():
		if err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("read still waiting once index %d was applied", last+1)
	}

	// A read whose fence index is applied already goes at once: the
	// fence's leader made the read index round, the reader makes none.
	_, last = leader.LogBounds()
	now := NewReadAtLeast(last, term)
	nw.replicas[3].ReadIndex(now)
	select {
	case err := <-now.Done():
		if err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("a read of an applied fence index waited for a Ready")
	}
	if n := len(nw.replicas[3].pendingReads); n != 0 {
		t.Fatalf("got %d reads waiting for a read index round, want 0", n)
	}
	// Without a fence index it is a plain read, with its round.
	plain := NewReadAtLeast(0, 0)
	nw.replicas[3].ReadIndex(plain)
	if n := len(nw.replicas[3].pendingReads); n != 1 {
		t.Fatalf("a read without a fence index: got %d reads waiting for a read index round, want 1", n)
	}
	nw.stabilize()
	if err := <-plain.Done(); err != nil {
		t.Fatal(err)
	}

	// A fence index the log never reaches (the fence's leader lost what it
	// had appended): the read goes once an entry of a later term is
	// applied, and does not hold back a read behind it.
	_, last = leader.LogBounds()
	stuck := NewReadAtLeast(last+1000, term)
	nw.replicas[3].ReadIndex(stuck)
	nw.stabilize()
	behind := NewRead()
	nw.replicas[3].ReadIndex(behind)
	nw.stabilize()
	select {
	case err := <-behind.Done():
		if err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("a read waited behind one waiting for a fence index")
	}
	select {
	case err := <-stuck.Done():
		t.Fatalf("read for a fence index far ahead completed in the fence's term: %v", err)
	default:
	}
	nw.transfer(1, 2) // the new leader appends an entry of its term
	select {
	case err := <-stuck.Done():
		if err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("read for a fence of term %d still waiting after an entry of term %d was applied", term, nw.replicas[3].AppliedState().Term)
	}
}

// TestFreshRevisions checks the stamps of a leader that stamps only with
// revisions fetched after a proposal arrived (Config.FreshRevisions): every
// proposal waits for a request made after it, asking exactly what the held
// proposals need; proposals that arrive while a request is out wait for
// the next one; an answer to a request given up on, or revisions left
// over, stamp nothing.
func TestFreshRevisions(t *testing.T) {
	nw := newNetwork(t, 3, Config{StampRevisions: true, FreshRevisions: true})
	nw.elect(1)
	leader := nw.replicas[1]
	rev := func(id uint64) int64 { return nw.replicas[id].AppliedState().KV.Revision }

	p1 := nw.put(1, "a", "1")
	p2 := nw.put(2, "b", "2") // a follower's, forwarded
	nw.stabilize()
	w1 := nw.wanted(1)
	if w1 == nil || w1.N != 1 || w1.Seq != 1 {
		t.Fatalf("first request: got %+v, want 1 revision for the first arrival", w1)
	}
	// p2 arrived while the request was out: the answer does not cover it,
	// even with revisions to spare.
	w1.N = 5
	leader.AddRevisionsFor(*w1, 100)
	nw.stabilize()
	if res := result(t, p1); res.Err != nil || rev(1) != 100 {
		t.Fatalf("first put: got %v at revision %d, want revision 100", res.Err, rev(1))
	}
	if !pending(p2) {
		t.Fatalf("a put that arrived after the request was stamped from its answer")
	}
	w2 := nw.wanted(1)
	if w2 == nil || w2.N != 1 || w2.Seq != 2 {
		t.Fatalf("second request: got %+v, want 1 revision for the second arrival", w2)
	}
	// A late answer to the first request again stamps nothing.
	leader.AddRevisionsFor(*w1, 150)
	nw.stabilize()
	if !pending(p2) {
		t.Fatalf("a put was stamped from an answer to an earlier request")
	}
	// More revisions than needed: the rest is a gap, not a stock.
	w2.N = 10
	leader.AddRevisionsFor(*w2, 200)
	nw.stabilize()
	if res := result(t, p2); res.Err != nil || rev(3) != 200 {
		t.Fatalf("second put: got %v at revision %d, want revision 200", res.Err, rev(3))
	}
	p3 := nw.put(1, "c", "3")
	nw.stabilize()
	if !pending(p3) {
		t.Fatalf("a put was stamped from revisions left over from an earlier answer")
	}
	w3 := nw.wanted(1)
	if w3 == nil || w3.Seq != 3 {
		t.Fatalf("third request: got %+v, want one for the third arrival", w3)
	}
	// A read fence raised meanwhile trims the answer.
	leader.FenceReads(NewFence(300))
	w3.N = 5
	leader.AddRevisionsFor(*w3, 298) // 298-300 dropped, 301 stamps
	nw.stabilize()
	if res := result(t, p3); res.Err != nil || rev(2) != 301 {
		t.Fatalf("third put: got %v at revision %d, want revision 301", res.Err, rev(2))
	}
}

// TestFreshRevisionsDoNotHoldUnstampedCommands: a command that needs no
// stamp (a lease grant, a compaction, a system-state copy), arriving while
// a request for revisions is out, goes with the proposals before it, not
// after the next stamped one (found in review: it waited for the proposal
// timeout on a quiet range).
func TestFreshRevisionsDoNotHoldUnstampedCommands(t *testing.T) {
	nw := newNetwork(t, 3, Config{StampRevisions: true, FreshRevisions: true})
	nw.elect(1)
	leader := nw.replicas[1]
	p1 := nw.put(1, "a", "1")
	nw.stabilize()
	w1 := nw.wanted(1)
	if w1 == nil {
		t.Fatal("no request for revisions")
	}
	g := nw.propose(1, raftcmd.KindLeaseGrant, &etcdpb.LeaseGrantRequest{ID: 7, TTL: 60})
	nw.stabilize()
	leader.AddRevisionsFor(*w1, 100)
	nw.stabilize()
	if res := result(t, p1); res.Err != nil {
		t.Fatal(res.Err)
	}
	nw.tick(10)
	nw.stabilize()
	if pending(g) {
		t.Fatalf("lease grant (no stamp needed) still held after 10 ticks; wanted now: %+v", nw.wanted(1))
	}
}
