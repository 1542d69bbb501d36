package replica

import (
	"errors"
	"testing"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/raftcmd"
)

// TestFencedProposalLostInALeaderChangeFailsAtOnce: a follower's proposal,
// fenced to the term it was made in, is lost on its way to the leader, and
// leadership moves. As soon as the follower applies an entry of the next
// leader's term, the proposal can no longer apply, and it fails with
// ErrStaleLeader then (its caller proposes it again), not after its
// deadline. Delivered late to the new leader, the lost message is appended
// in the new term and refused at apply: the command never applies twice.
func TestFencedProposalLostInALeaderChangeFailsAtOnce(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	term := nw.replicas[2].Published().Term

	payload, err := proto.Marshal(&etcdpb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	nw.nextReq++
	cmd := raftcmd.Command{RangeID: testRange, Proposer: 2, RequestID: nw.nextReq, Kind: raftcmd.KindPut, Payload: payload, Term: term}
	p := NewProposal(nw.nextReq, cmd.Encode(nil))
	p.Term = term
	nw.replicas[2].Propose(p)
	nw.ready()
	// The forwarded proposal is lost on its way to the leader.
	var lost []*pb.Message
	kept := nw.queue[:0]
	for _, m := range nw.queue {
		if m.GetType() == pb.MsgProp {
			lost = append(lost, m)
			continue
		}
		kept = append(kept, m)
	}
	nw.queue = kept
	if len(lost) != 1 {
		t.Fatalf("forwarded proposals: got %d, want 1", len(lost))
	}

	// Leadership moves to 3 (as the ranges' leaders follow the system
	// range's).
	nw.replicas[1].TransferLeader(3)
	nw.stabilize()
	if got := nw.leader(); got != 3 {
		t.Fatalf("leader after the transfer: got %d, want 3", got)
	}
	if got := nw.replicas[2].Published().Term; got <= term {
		t.Fatalf("follower's term after the election: got %d, want above %d", got, term)
	}
	res := result(t, p) // fails the test if still waiting
	if !errors.Is(res.Err, ErrStaleLeader) {
		t.Fatalf("lost proposal: got %v, want %v", res.Err, ErrStaleLeader)
	}

	// The lost message turns up at the new leader, which appends it in its
	// own term: apply refuses it.
	lost[0].To = proto.Uint64(3)
	nw.queue = append(nw.queue, lost[0])
	nw.stabilize()
	for _, id := range nw.ids {
		if v, ok := nw.get(id, "k"); ok {
			t.Fatalf("replica %d holds k=%q: a command fenced to term %d applied in a later term", id, v, term)
		}
	}
}
