package replica

import (
	"encoding/binary"

	"go.etcd.io/raft/v3"
)

// Proposal is a command submitted on this node, waiting for its application.
type Proposal struct {
	RequestID uint64
	Data      []byte // an encoded raftcmd.Command
	// Term, if not zero, is the term the command is fenced to (its
	// raftcmd.Command.Term): it applies only if appended in that term.
	// Once the replica has applied an entry of a later term, such a
	// command can no longer apply (every entry of its term that will ever
	// commit lies before that entry): the proposal then fails at once with
	// ErrStaleLeader, and may be proposed again, in the current term,
	// without any risk of applying twice.
	Term uint64

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
	atLeast    uint64
	fenceTerm  uint64
	issuedTick uint64
}

// NewRead returns a read request.
func NewRead() *Read { return &Read{done: make(chan error, 1)} }

// NewReadAtLeast returns a read request that waits until the replica has
// applied index, the index a read fence of term answered (fence.go), or
// an entry of a later term: the fence's leader may have lost entries it
// had appended, and every entry of its term that will ever commit lies
// before the first entry of a later one. An index of 0 makes it a plain
// read (NewRead), with its read index round.
func NewReadAtLeast(index, term uint64) *Read {
	return &Read{done: make(chan error, 1), atLeast: index, fenceTerm: term}
}

// ready reports whether the read, its read index known, may be served by
// a replica that applied up to index, an entry of term last.
func (rd *Read) ready(index, term uint64) bool {
	if index < rd.index {
		return false
	}
	return index >= rd.atLeast || (rd.fenceTerm > 0 && term > rd.fenceTerm)
}

// Done receives nil when the read may be served, or an error.
func (rd *Read) Done() <-chan error { return rd.done }

func (rd *Read) complete(err error) {
	select {
	case rd.done <- err:
	default:
	}
}

// ReadIndex queues a linearizable read. Reads queued between two
// HandleReady calls share one Raft read index round. A read behind a
// fence (NewReadAtLeast) needs no round: the fence's leader confirmed its
// term, and the fence's index bounds what the read must see, so it only
// waits until the replica applied that far.
func (r *Replica) ReadIndex(rd *Read) {
	if r.stopped {
		rd.complete(ErrStopped)
		return
	}
	rd.issuedTick = r.tick
	if rd.atLeast > 0 {
		if rd.ready(r.state.Index, r.state.Term) {
			rd.complete(nil)
			return
		}
		r.waitingReads = append(r.waitingReads, rd)
		return
	}
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
}

// completeReads hands out the reads whose read index (and fence index, if
// any) has been applied. A read waiting for a fence index the new leader's
// log never reaches does not hold back the others.
func (r *Replica) completeReads(out *ApplyOutput) {
	kept := r.waitingReads[:0]
	for _, rd := range r.waitingReads {
		if rd.ready(r.state.Index, r.state.Term) {
			out.reads = append(out.reads, rd)
		} else {
			kept = append(kept, rd)
		}
	}
	clear(r.waitingReads[len(kept):])
	r.waitingReads = kept
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
