package replica

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangesm"
)

type appliedResult struct {
	requestID uint64
	res       Result
}

// apply applies committed entries in one indexed batch, with the new applied
// state and, when due, the truncation of the log. Results are handed to
// waiting proposals only after the batch is committed, so a client that sees
// its write acknowledged can read it back. A non-nil hs is a HardState
// (of a new commit index only) to write in the same batch.
func (r *Replica) apply(ents []*pb.Entry, hs *pb.HardState, out *ApplyOutput) error {
	if len(ents) == 0 {
		return nil
	}
	b := r.db.NewIndexedBatchWithSize(batchSize(ents))
	defer b.Close()
	st := r.state
	ba := r.sm.Begin(b, &st, &out.Effects)
	defer ba.Close()
	var results []appliedResult
	var agreedTrunc uint64 // the highest truncation applied in the batch
	for _, e := range ents {
		if e.GetIndex() <= st.Index {
			continue // already applied (replayed after a restart)
		}
		if e.GetIndex() != st.Index+1 {
			return fmt.Errorf("range %d: applying entry %d after %d leaves a gap", r.cfg.RangeID, e.GetIndex(), st.Index)
		}
		switch e.GetType() {
		case pb.EntryNormal:
			if len(e.GetData()) == 0 {
				break // the empty entry a new leader appends
			}
			cmd, err := raftcmd.Decode(e.GetData())
			if err != nil {
				// Every replica reaches the same verdict on the same bytes.
				r.logger.Error("skipping undecodable command", "index", e.GetIndex(), "err", err)
				break
			}
			if cmd.Kind == raftcmd.KindTruncateLog {
				agreedTrunc = max(agreedTrunc, r.truncationOf(cmd, st.Index))
				break
			}
			res, err := r.applyCommand(ba, cmd, e.GetIndex(), e.GetTerm())
			if err != nil {
				return fmt.Errorf("range %d: apply %s at %d: %w", r.cfg.RangeID, cmd.Kind, e.GetIndex(), err)
			}
			res.Index = e.GetIndex()
			if cmd.Proposer == r.id {
				results = append(results, appliedResult{cmd.RequestID, res})
			}
		case pb.EntryConfChange, pb.EntryConfChangeV2:
			res, err := r.applyConfChange(ba, &st, e)
			if err != nil {
				return err
			}
			out.ConfChanged = true
			if res.requestID != 0 {
				res.res.Index = e.GetIndex()
				results = append(results, res)
			}
		}
		st.Index, st.Term = e.GetIndex(), e.GetTerm()
		r.untruncBytes += uint64(len(e.GetData()))
	}
	out.KV = st.KV
	if len(out.Splits) > 0 {
		// Several data ranges now: stamps follow real time across them
		// only if taken fresh (Config.FreshRevisions).
		r.useFreshRevisions()
	}
	if err := ba.Finish(); err != nil {
		return fmt.Errorf("range %d: %w", r.cfg.RangeID, err)
	}
	if err := rangesm.WriteAppliedState(b, r.cfg.RangeID, &st); err != nil {
		return fmt.Errorf("write applied state of range %d: %w", r.cfg.RangeID, err)
	}
	if err := r.maybeTruncateLog(b, st.Index, agreedTrunc); err != nil {
		return err
	}
	if hs != nil {
		if err := r.log.SetHardState(b, hs); err != nil {
			return fmt.Errorf("save hard state of range %d: %w", r.cfg.RangeID, err)
		}
	}
	// Odd until the batch's state is published; it stays odd if the commit
	// fails (see Replica.View).
	r.stateSeq.Add(1)
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("commit applied batch of range %d: %w", r.cfg.RangeID, err)
	}
	r.state = st
	r.log.SetConfState(st.ConfState)
	if err := ba.Committed(); err != nil {
		return fmt.Errorf("range %d: %w", r.cfg.RangeID, err)
	}
	r.publish()
	r.stateChanged()
	for _, ar := range results {
		if p, ok := r.proposals[ar.requestID]; ok {
			delete(r.proposals, ar.requestID)
			out.completions = append(out.completions, completion{p, ar.res})
		}
	}
	if st.Term > r.staleBelow {
		r.failStaleProposals(st.Term, out)
	}
	return nil
}

// failStaleProposals fails, with ErrStaleLeader, the proposals fenced to a
// term below term, now that an entry of term is applied: any entry of an
// earlier term that is ever committed lies before it, and was applied, so
// these can no longer apply. Their callers may propose them again (a
// proposal lost in a leader change, or dropped by a leader transferring its
// leadership, would otherwise wait out its deadline).
func (r *Replica) failStaleProposals(term uint64, out *ApplyOutput) {
	r.staleBelow = term
	for id, p := range r.proposals {
		if p.Term != 0 && p.Term < term {
			delete(r.proposals, id)
			out.completions = append(out.completions, completion{p, Result{Err: ErrStaleLeader}})
		}
	}
}

// applyCommand applies one command through the batch's state machine,
// after the checks that are the replica's: the command names this range,
// and a command fenced to its proposer's term was appended in that term.
func (r *Replica) applyCommand(ba rangesm.BatchApplier, cmd raftcmd.Command, index, term uint64) (Result, error) {
	if cmd.RangeID != r.cfg.RangeID {
		return Result{Err: fmt.Errorf("command for range %d applied on range %d", cmd.RangeID, r.cfg.RangeID)}, nil
	}
	if cmd.Term != 0 && cmd.Term != term {
		return Result{Err: ErrStaleLeader}, nil
	}
	return ba.Apply(cmd, index, term)
}

func (r *Replica) applyConfChange(ba rangesm.BatchApplier, st *AppliedState, e *pb.Entry) (appliedResult, error) {
	var cc pb.ConfChangeI
	if e.GetType() == pb.EntryConfChange {
		var c pb.ConfChange
		if err := proto.Unmarshal(e.GetData(), &c); err != nil {
			return appliedResult{}, fmt.Errorf("decode conf change at %d: %w", e.GetIndex(), err)
		}
		cc = &c
	} else {
		var c pb.ConfChangeV2
		if err := proto.Unmarshal(e.GetData(), &c); err != nil {
			return appliedResult{}, fmt.Errorf("decode conf change at %d: %w", e.GetIndex(), err)
		}
		cc = &c
	}
	st.ConfState = r.rn.ApplyConfChange(cc)
	// A conf change proposed by a Synod node carries a command in its context:
	// the member record to add (membership is part of the replicated state),
	// and the request ID that lets the proposer learn the outcome.
	v2 := cc.AsV2()
	var cmd raftcmd.Command
	if len(v2.GetContext()) > 0 {
		var err error
		if cmd, err = raftcmd.Decode(v2.GetContext()); err != nil {
			r.logger.Error("conf change with undecodable context", "index", e.GetIndex(), "err", err)
		}
	}
	if err := ba.ConfChange(v2, cmd); err != nil {
		return appliedResult{}, err
	}
	if cmd.Proposer != r.id || cmd.RequestID == 0 {
		return appliedResult{}, nil
	}
	return appliedResult{requestID: cmd.RequestID, res: Result{Resp: st.ConfState}}, nil
}

// maybeTruncateLog stages the removal of old applied entries: up to agreed,
// the highest index an applied KindTruncateLog command named (0 if none),
// and, once the log holds more than LogTruncateThreshold applied entries
// anyway, all but LogKeepEntries of them.
func (r *Replica) maybeTruncateLog(b *pebble.Batch, applied, agreed uint64) error {
	to := agreed
	if agreed != 0 {
		r.truncProposed = false
	}
	if trunc := r.log.Truncated().Index; applied-trunc > r.cfg.LogTruncateThreshold {
		to = max(to, applied-r.cfg.LogKeepEntries)
	}
	if err := r.log.Truncate(b, to); err != nil {
		return fmt.Errorf("truncate log of range %d: %w", r.cfg.RangeID, err)
	}
	return nil
}

// truncationOf returns the index up to which a KindTruncateLog command
// removes entries on this replica, whose applied index is applied: never
// beyond it (the leader named an index it had applied, so this is a guard),
// and 0 for a command that is not valid.
func (r *Replica) truncationOf(cmd raftcmd.Command, applied uint64) uint64 {
	if cmd.RangeID != r.cfg.RangeID {
		return 0
	}
	index, err := raftcmd.DecodeTruncateLog(cmd.Payload)
	if err != nil {
		r.logger.Error("skipping undecodable log truncation", "err", err)
		return 0
	}
	return min(index, applied)
}

// maybeProposeTruncation has the leader propose the removal of the entries
// every member holds and this one has applied, once there are
// LogTruncateStep of them, or the entries applied since the last proposal
// hold LogTruncateBytes. A truncation applied by all members at once,
// soon after the entries were written, removes most of them while they are
// still in Pebble's memtable, so that no flush or compaction writes them
// again; a member that lags holds the point back (its Match does), and the
// log then grows until LogTruncateThreshold. One proposal is outstanding at
// a time; a lost one is replaced after an election timeout.
func (r *Replica) maybeProposeTruncation() {
	if r.lead != r.id || r.state.Index == 0 {
		return
	}
	if r.truncProposed && r.tick-r.truncProposedTick <= uint64(r.cfg.ElectionTicks) {
		return
	}
	to := r.state.Index
	r.rn.WithProgress(func(_ uint64, _ raft.ProgressType, pr tracker.Progress) {
		to = min(to, pr.Match)
	})
	trunc := r.log.Truncated().Index
	if to < trunc+r.cfg.LogTruncateStep && (to <= trunc || r.untruncBytes < r.cfg.LogTruncateBytes) {
		return
	}
	cmd := raftcmd.Command{RangeID: r.cfg.RangeID, Kind: raftcmd.KindTruncateLog, Payload: raftcmd.EncodeTruncateLog(to)}
	if err := r.rn.Propose(cmd.Encode(nil)); err != nil {
		return // no longer leader, or a leadership transfer: the next tick decides again
	}
	r.truncProposed, r.truncProposedTick = true, r.tick
	r.untruncBytes = 0
}
