package replica

import (
	"encoding/binary"
	"sort"

	"go.etcd.io/raft/v3"
)

// Proposal is a command submitted on this node, waiting for its application.
type Proposal struct {
	RequestID uint64
	Data      []byte // an encoded raftcmd.Command

	done         chan Result
	proposedTick uint64
}

// NewProposal returns a proposal for an encoded command whose RequestID is id.
func NewProposal(id uint64, data []byte) *Proposal {
	return &Proposal{RequestID: id, Data: data, done: make(chan Result, 1)}
}

// Done receives the result exactly once.
func (p *Proposal) Done() <-chan Result { return p.done }

func (p *Proposal) complete(res Result) {
	select {
	case p.done <- res:
	default:
	}
}

// Read is a linearizable read waiting for the read index to be confirmed by a
// quorum and applied locally. Once Done yields nil, reading the local state
// machine returns a result that reflects every write acknowledged before the
// read was submitted.
type Read struct {
	done       chan error
	index      uint64
	issuedTick uint64
}

// NewRead returns a read request.
func NewRead() *Read { return &Read{done: make(chan error, 1)} }

// Done receives nil when the read may be served, or an error.
func (rd *Read) Done() <-chan error { return rd.done }

func (rd *Read) complete(err error) {
	select {
	case rd.done <- err:
	default:
	}
}

// ReadIndex queues a linearizable read. Reads queued between two
// HandleReady calls share one Raft read index round.
func (r *Replica) ReadIndex(rd *Read) {
	if r.stopped {
		rd.complete(ErrStopped)
		return
	}
	rd.issuedTick = r.tick
	r.pendingReads = append(r.pendingReads, rd)
}

type readBatch struct {
	reads      []*Read
	issuedTick uint64
}

// maxReadRoundsInFlight bounds the read index rounds a replica has asked
// Raft for and not yet heard back about. Reads that arrive meanwhile wait
// and share the next round, as etcd's read loop does: each round costs the
// leader a heartbeat to every follower (and a follower a message to the
// leader), and one round per HandleReady under many concurrent reads made
// rounds of a few reads each. A read still gets a read index taken after
// it arrived, never an older one.
const maxReadRoundsInFlight = 1

// readRoundPatienceTicks is how long a round counts against
// maxReadRoundsInFlight. Raft drops a round silently when a message of it is
// lost or the leader steps down, and expire re-issues it only after an
// election timeout; later reads must not wait that long behind it.
const readRoundPatienceTicks = 2

// canFlushReads reports whether flushReads would start a round.
func (r *Replica) canFlushReads() bool {
	if len(r.pendingReads) == 0 {
		return false
	}
	waiting := 0
	for _, b := range r.inflight {
		if r.tick-b.issuedTick < readRoundPatienceTicks {
			waiting++
		}
	}
	return waiting < maxReadRoundsInFlight
}

// flushReads asks Raft for one read index covering every pending read, once
// a round may start.
func (r *Replica) flushReads() {
	if !r.canFlushReads() {
		return
	}
	if r.rn.BasicStatus().Lead == raft.None {
		for _, rd := range r.pendingReads {
			rd.complete(ErrNoLeader)
		}
		r.pendingReads = nil
		return
	}
	r.nextReadCtx++
	ctx := binary.BigEndian.AppendUint64(nil, r.nextReadCtx)
	r.inflight[r.nextReadCtx] = &readBatch{reads: r.pendingReads, issuedTick: r.tick}
	r.pendingReads = nil
	r.rn.ReadIndex(ctx)
}

func (r *Replica) handleReadStates(states []raft.ReadState) {
	for _, rs := range states {
		if len(rs.RequestCtx) != 8 {
			continue
		}
		ctx := binary.BigEndian.Uint64(rs.RequestCtx)
		b, ok := r.inflight[ctx]
		if !ok {
			continue
		}
		delete(r.inflight, ctx)
		for _, rd := range b.reads {
			rd.index = rs.Index
			r.waitingReads = append(r.waitingReads, rd)
		}
	}
	sort.SliceStable(r.waitingReads, func(i, j int) bool { return r.waitingReads[i].index < r.waitingReads[j].index })
}

// completeReads hands out the reads whose read index has been applied.
func (r *Replica) completeReads(out *ApplyOutput) {
	n := 0
	for n < len(r.waitingReads) && r.waitingReads[n].index <= r.state.Index {
		out.reads = append(out.reads, r.waitingReads[n])
		n++
	}
	if n > 0 {
		r.waitingReads = append(r.waitingReads[:0], r.waitingReads[n:]...)
	}
}

// retryReadsOnLeaderChange re-issues read index requests a former leader may
// have dropped, instead of waiting for them to time out.
func (r *Replica) retryReadsOnLeaderChange() {
	for ctx, b := range r.inflight {
		delete(r.inflight, ctx)
		r.pendingReads = append(r.pendingReads, b.reads...)
	}
}

// Fail completes a proposal that never reached a replica.
func Fail(p *Proposal, err error) { p.complete(Result{Err: err}) }

// FailRead completes a read that never reached a replica.
func FailRead(rd *Read, err error) { rd.complete(err) }
