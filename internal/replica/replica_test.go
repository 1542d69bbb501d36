package replica

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/raftlog"
)

func TestReplicateAndApply(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	p := nw.put(1, "a", "1")
	nw.stabilize()
	res := result(t, p)
	if res.Err != nil {
		t.Fatalf("put: %v", res.Err)
	}
	resp := res.Resp.(*etcdpb.PutResponse)
	if got := resp.GetHeader().GetRevision(); got != InitialRevision+1 {
		t.Fatalf("revision of first put: got %d, want %d", got, InitialRevision+1)
	}
	for _, id := range nw.ids {
		nw.mustGet(id, "a", "1")
		if got := nw.replicas[id].Published().KV.Revision; got != InitialRevision+1 {
			t.Fatalf("replica %d revision: got %d, want %d", id, got, InitialRevision+1)
		}
	}
}

func TestProposeOnFollowerCompletesThere(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	p := nw.put(3, "a", "from-3")
	nw.stabilize()
	if res := result(t, p); res.Err != nil {
		t.Fatalf("put on follower: %v", res.Err)
	}
	nw.mustGet(1, "a", "from-3")
}

func TestProposeWithoutLeaderFailsFast(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	p := nw.put(2, "a", "1")
	if res := result(t, p); !errors.Is(res.Err, ErrNoLeader) {
		t.Fatalf("put without leader: got %v, want ErrNoLeader", res.Err)
	}
	rd := NewRead()
	nw.replicas[2].ReadIndex(rd)
	nw.ready()
	select {
	case err := <-rd.Done():
		if !errors.Is(err, ErrNoLeader) {
			t.Fatalf("read without leader: got %v, want ErrNoLeader", err)
		}
	default:
		t.Fatalf("read without leader did not complete")
	}
}

func TestReadIndexWaitsForApply(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	nw.put(1, "a", "1")
	nw.stabilize()
	// A follower that has not heard about the latest commit must not serve
	// the read before applying it.
	nw.isolate(3, true)
	nw.put(1, "a", "2")
	nw.stabilize()
	nw.isolate(3, false)
	rd := NewRead()
	nw.replicas[3].ReadIndex(rd)
	nw.ready()
	select {
	case err := <-rd.Done():
		t.Fatalf("read completed before the quorum answered: %v", err)
	default:
	}
	nw.stabilize()
	select {
	case err := <-rd.Done():
		if err != nil {
			t.Fatalf("read: %v", err)
		}
	default:
		nw.tick(2) // heartbeats may be needed to learn the commit index
		if err := <-rd.Done(); err != nil {
			t.Fatalf("read: %v", err)
		}
	}
	nw.mustGet(3, "a", "2")
}

func TestRestartKeepsState(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	for i := 0; i < 20; i++ {
		nw.put(1, key(i), "v")
	}
	nw.stabilize()
	before := nw.replicas[2].AppliedState()
	for _, id := range nw.ids {
		nw.stop(id)
		nw.restart(id)
	}
	after := nw.replicas[2].AppliedState()
	if after.Index != before.Index || after.KV != before.KV {
		t.Fatalf("applied state after restart: got %+v, want %+v", after, before)
	}
	nw.elect(2)
	p := nw.put(2, "next", "v")
	nw.stabilize()
	res := result(t, p)
	if res.Err != nil {
		t.Fatalf("put after restart: %v", res.Err)
	}
	if got, want := res.Resp.(*etcdpb.PutResponse).GetHeader().GetRevision(), before.KV.Revision+1; got != want {
		t.Fatalf("revision after restart: got %d, want %d", got, want)
	}
	for i := 0; i < 20; i++ {
		nw.mustGet(3, key(i), "v")
	}
}

// TestAcknowledgedWritesSurviveCrashOfAll crashes every replica (losing all
// unsynced writes) after writes were acknowledged, and checks they are all
// there after restart.
func TestAcknowledgedWritesSurviveCrashOfAll(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	var acked []int
	for i := 0; i < 30; i++ {
		p := nw.put(1+uint64(i%3), key(i), "v")
		nw.stabilize()
		if res := result(t, p); res.Err == nil {
			acked = append(acked, i)
		}
	}
	if len(acked) != 30 {
		t.Fatalf("acknowledged writes: got %d, want 30", len(acked))
	}
	for _, id := range nw.ids {
		nw.crash(id)
	}
	for _, id := range nw.ids {
		nw.restart(id)
	}
	nw.elect(3)
	// The new leader's first entry commits everything it has.
	nw.tick(3)
	for _, id := range nw.ids {
		for _, i := range acked {
			nw.mustGet(id, key(i), "v")
		}
	}
}

// durableCheckSender verifies, at the moment a replica acknowledges an
// append, that a crash at that instant would keep the acknowledged entries.
type durableCheckSender struct {
	sender
	t      *testing.T
	checks *int
}

func (s durableCheckSender) Send(id keys.RangeID, msgs []*pb.Message) {
	for _, m := range msgs {
		if m.GetType() != pb.MsgAppResp || m.GetReject() {
			continue
		}
		clone := s.nw.fs[s.from].CrashClone(vfs.CrashCloneCfg{})
		db, err := pebble.Open("/data", &pebble.Options{FS: clone, Logger: quietLogger{}})
		if err != nil {
			s.t.Fatalf("open crash clone: %v", err)
		}
		log, err := raftlog.Load(db, testRange, &pb.ConfState{}, nil)
		if err != nil {
			s.t.Fatalf("load log of crash clone: %v", err)
		}
		if last, _ := log.LastIndex(); last < m.GetIndex() {
			s.t.Fatalf("replica %d acknowledged index %d but a crash keeps only %d", s.from, m.GetIndex(), last)
		}
		db.Close()
		*s.checks++
	}
	s.sender.Send(id, msgs)
}

func TestAcknowledgementsFollowSync(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	checks := 0
	for i := 0; i < 10; i++ {
		nw.put(1, key(i), "v")
		for progress := true; progress; {
			progress = false
			for _, id := range nw.ids {
				r := nw.replicas[id]
				for r.HasReady() {
					out, err := r.HandleReady(durableCheckSender{sender{nw, id}, t, &checks})
					if err != nil {
						t.Fatal(err)
					}
					out.Complete()
					progress = true
				}
			}
			if nw.deliver() {
				progress = true
			}
		}
	}
	if checks < 20 {
		t.Fatalf("append acknowledgements checked: got %d, want at least 20", checks)
	}
}

func TestLaggingFollowerCatchesUpBySnapshot(t *testing.T) {
	nw := newNetwork(t, 3, Config{LogTruncateThreshold: 10, LogKeepEntries: 2})
	nw.elect(1)
	nw.put(1, "before", "x")
	nw.stabilize()
	nw.isolate(3, true)
	for i := 0; i < 50; i++ {
		nw.put(1, key(i), "v")
		nw.stabilize()
	}
	nw.put(1, "gone", "x")
	nw.stabilize()
	nw.propose(1, raftcmd.KindDeleteRange, &etcdpb.DeleteRangeRequest{Key: []byte("gone")})
	nw.stabilize()
	first, _ := nw.replicas[1].LogBounds()
	if applied3 := nw.replicas[3].AppliedState().Index; first <= applied3+1 {
		t.Fatalf("leader log starts at %d, follower applied %d: log was not truncated past the follower", first, applied3)
	}
	nw.isolate(3, false)
	nw.tick(5)
	installed := false
	for _, out := range nw.applied[3] {
		installed = installed || out.SnapshotInstalled
	}
	if !installed {
		t.Fatalf("follower caught up without a snapshot")
	}
	for i := 0; i < 50; i++ {
		nw.mustGet(3, key(i), "v")
	}
	if _, ok := nw.get(3, "gone"); ok {
		t.Fatalf("deleted key present on the follower after the snapshot")
	}
	want, got := nw.replicas[1].AppliedState(), nw.replicas[3].AppliedState()
	if got.Index != want.Index || got.KV != want.KV {
		t.Fatalf("follower applied state: got %+v, want %+v", got, want)
	}
	assertSameData(t, nw.dbs[1], nw.dbs[3])
	// The follower keeps working after the snapshot, and survives a restart.
	nw.put(3, "after", "y")
	nw.stabilize()
	nw.stop(3)
	nw.restart(3)
	nw.tick(3)
	nw.mustGet(3, "after", "y")
}

func assertSameData(t *testing.T, a, b *pebble.DB) {
	t.Helper()
	span := keys.MVCCSpan()
	ia, _ := a.NewIter(&pebble.IterOptions{LowerBound: span.Start, UpperBound: span.End})
	ib, _ := b.NewIter(&pebble.IterOptions{LowerBound: span.Start, UpperBound: span.End})
	defer ia.Close()
	defer ib.Close()
	va, vb := ia.First(), ib.First()
	n := 0
	for ; va && vb; va, vb = ia.Next(), ib.Next() {
		if !bytes.Equal(ia.Key(), ib.Key()) || !bytes.Equal(ia.Value(), ib.Value()) {
			t.Fatalf("data differs at entry %d: %q vs %q", n, ia.Key(), ib.Key())
		}
		n++
	}
	if va != vb {
		t.Fatalf("data differs in length after %d entries", n)
	}
}

func TestNewLeaderAfterIsolation(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	nw.put(1, "a", "1")
	nw.stabilize()
	nw.isolate(1, true)
	// A proposal to the isolated leader cannot commit.
	stuck := nw.put(1, "lost", "x")
	// Raft randomizes election timeouts (with its own random source), and
	// the two remaining voters may split their votes: tick until one leads.
	lead := uint64(0)
	for i := 0; i < 500 && lead == 0; i++ {
		nw.tick(1)
		for _, id := range []uint64{2, 3} {
			if nw.replicas[id].Published().Lead == id {
				lead = id
			}
		}
	}
	if lead == 0 {
		t.Fatalf("no leader on the majority side after 500 ticks")
	}
	nw.tick(int(nw.replicas[1].cfg.ElectionTicks)) // CheckQuorum deposes the isolated leader
	if got := nw.replicas[1].Published().State.String(); got == "StateLeader" {
		t.Fatalf("isolated replica is still leader with CheckQuorum on")
	}
	p := nw.put(lead, "a", "2")
	nw.stabilize()
	if res := result(t, p); res.Err != nil {
		t.Fatalf("put on new leader: %v", res.Err)
	}
	nw.isolate(1, false)
	nw.tick(5)
	nw.mustGet(1, "a", "2")
	if _, ok := nw.get(2, "lost"); ok {
		t.Fatalf("a write proposed to a leader without quorum was applied")
	}
	select {
	case res := <-stuck.Done():
		if res.Err == nil {
			t.Fatalf("write proposed to a leader without quorum reported success")
		}
	default:
	}
}

// TestFencedCommandOnlyAppliesInItsTerm: a decision taken by the leader of
// one term must not take effect when appended in another (a deposed leader
// whose proposal is forwarded to its successor).
func TestFencedCommandOnlyAppliesInItsTerm(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	oldTerm := nw.replicas[1].Published().Term
	nw.replicas[1].TransferLeader(2)
	nw.stabilize()
	if got := nw.leader(); got != 2 {
		t.Fatalf("leader after transfer: got %d, want 2", got)
	}
	newTerm := nw.replicas[2].Published().Term
	if newTerm <= oldTerm {
		t.Fatalf("term did not advance: %d then %d", oldTerm, newTerm)
	}
	fenced := func(via uint64, k string, term uint64) *Proposal {
		payload, _ := proto.Marshal(&etcdpb.PutRequest{Key: []byte(k), Value: []byte("v")})
		nw.nextReq++
		cmd := raftcmd.Command{RangeID: testRange, Proposer: via, RequestID: nw.nextReq, Kind: raftcmd.KindPut, Payload: payload, Term: term}
		p := NewProposal(nw.nextReq, cmd.Encode(nil))
		nw.replicas[via].Propose(p)
		return p
	}
	// Proposed on replica 1 (now a follower), fenced to its old leadership,
	// forwarded to replica 2: refused.
	stale := fenced(1, "stale", oldTerm)
	current := fenced(2, "current", newTerm)
	nw.stabilize()
	if res := result(t, stale); !errors.Is(res.Err, ErrStaleLeader) {
		t.Fatalf("command fenced to term %d appended in %d: got %v, want ErrStaleLeader", oldTerm, newTerm, res.Err)
	}
	if res := result(t, current); res.Err != nil {
		t.Fatalf("command fenced to the current term: %v", res.Err)
	}
	for _, id := range nw.ids {
		if _, ok := nw.get(id, "stale"); ok {
			t.Fatalf("replica %d applied a stale fenced command", id)
		}
		nw.mustGet(id, "current", "v")
	}
}

// TestViewMatchesItsSnapshot reads views while another goroutine applies
// writes as fast as it can: whenever View hands out the published state, it
// must be the state stored in the snapshot it returned, never the state of
// the batch before or after.
func TestViewMatchesItsSnapshot(t *testing.T) {
	br := newBenchReplica(t, false)
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			br.propose(raftcmd.KindPut, &etcdpb.PutRequest{Key: []byte(key(i % 100)), Value: []byte("v")})
			for br.r.HasReady() {
				out, err := br.r.HandleReady(nullSender{})
				if err != nil {
					errc <- err
					return
				}
				out.Complete()
			}
		}
	}()
	defer func() {
		close(stop)
		if err := <-errc; err != nil {
			t.Fatalf("apply: %v", err)
		}
	}()
	fast, raced := 0, 0
	start := br.r.Published().KV.Revision
	for br.r.Published().KV.Revision < start+2000 {
		snap := br.r.View()
		pub := snap.Pub
		if pub == nil {
			raced++
			snap.Close()
			continue
		}
		fast++
		st, err := LoadAppliedState(snap, testRange)
		snap.Close()
		if err != nil {
			t.Fatal(err)
		}
		if st.Index != pub.Applied || st.KV != pub.KV {
			t.Fatalf("view: snapshot holds applied index %d, %+v; published state says %d, %+v",
				st.Index, st.KV, pub.Applied, pub.KV)
		}
	}
	if fast == 0 {
		t.Fatalf("published state handed out %d times (%d raced), want it used", fast, raced)
	}
	t.Logf("%d views with the published state, %d raced with an apply", fast, raced)
}

// TestReadsWaitForTheRoundInFlight: a read that arrives while a read index
// round is in flight is not added to it (its index may predate the read)
// and does not start a round of its own either: it waits, with the reads
// that arrive after it, for the next round.
func TestReadsWaitForTheRoundInFlight(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	nw.put(1, "a", "1")
	nw.stabilize()
	rounds := func() int {
		n := 0
		for _, m := range nw.queue {
			if m.GetType() == pb.MsgReadIndex && m.GetFrom() == 3 {
				n++
			}
		}
		return n
	}
	first := NewRead()
	nw.replicas[3].ReadIndex(first)
	nw.ready()
	if got := rounds(); got != 1 {
		t.Fatalf("rounds asked for by the first read: got %d, want 1", got)
	}
	later := []*Read{NewRead(), NewRead(), NewRead()}
	for _, rd := range later {
		nw.replicas[3].ReadIndex(rd)
		nw.ready()
	}
	if got := rounds(); got != 1 {
		t.Fatalf("rounds in flight after 3 more reads: got %d, want 1", got)
	}
	sent := 1
	pending := append([]*Read{first}, later...)
	for i := 0; i < 100 && len(pending) > 0; i++ {
		nw.deliver()
		nw.ready()
		sent += rounds()
		pending = slices.DeleteFunc(pending, func(rd *Read) bool { return readDone(t, rd) })
	}
	if len(pending) > 0 {
		t.Fatalf("%d reads never completed", len(pending))
	}
	if sent != 2 {
		t.Fatalf("read index rounds for 4 reads: got %d, want 2 (the first, then one shared by the rest)", sent)
	}
}

// TestLostReadRoundDoesNotStallLaterReads: Raft drops a read index round
// silently when one of its messages is lost. The reads of that round wait
// for expire to ask again (an election timeout), but reads that arrive after
// it must not wait behind it for that long.
func TestLostReadRoundDoesNotStallLaterReads(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	nw.put(1, "a", "1")
	nw.stabilize()
	lost := NewRead()
	nw.replicas[3].ReadIndex(lost)
	nw.ready()
	nw.queue = nil // the round's MsgReadIndex never reaches the leader
	later := NewRead()
	nw.replicas[3].ReadIndex(later)
	nw.ready()
	doneAfter := func(rd *Read, maxTicks int) int {
		for ticks := 0; ticks <= maxTicks; ticks++ {
			if readDone(t, rd) {
				return ticks
			}
			nw.tick(1)
		}
		return -1
	}
	if got := doneAfter(later, 10); got < 0 || got > readRoundPatienceTicks {
		t.Fatalf("ticks before the later read completed: got %d, want 0 to %d (-1: not within 10)", got, readRoundPatienceTicks)
	}
	if got := doneAfter(lost, 20); got < 0 {
		t.Fatal("the read of the lost round was never asked for again")
	}
}

// TestViewsShareOneSnapshotPerState checks that reads of one applied state
// share a view, that a write ends the sharing, that a view outlives the state
// it shows until its last holder closes it, and that a tick unshares an idle
// view. Pebble's count of open snapshots shows each release; the test's
// cleanup closes Pebble, which fails on any snapshot left open.
func TestViewsShareOneSnapshotPerState(t *testing.T) {
	br := newBenchReplica(t, false)
	put := func(v string) {
		br.propose(raftcmd.KindPut, &etcdpb.PutRequest{Key: []byte("k"), Value: []byte(v)})
		br.drain()
	}
	read := func(v *View) string {
		t.Helper()
		if v.Pub == nil {
			t.Fatalf("view of a quiet replica: got no published state")
		}
		resp, err := kv.Range(v, datarange.Index(v.Derived()), v.Pub.KV, &etcdpb.RangeRequest{Key: []byte("k")})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 {
			t.Fatalf("read k: got %d keys, want 1", len(resp.Kvs))
		}
		return string(resp.Kvs[0].Value)
	}
	open := func(when string, want int) {
		t.Helper()
		if got := br.db.Metrics().Snapshots.Count; got != want {
			t.Fatalf("open snapshots %s: got %d, want %d", when, got, want)
		}
	}

	put("1")
	a, b := br.r.View(), br.r.View()
	if a != b {
		t.Fatalf("two views of one state: got distinct views, want one shared")
	}
	open("with one shared view", 1)
	put("2")
	c := br.r.View()
	if c == a {
		t.Fatalf("view after a write: got the view of the state before it")
	}
	open("after a write, with the old view still held", 2)
	a.Close()
	if got := read(b); got != "1" {
		t.Fatalf("old view after the write: got %q, want %q", got, "1")
	}
	b.Close()
	open("once the old view's holders closed it", 1)
	if got := read(c); got != "2" {
		t.Fatalf("new view: got %q, want %q", got, "2")
	}
	if d := br.r.View(); d != c {
		t.Fatalf("second view of the new state: got a distinct view, want the shared one")
	} else {
		d.Close()
	}
	c.Close()
	open("with the new view shared but not held", 1)
	br.r.Tick()
	open("after a tick", 0)
	if e := br.r.View(); e == c {
		t.Fatalf("view after a tick: got the unshared view back")
	} else {
		e.Close()
	}
}

// TestProposalsSubmittedTogetherShareAnAppend: proposals handed to Propose
// at once go to each follower in one append, and each still completes with
// its own result. A duplicate request ID within the batch fails alone.
func TestProposalsSubmittedTogetherShareAnAppend(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	nw.put(1, "warm", "up")
	nw.stabilize()
	var ps []*Proposal
	for i := range 10 {
		payload, _ := proto.Marshal(&etcdpb.PutRequest{Key: fmt.Appendf(nil, "k%d", i), Value: []byte("v")})
		nw.nextReq++
		cmd := raftcmd.Command{RangeID: testRange, Proposer: 1, RequestID: nw.nextReq, Kind: raftcmd.KindPut, Payload: payload}
		ps = append(ps, NewProposal(nw.nextReq, cmd.Encode(nil)))
	}
	dup := NewProposal(ps[3].RequestID, ps[3].Data)
	nw.replicas[1].Propose(append(ps, dup)...)
	nw.ready()
	appends := map[uint64]int{}
	for _, m := range nw.queue {
		if m.GetType() == pb.MsgApp && len(m.GetEntries()) > 0 {
			appends[m.GetTo()]++
			if got := len(m.GetEntries()); got != len(ps) {
				t.Fatalf("append to %d: got %d entries, want %d", m.GetTo(), got, len(ps))
			}
		}
	}
	if appends[2] != 1 || appends[3] != 1 {
		t.Fatalf("appends per follower: got %v, want one each to 2 and 3", appends)
	}
	if res := result(t, dup); res.Err == nil {
		t.Fatal("duplicate request id in a batch: got no error")
	}
	nw.stabilize()
	for i, p := range ps {
		if res := result(t, p); res.Err != nil {
			t.Fatalf("proposal %d: %v", i, res.Err)
		}
		for _, id := range nw.ids {
			nw.mustGet(id, fmt.Sprintf("k%d", i), "v")
		}
	}
}

// TestProposalBatchesAreBounded: proposals submitted together on a follower
// are forwarded to the leader in messages of at most proposalBytes of
// commands each (the transport sends a message in one frame), and all of
// them complete.
func TestProposalBatchesAreBounded(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	nw.put(1, "warm", "up")
	nw.stabilize()
	value := bytes.Repeat([]byte("v"), proposalBytes/3)
	var ps []*Proposal
	for i := range 8 {
		payload, _ := proto.Marshal(&etcdpb.PutRequest{Key: fmt.Appendf(nil, "big%d", i), Value: value})
		nw.nextReq++
		cmd := raftcmd.Command{RangeID: testRange, Proposer: 2, RequestID: nw.nextReq, Kind: raftcmd.KindPut, Payload: payload}
		ps = append(ps, NewProposal(nw.nextReq, cmd.Encode(nil)))
	}
	nw.replicas[2].Propose(ps...)
	nw.ready()
	var forwarded []int
	for _, m := range nw.queue {
		if m.GetType() != pb.MsgProp || m.GetFrom() != 2 {
			continue
		}
		size := 0
		for _, e := range m.GetEntries() {
			size += len(e.GetData())
		}
		if size > proposalBytes {
			t.Fatalf("forwarded proposal message of %d bytes of commands, want at most %d", size, proposalBytes)
		}
		forwarded = append(forwarded, len(m.GetEntries()))
	}
	if !slices.Equal(forwarded, []int{2, 2, 2, 2}) {
		t.Fatalf("entries per forwarded message: got %v, want [2 2 2 2]", forwarded)
	}
	nw.stabilize()
	for i, p := range ps {
		if res := result(t, p); res.Err != nil {
			t.Fatalf("proposal %d: %v", i, res.Err)
		}
	}
	nw.mustGet(3, "big7", string(value))
}

// TestLogTruncatedByAgreement: while every member holds the entries, the
// leader has them removed on all members soon after they are applied, long
// before the threshold; a lagging member holds the truncation back, catches
// up from the log rather than by snapshot, and then lets it go on.
func TestLogTruncatedByAgreement(t *testing.T) {
	nw := newNetwork(t, 3, Config{LogTruncateThreshold: 1000, LogKeepEntries: 500, LogTruncateStep: 10})
	nw.elect(1)
	// wantFirst checks every member's log starts at first.
	wantFirst := func(when string, first uint64) {
		t.Helper()
		for _, id := range nw.ids {
			if got, _ := nw.replicas[id].LogBounds(); got != first {
				t.Fatalf("%s: member %d's log starts at %d, want %d", when, id, got, first)
			}
			if got := nw.replicas[id].Published().LogFirst; got != first {
				t.Fatalf("%s: member %d publishes a log starting at %d, want %d", when, id, got, first)
			}
		}
	}
	nw.putKeys(1, 5)
	start, _ := nw.replicas[1].LogBounds()
	nw.tick(1)
	wantFirst("fewer entries than the step", start)

	nw.putKeys(1, 30)
	applied := nw.replicas[1].AppliedState().Index
	nw.tick(1)
	wantFirst("all members hold the entries", applied+1)

	nw.isolate(3, true)
	nw.putKeys(1, 30)
	nw.tick(2)
	if got, _ := nw.replicas[1].LogBounds(); got != applied+1 {
		t.Fatalf("member 3 lags: the leader's log starts at %d, want %d (where member 3 stopped)", got, applied+1)
	}

	nw.isolate(3, false)
	nw.tick(3) // heartbeats: the leader learns member 3's log, sends it the rest
	for _, out := range nw.applied[3] {
		if out.SnapshotInstalled {
			t.Fatalf("member 3 caught up by snapshot, want from the log")
		}
	}
	nw.mustGet(3, key(29), "v")
	if got, want := nw.replicas[3].AppliedState().Index, nw.replicas[1].AppliedState().Index; got != want {
		t.Fatalf("member 3 applied %d, want %d", got, want)
	}
	// The truncation went on past the 30 writes member 3 missed.
	first, _ := nw.replicas[1].LogBounds()
	if first <= applied+30 {
		t.Fatalf("member 3 caught up: the leader's log starts at %d, want above %d", first, applied+30)
	}
	wantFirst("member 3 caught up", first)
}

// TestLogTruncatedByBytes: large entries are removed once they hold
// LogTruncateBytes, though fewer than LogTruncateStep of them were applied,
// and without waiting for a tick: entries of 32 KiB values would otherwise
// fill a memtable before the step in entries was reached, and be flushed.
func TestLogTruncatedByBytes(t *testing.T) {
	nw := newNetwork(t, 3, Config{LogTruncateThreshold: 1000, LogKeepEntries: 500, LogTruncateStep: 100, LogTruncateBytes: 64 << 10})
	nw.elect(1)
	start, _ := nw.replicas[1].LogBounds()
	nw.putKeys(1, 5) // small: neither step reached
	if got, _ := nw.replicas[1].LogBounds(); got != start {
		t.Fatalf("after 5 small puts: the leader's log starts at %d, want %d", got, start)
	}
	big := strings.Repeat("v", 32<<10)
	for i := range 3 {
		nw.put(1, key(i), big)
		nw.stabilize()
	}
	applied := nw.replicas[1].AppliedState().Index
	for _, id := range nw.ids {
		if got, _ := nw.replicas[id].LogBounds(); got <= start+5 {
			t.Fatalf("after 3 puts of 32 KiB (96 KiB of entries, step 64 KiB), no tick: member %d's log starts at %d, want above %d", id, got, start+5)
		}
	}
	// Small entries again: the byte count started over at the truncation.
	nw.putKeys(1, 5)
	first, _ := nw.replicas[1].LogBounds()
	if first > applied+1 {
		t.Fatalf("5 small puts after the truncation: the leader's log starts at %d, want at most %d", first, applied+1)
	}
}
