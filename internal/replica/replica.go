package replica

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/raftlog"
	"github.com/synod-io/synod/internal/rangesm"
)

// Errors a proposal or a read can end with besides the command's own result.
var (
	// ErrNoLeader means the range has no known leader: nothing can commit.
	ErrNoLeader = errors.New("no leader")
	// ErrDropped means Raft refused the proposal although a leader is known
	// (too much uncommitted data, or leadership being transferred).
	ErrDropped = errors.New("proposal dropped")
	// ErrTransferring is ErrDropped because the leader was handing its
	// leadership over: the proposal may go again once a leader takes it (a
	// transfer Raft gives up keeps the term).
	ErrTransferring = fmt.Errorf("%w: leadership being transferred", ErrDropped)
	// ErrCampaigning is ErrDropped because this replica was campaigning
	// (a pre-candidate keeps naming the leader it last heard from, but
	// drops proposals): a new term, or the leader heard again, ends it.
	ErrCampaigning = fmt.Errorf("%w: campaigning", ErrDropped)
	// ErrAbandoned means the proposal was not applied within its deadline and
	// is no longer tracked: it may still commit later.
	ErrAbandoned = errors.New("proposal abandoned")
	// ErrStopped means the replica stopped before the request completed.
	ErrStopped = errors.New("replica stopped")
	// ErrStaleLeader means a command fenced to its proposer's term was
	// appended in another term: the proposer was no longer the leader.
	ErrStaleLeader = errors.New("proposed by a former leader")
	// ErrLogLost means the leader counts on entries this replica had
	// acknowledged and its log does not hold: its data was lost (a data
	// dir deleted, or emptied, and the member started again). Raft would
	// panic on the message; the replica must stop instead.
	ErrLogLost = errors.New("the raft log lacks entries this member acknowledged")
)

// Config configures a replica.
type Config struct {
	RangeID keys.RangeID
	// ID is this node's member ID, also its Raft ID in every range.
	ID uint64
	DB *pebble.DB

	ElectionTicks  int // default 10
	HeartbeatTicks int // default 1
	// ProposalTicks is how long a proposal or read is tracked before it is
	// abandoned (default 100 ticks). Callers normally give up earlier.
	ProposalTicks int

	// The log is truncated in two ways. While every member holds the
	// entries, the leader has them removed everywhere (a KindTruncateLog
	// command) once LogTruncateStep of them (default 1,000, at most
	// LogKeepEntries) are applied and held by all: most are then deleted
	// before the memtable that holds them is flushed, and never reach an
	// sstable. While a member lags, the log grows up to LogTruncateThreshold
	// applied entries (default 10,000), and each member then truncates it
	// on its own keeping LogKeepEntries (default 5,000), so that a briefly
	// absent follower catches up from the log rather than by snapshot.
	// LogTruncateBytes (default 4 MiB) is the step in bytes of entries: the
	// leader also proposes a truncation once the entries applied since the
	// last one hold that many bytes, so that large entries (32 KiB values)
	// are removed before a memtable fills with them, as small ones are.
	LogTruncateThreshold uint64
	LogKeepEntries       uint64
	LogTruncateStep      uint64
	LogTruncateBytes     uint64

	// StateMachine gives the range's commands their meaning (required).
	StateMachine rangesm.StateMachine

	// FreshRevisions makes a stamping leader stamp each proposal with
	// revisions fetched after it arrived (stamps.go): required when
	// several data ranges stamp, so that revisions follow real time across
	// them.
	FreshRevisions bool

	// Spans are the Pebble spans of the range's replicated state, in key
	// order: what its snapshots hold and replace (default
	// keys.ReplicatedSpans; a data range over part of the keyspace has
	// keys.DataRangeSpans of its descriptor).
	Spans []keys.Span

	// Uninitialized lets the replica start with no state at all, on a node
	// that joins an existing cluster: it waits, empty, for the snapshot the
	// leader sends. Without it, a range without state is an error.
	Uninitialized bool

	// StampRevisions makes the range's leader stamp every command it
	// appends with a revision from the cluster's oracle (stamps.go): the
	// data ranges' replicas. The node feeds it revisions (AddRevisions) as
	// it asks for them (ApplyOutput.RevisionsWanted).
	StampRevisions bool

	// InstallMu, if set, is held exclusively while a snapshot replaces the
	// range's data, so that background writers of that data (physical
	// compaction, which holds it shared) never mix old and new.
	InstallMu *sync.RWMutex

	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 10
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = 1
	}
	if c.ProposalTicks == 0 {
		c.ProposalTicks = 100
	}
	if c.LogTruncateThreshold == 0 {
		c.LogTruncateThreshold = 10000
	}
	if c.LogKeepEntries == 0 || c.LogKeepEntries > c.LogTruncateThreshold {
		c.LogKeepEntries = c.LogTruncateThreshold / 2
	}
	if c.LogTruncateStep == 0 {
		c.LogTruncateStep = 1000
	}
	c.LogTruncateStep = max(min(c.LogTruncateStep, c.LogKeepEntries), 1)
	if c.LogTruncateBytes == 0 {
		c.LogTruncateBytes = 4 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Sender delivers outgoing Raft traffic. Both methods must not block.
type Sender interface {
	// Send queues messages for their recipients; a lost message is fine.
	Send(rangeID keys.RangeID, msgs []*pb.Message)
	// SendSnapshot streams a snapshot to m.To and must eventually report the
	// outcome to the replica (ReportSnapshot), closing snap when done.
	SendSnapshot(m *pb.Message, snap *OutgoingSnapshot)
}

// Published is the part of a replica's state other goroutines may read. A new
// value is published after each applied batch and each role change.
type Published struct {
	RangeID  keys.RangeID
	ID       uint64
	Applied  uint64
	Commit   uint64
	Term     uint64
	Lead     uint64
	State    raft.StateType
	KV       kv.Meta
	Learners []uint64
	Voters   []uint64
	// Initialized is false on a joining node until its first snapshot.
	Initialized bool
	// NoSpace is set while writes are refused by a NOSPACE alarm.
	NoSpace bool
	// LeaderChanges counts the leader changes this replica has seen.
	LeaderChanges uint64
	// LogFirst is the first index of the Raft log: entries from it to
	// Applied are applied and not yet truncated.
	LogFirst uint64
	// Derived is what the state machine derives from the applied state and
	// publishes with it (rangesm.StateMachine.Published): for a data range,
	// the index of the keys live in it, at KV.Revision.
	Derived any
}

// AppliedState is the replicated state a range keeps besides its data.
type AppliedState = rangesm.AppliedState

// Result is the outcome of an applied command.
type Result = rangesm.Result

// LoadAppliedState reads the applied state of a range.
func LoadAppliedState(r pebble.Reader, id keys.RangeID) (AppliedState, error) {
	return rangesm.LoadAppliedState(r, id)
}

// ApplyOutput tells the caller what HandleReady applied, for the work that
// happens outside the replica (physical compaction, watch notification,
// lease expiry), and completes this node's requests once that work is done.
type ApplyOutput struct {
	rangesm.Effects

	// completions are the results of this node's proposals, delivered by
	// Complete once the caller has published the batch's effects (watch
	// events first, so a client that sees its write acknowledged can count
	// on this node's watchers and progress notifications having seen it).
	completions []completion
	// reads are this node's linearizable reads whose read index is applied,
	// released by Complete after the batch's effects are published too.
	reads []*Read
	// retired are shared views of states this batch replaced, closed by
	// Complete after the requests are answered: closing a Pebble snapshot
	// takes the DB mutex, which the answers need not wait for.
	retired []*View

	// RevisionsWanted, if set, asks the node for revisions from the
	// oracle, to hand back with AddRevisions.
	RevisionsWanted *RevisionsWanted
}

type completion struct {
	p   *Proposal
	res Result
}

// Complete delivers the results of the proposals applied in this batch and
// releases the reads it made possible. The caller must call it after
// handling the output, exactly once.
func (o *ApplyOutput) Complete() {
	for _, c := range o.completions {
		c.p.complete(c.res)
	}
	for _, rd := range o.reads {
		rd.complete(nil)
	}
	for _, v := range o.retired {
		v.Close()
	}
	o.completions, o.reads, o.retired = nil, nil, nil
}

// Replica is the replica of one range on this node. It is not safe for
// concurrent use, except Published, which any goroutine may call.
type Replica struct {
	cfg    Config
	id     uint64
	db     *pebble.DB
	rn     *raft.RawNode
	log    *raftlog.Storage
	logger *slog.Logger

	state AppliedState
	// sm gives the range's commands their meaning.
	sm            rangesm.StateMachine
	tick          uint64
	lead          uint64
	leaderChanges uint64
	// confIndex is the index of the last configuration change appended to
	// this replica's log, or of the log's last entry when it last became the
	// leader: Raft's own bound on pending changes, which it enforces by
	// turning a second change into an empty entry without a word
	// (ProposeConfChange refuses it instead, so that its caller can retry).
	confIndex uint64
	// confUnseen: a change was proposed whose entry the next Ready holds.
	confUnseen bool
	stopped    bool
	published  atomic.Pointer[Published]
	// stateSeq is odd from just before a commit that changes the applied
	// state (an apply batch or a snapshot install) until that state is
	// published, and even otherwise: a reader that sees the same even value
	// before and after taking a Pebble snapshot knows the snapshot holds
	// exactly the published state (see View).
	stateSeq atomic.Uint64
	// views shares one Pebble snapshot among the reads of one published
	// state: creating and closing a snapshot for every read cost about 7%
	// of a member's CPU under gets (closing one schedules compactions under
	// the DB mutex).
	views struct {
		sync.Mutex
		cur    *View // the view of the state at cur.seq, or nil
		closed bool  // Stop ran: share nothing more
	}
	// retired are shared views dropped by state changes in the current
	// Ready, handed to its ApplyOutput to close.
	retired []*View

	proposals map[uint64]*Proposal
	// staleBelow is the term of the last applied entry when fenced
	// proposals were last failed for being of an earlier term.
	staleBelow uint64

	nextReadCtx  uint64
	pendingReads []*Read
	inflight     map[uint64]*readBatch
	waitingReads []*Read
	// pendingFences wait for the entries appended before them to be on
	// disk (fence.go).
	pendingFences []*Fence

	nextSnapID uint64
	outgoing   map[uint64]*OutgoingSnapshot
	incoming   *incomingSnapshot

	// stamps are the revisions a leader stamps commands with (stamps.go).
	stamps stamper

	// truncProposed is set from the leader's proposal of a log truncation
	// (at tick truncProposedTick) until a truncation is applied.
	truncProposed     bool
	truncProposedTick uint64
	// untruncBytes counts the bytes of the entries applied since the
	// leader last proposed a truncation (LogTruncateBytes).
	untruncBytes uint64
}

// InitialRevision is the revision of an empty store, as in etcd: the first
// write gets revision 2, and no response ever carries revision 0.
const InitialRevision = 1

// The Raft position a bootstrapped range starts at. Starting above zero
// means a member added later can never be sent the log from index 1 (where
// the initial configuration is not), only a snapshot.
const (
	InitialIndex uint64 = 10
	InitialTerm  uint64 = 5
)

// Bootstrap stages in b the initial state of a new range whose Raft group has
// the given voters. Every voter stages the same state, so they agree without
// exchanging anything.
func Bootstrap(b *pebble.Batch, id keys.RangeID, voters []uint64) error {
	return BootstrapWith(b, id, voters, kv.Meta{Revision: InitialRevision})
}

// BootstrapWith is Bootstrap with given KV counters, for a range whose data
// is restored from a backup.
func BootstrapWith(b *pebble.Batch, id keys.RangeID, voters []uint64, m kv.Meta) error {
	if err := raftlog.Bootstrap(b, id, InitialIndex, InitialTerm); err != nil {
		return err
	}
	st := AppliedState{Index: InitialIndex, Term: InitialTerm, ConfState: &pb.ConfState{Voters: voters}, KV: m}
	return rangesm.WriteAppliedState(b, id, &st)
}

// New loads a replica from the node's Pebble instance. The range must have
// been bootstrapped (Bootstrap) or received by snapshot earlier.
func New(cfg Config) (*Replica, error) {
	if cfg.Spans == nil {
		cfg.Spans = keys.ReplicatedSpans(cfg.RangeID)
	}
	cfg.setDefaults()
	if cfg.StateMachine == nil {
		return nil, fmt.Errorf("range %d: no state machine", cfg.RangeID)
	}
	st, err := LoadAppliedState(cfg.DB, cfg.RangeID)
	if errors.Is(err, rangesm.ErrNoAppliedState) && cfg.Uninitialized {
		st = AppliedState{ConfState: &pb.ConfState{}}
	} else if err != nil {
		return nil, err
	}
	r := &Replica{
		cfg:       cfg,
		id:        cfg.ID,
		db:        cfg.DB,
		logger:    cfg.Logger.With("range", uint64(cfg.RangeID)),
		state:     st,
		sm:        cfg.StateMachine,
		proposals: map[uint64]*Proposal{},
		inflight:  map[uint64]*readBatch{},
		outgoing:  map[uint64]*OutgoingSnapshot{},
		// Read round IDs start at a random point per process start, so that
		// a late answer to a round of an earlier incarnation (its index
		// taken before this process queued anything) matches no round.
		nextReadCtx: rand.Uint64(),
	}
	r.log, err = raftlog.Load(cfg.DB, cfg.RangeID, st.ConfState, r.snapshot)
	if err != nil {
		return nil, err
	}
	if err := r.sm.Load(cfg.DB, &r.state); err != nil {
		return nil, fmt.Errorf("range %d: %w", cfg.RangeID, err)
	}
	rn, err := raft.NewRawNode(&raft.Config{
		ID:                        cfg.ID,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             cfg.HeartbeatTicks,
		Storage:                   r.log,
		Applied:                   st.Index,
		MaxSizePerMsg:             1 << 20,
		MaxCommittedSizePerReady:  32 << 20,
		MaxUncommittedEntriesSize: 256 << 20,
		MaxInflightMsgs:           256,
		CheckQuorum:               true,
		PreVote:                   true,
		ReadOnlyOption:            raft.ReadOnlySafe,
		StepDownOnRemoval:         true,
		Logger:                    raftLogger{r.logger.With("component", "raft")},
	})
	if err != nil {
		return nil, fmt.Errorf("start raft for range %d: %w", cfg.RangeID, err)
	}
	r.rn = rn
	r.freshIfPartial()
	r.publish()
	return r, nil
}

// freshIfPartial makes the replica stamp with fresh revisions if its
// range holds only part of the keyspace (rangesm.Partial): after a split,
// whether applied here or installed by a snapshot, and at every start
// after one.
func (r *Replica) freshIfPartial() {
	if p, ok := r.sm.(rangesm.Partial); ok && p.Partial() {
		r.useFreshRevisions()
	}
}

// RangeID returns the range this replica belongs to.
func (r *Replica) RangeID() keys.RangeID { return r.cfg.RangeID }

// Published returns the last published state. Safe for concurrent use.
func (r *Replica) Published() *Published { return r.published.Load() }

// A View is a point-in-time, read-only view of the store. Reads that ask
// for one while the applied state stays the same share it. Close releases
// the caller's reference; the Pebble snapshot closes with the last one.
type View struct {
	*pebble.Snapshot
	// Pub is the published state the view holds exactly, or nil when an
	// apply or install raced with taking the view: the caller then reads
	// the applied state from the view itself (LoadAppliedState). Only its
	// applied-state fields (Applied, KV, Initialized, NoSpace) are the
	// view's; its Raft fields (Term, Lead, Commit, State) may be older than
	// the replica's, since those are published without a state change.
	Pub  *Published
	seq  uint64
	refs atomic.Int32
}

// Derived returns what the state machine published with the state the
// view holds exactly (Published.Derived), or nil when the view does not
// hold a published state exactly (Pub is nil).
func (v *View) Derived() any {
	if v.Pub == nil {
		return nil
	}
	return v.Pub.Derived
}

// Close releases the caller's reference to the view. Closing it twice is
// a bug that would pull the snapshot from under another reader: it panics.
func (v *View) Close() error {
	switch n := v.refs.Add(-1); {
	case n == 0:
		return v.Snapshot.Close()
	case n < 0:
		panic("replica: view closed more often than it was handed out")
	}
	return nil
}

// View returns a point-in-time view of the store and, when it can be told
// cheaply, the published state that is exactly the view's. Safe for
// concurrent use; the caller closes the view.
func (r *Replica) View() *View {
	seq := r.stateSeq.Load()
	if seq&1 == 0 {
		r.views.Lock()
		if v := r.views.cur; v != nil && v.seq == seq {
			v.refs.Add(1)
			r.views.Unlock()
			return v
		}
		r.views.Unlock()
	}
	v := &View{seq: seq}
	v.refs.Store(1)
	if seq&1 != 0 {
		v.Snapshot = r.db.NewSnapshot()
		return v
	}
	pub := r.published.Load()
	v.Snapshot = r.db.NewSnapshot()
	if r.stateSeq.Load() != seq {
		return v
	}
	v.Pub = pub
	// Share it, unless the state moved on meanwhile (stateChanged drops the
	// shared view only after the sequence is even again, so a view
	// installed here is either current or dropped by it).
	r.views.Lock()
	var old *View
	if !r.views.closed && r.stateSeq.Load() == seq {
		old, r.views.cur = r.views.cur, v
		v.refs.Add(1) // the share's reference
	}
	r.views.Unlock()
	if old != nil {
		old.Close()
	}
	return v
}

// stateChanged ends a commit that changed the applied state: the sequence
// is even again, and the view of the former state is no longer shared (so
// that its snapshot does not pin old data once its reads are done). The
// share's reference is released once the Ready's requests are answered.
func (r *Replica) stateChanged() {
	r.stateSeq.Add(1)
	if old := r.unshareView(); old != nil {
		r.retired = append(r.retired, old)
	}
}

// unshareView ends the sharing of the current view and returns it, with
// the share's reference for the caller to release (nil if none).
func (r *Replica) unshareView() *View {
	r.views.Lock()
	defer r.views.Unlock()
	old := r.views.cur
	r.views.cur = nil
	return old
}

func (r *Replica) publish() {
	bs := r.rn.BasicStatus()
	cs := r.state.ConfState
	r.published.Store(&Published{
		RangeID:       r.cfg.RangeID,
		ID:            r.id,
		Applied:       r.state.Index,
		Commit:        bs.GetCommit(),
		Term:          bs.GetTerm(),
		Lead:          bs.Lead,
		State:         bs.RaftState,
		KV:            r.state.KV,
		Voters:        append([]uint64(nil), cs.GetVoters()...),
		Learners:      append([]uint64(nil), cs.GetLearners()...),
		Initialized:   r.state.Index > 0,
		NoSpace:       r.state.NoSpace,
		LeaderChanges: r.leaderChanges,
		LogFirst:      r.log.Truncated().Index + 1,
		Derived:       r.sm.Published(),
	})
}

// Spans returns the Pebble spans of the range's replicated state
// (Config.Spans). Safe for concurrent use.
func (r *Replica) Spans() []keys.Span {
	if sp, ok := r.sm.(rangesm.Spanner); ok {
		return sp.Spans()
	}
	return r.cfg.Spans
}

// Status returns Raft's full status (progress of followers when leader).
func (r *Replica) Status() raft.Status { return r.rn.Status() }

// AppliedState returns a copy of the applied state.
func (r *Replica) AppliedState() AppliedState {
	s := r.state
	s.ConfState = proto.Clone(s.ConfState).(*pb.ConfState)
	return s
}

// LogBounds returns the first and last index of the Raft log.
func (r *Replica) LogBounds() (first, last uint64) {
	first, _ = r.log.FirstIndex()
	last, _ = r.log.LastIndex()
	return first, last
}

// Tick advances the replica's logical clock by one tick.
func (r *Replica) Tick() {
	r.tick++
	r.rn.Tick()
	r.expire()
	r.expireStamps()
	r.maybeProposeTruncation()
	// A view shared while nothing is written would otherwise stay open
	// until the next write, keeping data that physical compaction deleted
	// (outside apply) from being reclaimed, by a defragmentation too.
	if old := r.unshareView(); old != nil {
		old.Close()
	}
}

// Campaign makes this replica start an election now.
func (r *Replica) Campaign() error { return r.rn.Campaign() }

// CampaignIfLeaderless campaigns if the replica is a follower that knows
// no leader: a replica that campaigns while one is known drops proposals
// as a (pre-)candidate with the leader still named, which reads as a
// leader refusing them.
func (r *Replica) CampaignIfLeaderless() error {
	if st := r.rn.BasicStatus(); st.Lead != raft.None || st.RaftState != raft.StateFollower {
		return nil
	}
	return r.rn.Campaign()
}

// TransferLeader asks the leader to hand leadership to the given member.
func (r *Replica) TransferLeader(to uint64) { r.rn.TransferLeader(to) }

// Step hands an incoming Raft message to the replica. Messages from a
// partition or an older incarnation are normal; Raft ignores what it must.
func (r *Replica) Step(m *pb.Message) error {
	if m.GetType() == pb.MsgSnap {
		return fmt.Errorf("snapshot message from %x without data: use StepSnapshot", m.GetFrom())
	}
	if err := r.checkLogHeld(m); err != nil {
		return err
	}
	var err error
	if m.GetType() == pb.MsgProp {
		// A follower's proposals, forwarded: stamped here if this
		// replica leads.
		_, err = r.stepProposal(m, nil)
	} else {
		err = r.rn.Step(m)
	}
	if err != nil && !errors.Is(err, raft.ErrStepPeerNotFound) {
		return err
	}
	return nil
}

// checkLogHeld refuses a heartbeat whose commit index is past the end of
// this replica's log. A leader's heartbeat carries the commit index capped
// at what the follower acknowledged, and a follower acknowledges entries
// only once they are durable: so such a heartbeat, of the current term or a
// newer one, means this replica lost entries it had acknowledged. Raft
// panics on it ("tocommit is out of range"); ErrLogLost lets the node stop
// and say why.
func (r *Replica) checkLogHeld(m *pb.Message) error {
	if m.GetType() != pb.MsgHeartbeat {
		return nil
	}
	last, _ := r.log.LastIndex()
	if m.GetCommit() <= last || m.GetTerm() < r.rn.BasicStatus().GetTerm() {
		return nil
	}
	return fmt.Errorf("range %d: %w: leader %x commits entries up to %d on this member, whose log ends at %d",
		r.cfg.RangeID, ErrLogLost, m.GetFrom(), m.GetCommit(), last)
}

// ReportUnreachable tells Raft that a message to peer could not be sent.
func (r *Replica) ReportUnreachable(peer uint64) { r.rn.ReportUnreachable(peer) }

// ReportSnapshot tells Raft whether a snapshot reached peer.
func (r *Replica) ReportSnapshot(peer uint64, ok bool) {
	status := raft.SnapshotFinish
	if !ok {
		status = raft.SnapshotFailure
	}
	r.rn.ReportSnapshot(peer, status)
}

// Propose submits commands. Each proposal completes when its command has
// been applied on this node, or fails fast when Raft cannot take it.
// Proposals submitted together reach Raft as few messages as proposalBytes
// allows: the leader appends each message's entries at once and sends each
// follower one append for them, instead of one append (and one
// acknowledgement) per proposal; a follower forwards each message whole.
func (r *Replica) Propose(ps ...*Proposal) {
	if r.stopped {
		for _, p := range ps {
			p.complete(Result{Err: ErrStopped})
		}
		return
	}
	var taken []*Proposal
	var ents []*pb.Entry
	size := 0
	for _, p := range ps {
		if _, dup := r.proposals[p.RequestID]; dup {
			p.complete(Result{Err: fmt.Errorf("duplicate request id %d", p.RequestID)})
			continue
		}
		if len(ents) > 0 && size+len(p.Data) > proposalBytes {
			r.stepProposals(taken, ents)
			taken, ents, size = nil, nil, 0
		}
		r.proposals[p.RequestID] = p
		taken = append(taken, p)
		ents = append(ents, &pb.Entry{Data: p.Data})
		size += len(p.Data)
	}
	if len(ents) > 0 {
		r.stepProposals(taken, ents)
	}
}

// proposalBytes bounds the commands of one proposal message (one alone may
// be larger): a follower forwards the message to the leader whole, in one
// frame of the transport.
const proposalBytes = 1 << 20

// stepProposals hands Raft one message of the proposals ps, registered in
// r.proposals, whose entries are ents. If Raft refuses it, they fail.
func (r *Replica) stepProposals(ps []*Proposal, ents []*pb.Entry) {
	for _, p := range ps {
		p.proposedTick = r.tick
	}
	m := &pb.Message{Type: pb.MsgProp.Enum(), From: new(r.id), Entries: ents}
	if _, err := r.stepProposal(m, ps); err != nil {
		r.failProposals(ps, err)
	}
}

// failProposals fails this node's proposals ps, which Raft refused with
// err.
func (r *Replica) failProposals(ps []*Proposal, err error) {
	st := r.rn.BasicStatus()
	if st.Lead == raft.None {
		err = ErrNoLeader
	} else if errors.Is(err, raft.ErrProposalDropped) {
		err = ErrDropped
		switch {
		case st.LeadTransferee != raft.None:
			err = ErrTransferring
		case st.RaftState == raft.StatePreCandidate || st.RaftState == raft.StateCandidate:
			err = ErrCampaigning
		}
	}
	for _, p := range ps {
		delete(r.proposals, p.RequestID)
		p.complete(Result{Err: err})
	}
}

// ProposeConfChange submits a Raft configuration change; it completes like a
// proposal once applied.
func (r *Replica) ProposeConfChange(p *Proposal, cc pb.ConfChangeI) {
	if r.stopped {
		p.complete(Result{Err: ErrStopped})
		return
	}
	// Only the leader takes a change, and one at a time: a follower would
	// forward it to a leader that may drop it silently (a change pending
	// there), and the proposal would wait out its deadline.
	if r.rn.BasicStatus().RaftState != raft.StateLeader || r.lead != r.id || r.confUnseen || r.confIndex > r.state.Index {
		p.complete(Result{Err: raft.ErrProposalDropped})
		return
	}
	if err := r.rn.ProposeConfChange(cc); err != nil {
		p.complete(Result{Err: err})
		return
	}
	r.confUnseen = true
	p.proposedTick = r.tick
	r.proposals[p.RequestID] = p
}

// expire abandons proposals, reads and unsent snapshots that have waited for
// too long, and retries read index requests Raft may have dropped.
func (r *Replica) expire() {
	limit := uint64(r.cfg.ProposalTicks)
	for id, p := range r.proposals {
		if r.tick-p.proposedTick > limit {
			delete(r.proposals, id)
			p.complete(Result{Err: ErrAbandoned})
		}
	}
	retry := uint64(r.cfg.ElectionTicks)
	for ctx, b := range r.inflight {
		if r.tick-b.issuedTick > retry {
			// Raft drops read index requests silently (no leader, leader
			// change): ask again.
			delete(r.inflight, ctx)
			r.pendingReads = append(r.pendingReads, b.reads...)
		}
	}
	kept := r.waitingReads[:0]
	for _, rd := range r.waitingReads {
		if r.tick-rd.issuedTick > limit {
			rd.complete(ErrAbandoned)
			continue
		}
		kept = append(kept, rd)
	}
	r.waitingReads = kept
	for id, s := range r.outgoing {
		if r.tick-s.createdTick > limit {
			delete(r.outgoing, id)
			s.Close()
		}
	}
}

// Stop fails every tracked request with ErrStopped and releases snapshots.
// The replica must not be used afterwards.
func (r *Replica) Stop() {
	r.stopped = true
	r.views.Lock()
	r.views.closed = true
	r.views.Unlock()
	if old := r.unshareView(); old != nil {
		old.Close()
	}
	for _, v := range r.retired {
		v.Close()
	}
	r.retired = nil
	for id, p := range r.proposals {
		delete(r.proposals, id)
		p.complete(Result{Err: ErrStopped})
	}
	for _, rd := range r.pendingReads {
		rd.complete(ErrStopped)
	}
	r.pendingReads = nil
	for ctx, b := range r.inflight {
		delete(r.inflight, ctx)
		for _, rd := range b.reads {
			rd.complete(ErrStopped)
		}
	}
	for _, rd := range r.waitingReads {
		rd.complete(ErrStopped)
	}
	r.waitingReads = nil
	for _, f := range r.pendingFences {
		f.complete(FenceResult{Err: ErrStopped})
	}
	r.pendingFences = nil
	for id, s := range r.outgoing {
		delete(r.outgoing, id)
		s.Close()
	}
	if r.incoming != nil {
		r.incoming.close()
		r.incoming = nil
	}
}

// mustSendAfterPersist reports whether Raft predicates m on the state of the
// Ready being durable: acknowledgements of appends and votes.
func mustSendAfterPersist(m *pb.Message) bool {
	switch m.GetType() {
	case pb.MsgAppResp, pb.MsgVoteResp, pb.MsgPreVoteResp:
		return true
	}
	return false
}

// HasReady reports whether HandleReady has work to do.
func (r *Replica) HasReady() bool {
	return r.canFlushReads() || r.rn.HasReady() || r.stamps.want != nil
}

// HandleReady processes everything Raft has ready; see the package comment
// for the order of steps. An error means the node's storage failed: the
// replica must be stopped.
func (r *Replica) HandleReady(s Sender) (ApplyOutput, error) {
	var out ApplyOutput
	r.flushReads()
	if !r.rn.HasReady() {
		r.completeFences()
		out.RevisionsWanted = r.takeRevisionsWanted()
		return out, nil
	}
	rd := r.rn.Ready()
	becameLeader := false
	if rd.SoftState != nil && rd.SoftState.Lead != r.lead {
		r.lead = rd.SoftState.Lead
		r.leaderChanges++
		r.retryReadsOnLeaderChange()
		becameLeader = r.lead == r.id
	}
	if len(rd.Entries) > 0 || rd.SoftState != nil {
		r.confUnseen = false // appended (in rd.Entries), or lost with the term
	}
	for _, e := range rd.Entries {
		if e.GetType() == pb.EntryConfChange || e.GetType() == pb.EntryConfChangeV2 {
			r.confIndex = max(r.confIndex, e.GetIndex())
		}
	}
	if becameLeader {
		// Raft holds back changes until the entries of earlier terms are
		// applied; so does ProposeConfChange, until this term's first.
		// Assigned, not raised: a change this replica appended in an earlier
		// term may have been overwritten since (as Raft's pendingConfIndex
		// is assigned).
		_, last := r.LogBounds()
		if n := len(rd.Entries); n > 0 {
			last = max(last, rd.Entries[n-1].GetIndex())
		}
		r.confIndex = last
	}

	var early, late []*pb.Message
	for _, m := range rd.Messages {
		if mustSendAfterPersist(m) {
			late = append(late, m)
		} else {
			early = append(early, m)
		}
	}
	r.send(s, early)
	if len(early) > 0 && rd.MustSync {
		// The sends woke the transport's goroutines, but the Go scheduler
		// runs a goroutine woken this way on this P only once the current
		// one blocks, and the sync below blocks in a syscall that can hold
		// the P for the whole fsync. Yield, so that the messages (a
		// leader's appends, above all) leave before the fsync, not after:
		// the followers' fsyncs then overlap ours.
		runtime.Gosched()
	}

	// A HardState that only moved the commit index needs no sync, and when
	// entries are applied in this Ready it rides in their batch: one Pebble
	// commit (a WAL write) instead of two.
	var commitOnly *pb.HardState
	if !rd.MustSync && raft.IsEmptySnap(rd.Snapshot) && len(rd.Entries) == 0 &&
		!raft.IsEmptyHardState(rd.HardState) && len(rd.CommittedEntries) > 0 {
		commitOnly = rd.HardState
		rd.HardState = nil
	}
	if err := r.persist(rd); err != nil {
		return out, err
	}
	// Every entry appended before the pending fences is on disk now.
	r.completeFences()
	if !raft.IsEmptySnap(rd.Snapshot) {
		out.SnapshotInstalled = true
	}
	r.send(s, late)

	if err := r.apply(rd.CommittedEntries, commitOnly, &out); err != nil {
		return out, err
	}
	out.KV = r.state.KV
	r.handleReadStates(rd.ReadStates)
	r.rn.Advance(rd)
	if r.untruncBytes >= r.cfg.LogTruncateBytes {
		// Large entries: waiting for the next tick would leave a memtable's
		// worth of them to be flushed.
		r.maybeProposeTruncation()
	}
	r.publish()
	r.completeReads(&out)
	out.retired, r.retired = r.retired, nil
	term, ok := r.stamping()
	r.syncStamper(term) // 0 when not leading: drops what the term held
	if ok && len(r.stamps.held) > 0 {
		// Proposals held for revisions a new leader could not ask for
		// before it applied an entry of its term.
		r.askRevisions()
	}
	out.RevisionsWanted = r.takeRevisionsWanted()
	if r.incoming != nil && r.incoming.index <= r.state.Index {
		// Raft did not need this snapshot (or has installed it).
		r.incoming.close()
		r.incoming = nil
	}
	return out, nil
}

func (r *Replica) send(s Sender, msgs []*pb.Message) {
	if len(msgs) == 0 {
		return
	}
	var plain []*pb.Message
	for _, m := range msgs {
		if m.GetType() != pb.MsgSnap {
			plain = append(plain, m)
			continue
		}
		snap := r.takeOutgoing(m)
		if snap == nil {
			r.rn.ReportSnapshot(m.GetTo(), raft.SnapshotFailure)
			continue
		}
		s.SendSnapshot(m, snap)
	}
	if len(plain) > 0 {
		s.Send(r.cfg.RangeID, plain)
	}
}

// persist writes what Raft needs durable before acknowledging: an incoming
// snapshot, new entries and the HardState, in one batch.
func (r *Replica) persist(rd raft.Ready) error {
	if raft.IsEmptySnap(rd.Snapshot) && len(rd.Entries) == 0 && raft.IsEmptyHardState(rd.HardState) {
		return nil
	}
	b := r.db.NewBatchWithSize(batchSize(rd.Entries))
	defer b.Close()
	installing := !raft.IsEmptySnap(rd.Snapshot)
	if installing {
		if err := r.stageSnapshotInstall(b, rd.Snapshot); err != nil {
			return err
		}
	}
	if err := r.log.Append(b, rd.Entries); err != nil {
		return fmt.Errorf("append entries of range %d: %w", r.cfg.RangeID, err)
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		if err := r.log.SetHardState(b, rd.HardState); err != nil {
			return fmt.Errorf("save hard state of range %d: %w", r.cfg.RangeID, err)
		}
	}
	opts := pebble.NoSync
	if rd.MustSync || installing {
		opts = pebble.Sync
	}
	if !installing {
		if err := b.Commit(opts); err != nil {
			return fmt.Errorf("commit raft state of range %d: %w", r.cfg.RangeID, err)
		}
		return nil
	}
	if r.cfg.InstallMu != nil {
		r.cfg.InstallMu.Lock()
		defer r.cfg.InstallMu.Unlock()
	}
	// Odd until the installed state is published. On an error it stays
	// odd: the store may hold a state that is not the published one, so
	// reads keep taking the counters from their own snapshots.
	r.stateSeq.Add(1)
	if err := b.Commit(opts); err != nil {
		return fmt.Errorf("commit raft state of range %d: %w", r.cfg.RangeID, err)
	}
	if err := r.finishSnapshotInstall(rd.Snapshot); err != nil {
		return err
	}
	r.stateChanged()
	return nil
}

// batchSize is the room to give up front to a Pebble batch that writes
// ents, or what they apply: Pebble keeps no batch buffer above 1 MiB for
// reuse, and growing one from its default by doubling copies a large batch
// (32 KiB values) several times over.
func batchSize(ents []*pb.Entry) int {
	n := 0
	for _, e := range ents {
		n += len(e.GetData()) + entryOverhead
	}
	return n
}

// entryOverhead is what an entry costs a batch beyond its data: keys, the
// entry's other fields, record headers; or, applied, a version's metadata
// and index entries.
const entryOverhead = 128

// raftLogger adapts slog to the raft library's logger.
type raftLogger struct{ l *slog.Logger }

func (l raftLogger) Debug(v ...any)                 { l.l.Debug(fmt.Sprint(v...)) }
func (l raftLogger) Debugf(format string, v ...any) { l.l.Debug(fmt.Sprintf(format, v...)) }
func (l raftLogger) Info(v ...any)                  { l.l.Info(fmt.Sprint(v...)) }
func (l raftLogger) Infof(format string, v ...any)  { l.l.Info(fmt.Sprintf(format, v...)) }
func (l raftLogger) Warning(v ...any)               { l.l.Warn(fmt.Sprint(v...)) }
func (l raftLogger) Warningf(format string, v ...any) {
	l.l.Warn(fmt.Sprintf(format, v...))
}
func (l raftLogger) Error(v ...any)                 { l.l.Error(fmt.Sprint(v...)) }
func (l raftLogger) Errorf(format string, v ...any) { l.l.Error(fmt.Sprintf(format, v...)) }

// Fatal and Panic are called by raft on broken invariants (for example a
// storage that lost acknowledged entries). Continuing could corrupt data.
func (l raftLogger) Fatal(v ...any) { l.Panic(v...) }
func (l raftLogger) Fatalf(format string, v ...any) {
	l.Panicf(format, v...)
}
func (l raftLogger) Panic(v ...any) {
	msg := fmt.Sprint(v...)
	l.l.Error(msg)
	panic(msg)
}
func (l raftLogger) Panicf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.l.Error(msg)
	panic(msg)
}
