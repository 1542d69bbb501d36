package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/replica"
)

type incomingSnap struct {
	msg  *pb.Message
	data *replica.IncomingSnapshot
}

type snapReport struct {
	peer uint64
	ok   bool
}

// mailbox is what other goroutines leave for a replica's goroutine.
type mailbox struct {
	ticks       int
	msgs        []*pb.Message
	proposals   []*replica.Proposal
	reads       []*replica.Read
	snapshots   []incomingSnap
	snapReports []snapReport
	unreachable []uint64
	fns         []func(*replica.Replica)
}

// handle drives one replica from its own goroutine.
type handle struct {
	s    *Store
	r    *replica.Replica // touched only by run
	pub  func() *replica.Published
	view func() *replica.View
	wake chan struct{}
	// leaderWanted is set while someone waits on mu.leaderKnown: the run
	// loop then looks at the published leader after each round, and costs
	// one atomic load per round otherwise.
	leaderWanted atomic.Bool

	mu struct {
		sync.Mutex
		box     mailbox
		stopped bool
		done    chan struct{}
		// leaderKnown, if not nil, is closed once the replica publishes a
		// leader (see leaderKnownChan).
		leaderKnown chan struct{}
	}
}

// closedChan is leaderKnownChan's answer when a leader is known already.
var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// leaderKnownChan returns a channel closed once the replica knows a leader:
// already closed if it does now.
func (h *handle) leaderKnownChan() <-chan struct{} {
	if h.pub().Lead != raft.None {
		return closedChan
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	// Flag first, then look: either the run loop, which publishes and then
	// reads the flag, sees it, or this sees what it published.
	h.leaderWanted.Store(true)
	if h.pub().Lead != raft.None {
		return closedChan
	}
	if h.mu.leaderKnown == nil {
		h.mu.leaderKnown = make(chan struct{})
	}
	return h.mu.leaderKnown
}

// noteLeader wakes the waiters of leaderKnownChan if the replica has
// published a leader.
func (h *handle) noteLeader() {
	if !h.leaderWanted.Load() || h.pub().Lead == raft.None {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.leaderKnown != nil {
		close(h.mu.leaderKnown)
		h.mu.leaderKnown = nil
	}
	h.leaderWanted.Store(false)
}

// post adds to the mailbox and wakes the goroutine. After the replica has
// stopped, requests fail at once.
func (h *handle) post(fn func(*mailbox)) {
	h.mu.Lock()
	if h.mu.stopped {
		h.mu.Unlock()
		var m mailbox
		fn(&m)
		failMailbox(&m)
		return
	}
	fn(&h.mu.box)
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *handle) stopped() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.done == nil {
		h.mu.done = make(chan struct{})
		if h.mu.stopped {
			close(h.mu.done)
		}
	}
	return h.mu.done
}

func (h *handle) take() mailbox {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.mu.box
	h.mu.box = mailbox{}
	return b
}

// failMailbox completes the requests of a mailbox nobody will process.
func failMailbox(m *mailbox) {
	for _, p := range m.proposals {
		replica.Fail(p, replica.ErrStopped)
	}
	for _, rd := range m.reads {
		replica.FailRead(rd, replica.ErrStopped)
	}
	for _, s := range m.snapshots {
		s.data.Close()
	}
}

func (h *handle) markStopped() {
	h.mu.Lock()
	h.mu.stopped = true
	if h.mu.done != nil {
		close(h.mu.done)
	}
	m := h.mu.box
	h.mu.box = mailbox{}
	h.mu.Unlock()
	failMailbox(&m)
}

func (h *handle) run(ctx context.Context) {
	defer func() {
		h.r.Stop()
		h.markStopped()
	}()
	snd := sender{h: h}
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		}
		box := h.take()
		for _, fn := range box.fns {
			fn(h.r)
		}
		for i := 0; i < box.ticks; i++ {
			h.r.Tick()
		}
		for _, m := range box.msgs {
			err := h.r.Step(m)
			if errors.Is(err, replica.ErrLogLost) {
				h.s.logger.Error("replica stopped: its log lost acknowledged entries", "range", uint64(h.r.RangeID()), "err", err)
				if h.s.cfg.OnFatal != nil {
					h.s.cfg.OnFatal(err)
				}
				return
			}
			if err != nil {
				h.s.logger.Debug("step failed", "range", uint64(h.r.RangeID()), "type", m.GetType().String(), "err", err)
			}
		}
		for _, sn := range box.snapshots {
			if err := h.r.StepSnapshot(sn.msg, sn.data); err != nil {
				h.s.logger.Warn("snapshot refused", "range", uint64(h.r.RangeID()), "err", err)
			}
		}
		for _, rep := range box.snapReports {
			h.r.ReportSnapshot(rep.peer, rep.ok)
		}
		for _, peer := range box.unreachable {
			h.r.ReportUnreachable(peer)
		}
		if len(box.proposals) > 0 {
			h.r.Propose(box.proposals...)
		}
		for _, rd := range box.reads {
			h.r.ReadIndex(rd)
		}
		for h.r.HasReady() {
			out, err := h.r.HandleReady(snd)
			if err != nil {
				h.s.logger.Error("replica stopped on storage failure", "range", uint64(h.r.RangeID()), "err", err)
				if h.s.cfg.OnFatal != nil {
					h.s.cfg.OnFatal(err)
				}
				return
			}
			if h.s.cfg.OnApply != nil && out.HasEffects() {
				h.s.cfg.OnApply(h.r.RangeID(), out)
			}
			if out.RevisionsWanted != nil && h.s.cfg.OnRevisionsWanted != nil {
				h.s.cfg.OnRevisionsWanted(h.r.RangeID(), *out.RevisionsWanted)
			}
			out.Complete()
		}
		h.noteLeader()
	}
}

// sender adapts the store's transport to replica.Sender.
type sender struct{ h *handle }

func (s sender) Send(id keys.RangeID, msgs []*pb.Message) {
	s.h.s.cfg.Transport.Send(id, msgs)
}

func (s sender) SendSnapshot(m *pb.Message, snap *replica.OutgoingSnapshot) {
	h := s.h
	peer := m.GetTo()
	h.s.cfg.Transport.SendSnapshot(snap.RangeID, m, snap, func(ok bool) {
		h.post(func(mb *mailbox) { mb.snapReports = append(mb.snapReports, snapReport{peer, ok}) })
	})
}
