package transport

import (
	"sync"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/replica"
)

// scripted is an Interceptor whose verdict depends on the message's Commit
// field: 0 drops, 1 delivers, 2 duplicates, 3 holds the message until
// release.
type scripted struct {
	mu        sync.Mutex
	held      []func()
	snapshots bool
}

func (s *scripted) Message(_ keys.RangeID, m *pb.Message, deliver func()) {
	switch m.GetCommit() % 4 {
	case 1:
		deliver()
	case 2:
		deliver()
		deliver()
	case 3:
		s.mu.Lock()
		s.held = append(s.held, deliver)
		s.mu.Unlock()
	}
}

func (s *scripted) Snapshot(keys.RangeID, uint64) bool { return s.snapshots }

// release delivers the held messages in reverse order (a reordering).
func (s *scripted) release() {
	s.mu.Lock()
	held := s.held
	s.held = nil
	s.mu.Unlock()
	for i := len(held) - 1; i >= 0; i-- {
		held[i]()
	}
}

func TestInterceptorDecidesDelivery(t *testing.T) {
	a, _ := startNode(t, 1, 10)
	b, addrB := startNode(t, 1, 20)
	ic := &scripted{}
	a.t.cfg.Interceptor = ic // set before any traffic
	a.t.SetPeer(20, addrB)

	// Commits 1..8: 1 and 5 delivered, 2 and 6 duplicated, 3 and 7 held,
	// 4 and 8 dropped.
	for i := 1; i <= 8; i++ {
		a.t.Send(1, []*pb.Message{heartbeat(10, 20, i)})
	}
	waitFor(t, "delivered and duplicated messages", func() bool { return b.rec.count(1) == 6 })
	ic.release()
	waitFor(t, "held messages", func() bool { return b.rec.count(1) == 8 })

	b.rec.mu.Lock()
	var got []uint64
	for _, m := range b.rec.msgs[1] {
		got = append(got, m.GetCommit())
	}
	b.rec.mu.Unlock()
	counts := map[uint64]int{}
	for _, c := range got {
		counts[c]++
	}
	want := map[uint64]int{1: 1, 2: 2, 3: 1, 5: 1, 6: 2, 7: 1}
	for c, n := range want {
		if counts[c] != n {
			t.Fatalf("message %d delivered %d times, want %d (all: %v)", c, counts[c], n, got)
		}
	}
	if counts[4] != 0 || counts[8] != 0 {
		t.Fatalf("dropped messages were delivered: %v", got)
	}
	if got[len(got)-2] != 7 || got[len(got)-1] != 3 {
		t.Fatalf("held messages: got order %v, want 7 then 3 last", got)
	}
	a.rec.mu.Lock()
	unreachable := a.rec.unreachable
	a.rec.mu.Unlock()
	if unreachable != 0 {
		t.Fatalf("unreachable reports for intercepted drops: got %d, want 0", unreachable)
	}

	// A refused snapshot fails without reaching the peer.
	done := make(chan bool, 1)
	m := &pb.Message{Type: pb.MsgSnap.Enum(), From: proto.Uint64(10), To: proto.Uint64(20)}
	a.t.SendSnapshot(1, m, &replica.OutgoingSnapshot{}, func(ok bool) { done <- ok })
	if ok := <-done; ok {
		t.Fatalf("snapshot refused by the interceptor: got ok, want failure")
	}

	// Delivering after Close does nothing (and does not panic).
	a.t.Send(1, []*pb.Message{heartbeat(10, 20, 11)})
	a.t.Close()
	ic.release()
}
