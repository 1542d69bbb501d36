package replica

import (
	"errors"
	"slices"
	"testing"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/synod-io/synod/internal/cluster"
)

func TestAddLearnerCatchesUpBySnapshotThenPromote(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	for i := 0; i < 20; i++ {
		nw.put(1, key(i), "v")
	}
	nw.stabilize()
	nw.addUninitialized(4)
	if pub := nw.replicas[4].Published(); pub.Initialized {
		t.Fatalf("a joining replica reports itself initialized")
	}
	p := nw.confChange(1, pb.ConfChangeAddLearnerNode, 4)
	nw.stabilize()
	nw.tick(3)
	if res := result(t, p); res.Err != nil {
		t.Fatalf("add learner: %v", res.Err)
	}
	installed := false
	for _, out := range nw.applied[4] {
		installed = installed || out.SnapshotInstalled
	}
	if !installed {
		t.Fatalf("the new learner did not get a snapshot")
	}
	pub := nw.replicas[4].Published()
	if !pub.Initialized || !slices.Contains(pub.Learners, 4) || len(pub.Voters) != 3 {
		t.Fatalf("learner's view after joining: %+v", pub)
	}
	for i := 0; i < 20; i++ {
		nw.mustGet(4, key(i), "v")
	}
	m, ok, err := cluster.GetMember(nw.dbs[2], 4)
	if err != nil || !ok || !m.IsLearner || m.Name != "r4" {
		t.Fatalf("member record of the learner on replica 2: got %+v, %v, %v", m, ok, err)
	}

	p = nw.confChange(1, pb.ConfChangeAddNode, 4)
	nw.stabilize()
	nw.tick(2)
	if res := result(t, p); res.Err != nil {
		t.Fatalf("promote: %v", res.Err)
	}
	for _, id := range nw.ids {
		pub := nw.replicas[id].Published()
		if len(pub.Voters) != 4 || len(pub.Learners) != 0 {
			t.Fatalf("replica %d after promotion: voters %v learners %v", id, pub.Voters, pub.Learners)
		}
	}
	if m, _, _ := cluster.GetMember(nw.dbs[3], 4); m.IsLearner {
		t.Fatalf("promoted member still recorded as a learner")
	}
	// With 4 voters, losing one still leaves a quorum that includes the
	// newcomer.
	nw.isolate(2, true)
	p = nw.put(4, "after-promotion", "x")
	nw.stabilize()
	nw.tick(2)
	if res := result(t, p); res.Err != nil {
		t.Fatalf("write with a voter isolated: %v", res.Err)
	}
}

func TestRemoveMember(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	p := nw.confChange(1, pb.ConfChangeRemoveNode, 3)
	nw.stabilize()
	if res := result(t, p); res.Err != nil {
		t.Fatalf("remove: %v", res.Err)
	}
	for _, id := range []uint64{1, 2} {
		pub := nw.replicas[id].Published()
		if slices.Contains(pub.Voters, 3) {
			t.Fatalf("replica %d still counts 3 as a voter: %v", id, pub.Voters)
		}
		if _, ok, _ := cluster.GetMember(nw.dbs[id], 3); ok {
			t.Fatalf("replica %d still has the member record of 3", id)
		}
		if removed, _ := cluster.IsRemoved(nw.dbs[id], 3); !removed {
			t.Fatalf("replica %d does not mark 3 as removed", id)
		}
	}
	// Two voters left: both are needed.
	nw.isolate(3, true)
	p = nw.put(2, "two-voters", "x")
	nw.stabilize()
	if res := result(t, p); res.Err != nil {
		t.Fatalf("write with two voters: %v", res.Err)
	}
}

// TestOneConfChangeAtATime: Raft turns a configuration change proposed
// while another is pending into an empty entry without a word, and a
// follower forwards a change to a leader that may do so; the replica
// refuses both at once, so that the caller retries instead of waiting out
// its deadline.
func TestOneConfChangeAtATime(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	nw.stabilize()
	first := nw.confChange(1, pb.ConfChangeRemoveNode, 3)
	second := nw.confChange(1, pb.ConfChangeRemoveNode, 2)
	if res := result(t, second); !errors.Is(res.Err, raft.ErrProposalDropped) {
		t.Fatalf("second change while one is pending: got %v, want %v", res.Err, raft.ErrProposalDropped)
	}
	follower := nw.confChange(2, pb.ConfChangeRemoveNode, 3)
	if res := result(t, follower); !errors.Is(res.Err, raft.ErrProposalDropped) {
		t.Fatalf("change proposed on a follower: got %v, want %v", res.Err, raft.ErrProposalDropped)
	}
	nw.stabilize()
	if res := result(t, first); res.Err != nil {
		t.Fatalf("first change: %v", res.Err)
	}
	// Applied: the next one is taken.
	third := nw.confChange(1, pb.ConfChangeAddLearnerNode, 3)
	nw.stabilize()
	if res := result(t, third); res.Err != nil {
		t.Fatalf("change after the first applied: %v", res.Err)
	}
	if pub := nw.replicas[1].Published(); len(pub.Voters) != 2 || !slices.Contains(pub.Learners, 3) {
		t.Fatalf("configuration: got voters %v learners %v, want 2 voters and learner 3", pub.Voters, pub.Learners)
	}
}

// TestTruncationByAgreementWaitsForALearner: a learner counts among the
// members that must hold the entries before the leader has them removed;
// once it has caught up (by snapshot, being new), truncation goes on, on
// the learner too.
func TestTruncationByAgreementWaitsForALearner(t *testing.T) {
	nw := newNetwork(t, 3, Config{LogTruncateThreshold: 1000, LogKeepEntries: 500, LogTruncateStep: 10})
	nw.elect(1)
	nw.putKeys(1, 30)
	nw.tick(1)
	before, _ := nw.replicas[1].LogBounds()
	if before <= 30 {
		t.Fatalf("log starts at %d after 30 writes and a tick, want it truncated", before)
	}

	nw.addUninitialized(4)
	nw.isolate(4, true)
	p := nw.confChange(1, pb.ConfChangeAddLearnerNode, 4)
	nw.stabilize()
	if res := result(t, p); res.Err != nil {
		t.Fatalf("add learner: %v", res.Err)
	}
	nw.putKeys(1, 30)
	nw.tick(2)
	if got, _ := nw.replicas[1].LogBounds(); got != before {
		t.Fatalf("the learner holds nothing: the leader's log starts at %d, want %d", got, before)
	}

	nw.isolate(4, false)
	nw.tick(5)
	nw.mustGet(4, key(29), "v")
	first, _ := nw.replicas[1].LogBounds()
	if first <= before+30 {
		t.Fatalf("the learner caught up: the leader's log starts at %d, want above %d", first, before+30)
	}
	for _, id := range nw.ids {
		if got, _ := nw.replicas[id].LogBounds(); got != first {
			t.Fatalf("member %d's log starts at %d, want %d as on the leader", id, got, first)
		}
	}
}
