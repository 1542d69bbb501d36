package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/rangesm"
	"github.com/synod-io/synod/internal/replica"
)

// Transport is what the store needs from the node-to-node transport.
type Transport interface {
	Send(rangeID keys.RangeID, msgs []*pb.Message)
	SendSnapshot(rangeID keys.RangeID, m *pb.Message, snap *replica.OutgoingSnapshot, done func(ok bool))
}

// ErrRangeNotFound means this node hosts no replica of the range.
var ErrRangeNotFound = errors.New("range not found on this node")

// Config configures a store.
type Config struct {
	NodeID    uint64
	DB        *pebble.DB
	Transport Transport
	// TickInterval is the duration of one Raft tick (default 100ms).
	TickInterval time.Duration
	// Replica is the template configuration of every replica; RangeID, ID,
	// DB and StateMachine are filled in by the store.
	Replica replica.Config
	// NewStateMachine returns the state machine of a range's replica on
	// this node.
	NewStateMachine func(id keys.RangeID) (rangesm.StateMachine, error)
	// FreshRevisions makes data ranges stamp with revisions fetched after
	// each proposal arrived (replica.Config.FreshRevisions): needed when
	// there are several.
	FreshRevisions bool
	// SpansOf, if set, returns the Pebble spans of a range's replicated
	// state (replica.Config.Spans; default keys.ReplicatedSpans).
	SpansOf func(id keys.RangeID) []keys.Span
	// OnApply, if set, is called on the replica's goroutine after each
	// HandleReady that applied something. It must not block for long.
	OnApply func(rangeID keys.RangeID, out replica.ApplyOutput)
	// OnRevisionsWanted, if set, is called on the replica's goroutine when
	// a data range's leader asks for revisions from the oracle, to hand
	// back with AddRevisions. It must not block. Without it, no range
	// stamps its commands (replica.Config.StampRevisions).
	OnRevisionsWanted func(rangeID keys.RangeID, want replica.RevisionsWanted)
	// OnFatal is called once if a replica hits a storage error it cannot
	// recover from; the replica stops.
	OnFatal func(err error)
	Logger  *slog.Logger
}

// Store hosts replicas. Open starts its goroutines; Close stops them.
type Store struct {
	cfg    Config
	logger *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// fresh, once set, makes every replica added from then on stamp with
	// fresh revisions (a split made several data ranges).
	fresh atomic.Bool

	mu struct {
		sync.RWMutex
		replicas map[keys.RangeID]*handle
	}
}

// UseFreshRevisions makes the data ranges' replicas added from now on
// stamp with fresh revisions (Config.FreshRevisions): there are several.
func (s *Store) UseFreshRevisions() { s.fresh.Store(true) }

// Open starts a store with no replicas.
func Open(cfg Config) *Store {
	if cfg.TickInterval == 0 {
		cfg.TickInterval = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{cfg: cfg, logger: cfg.Logger}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mu.replicas = map[keys.RangeID]*handle{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.tickLoop()
	}()
	return s
}

// AddReplica loads the replica of a bootstrapped range and starts driving it.
func (s *Store) AddReplica(id keys.RangeID) error {
	rc := s.cfg.Replica
	rc.RangeID, rc.ID, rc.DB = id, s.cfg.NodeID, s.cfg.DB
	// Data ranges stamp their commands with revisions from the oracle,
	// which the node fetches for them.
	rc.StampRevisions = s.cfg.OnRevisionsWanted != nil && id != keys.SystemRangeID
	rc.FreshRevisions = rc.StampRevisions && (s.cfg.FreshRevisions || s.fresh.Load())
	if s.cfg.SpansOf != nil {
		rc.Spans = s.cfg.SpansOf(id)
	}
	sm, err := s.cfg.NewStateMachine(id)
	if err != nil {
		return fmt.Errorf("state machine of range %d: %w", id, err)
	}
	rc.StateMachine = sm
	if rc.Logger == nil {
		rc.Logger = s.logger
	}
	r, err := replica.New(rc)
	if err != nil {
		return fmt.Errorf("load replica of range %d: %w", id, err)
	}
	h := &handle{s: s, r: r, pub: r.Published, view: r.View, wake: make(chan struct{}, 1)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return errors.New("store closed")
	}
	if _, ok := s.mu.replicas[id]; ok {
		return fmt.Errorf("range %d already hosted", id)
	}
	s.mu.replicas[id] = h
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		h.run(s.ctx)
	}()
	return nil
}

func (s *Store) handle(id keys.RangeID) (*handle, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h, ok := s.mu.replicas[id]
	if !ok {
		return nil, ErrRangeNotFound
	}
	return h, nil
}

// Close stops every replica (failing their pending requests) and waits.
func (s *Store) Close() {
	s.cancel()
	s.wg.Wait()
}

func (s *Store) tickLoop() {
	t := time.NewTicker(s.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.mu.RLock()
		for _, h := range s.mu.replicas {
			h.post(func(m *mailbox) { m.ticks++ })
		}
		s.mu.RUnlock()
	}
}

// Published returns the published state of a range's replica.
func (s *Store) Published(id keys.RangeID) (*replica.Published, error) {
	h, err := s.handle(id)
	if err != nil {
		return nil, err
	}
	return h.pub(), nil
}

// View returns a point-in-time view of the store, with the range's
// published state when it is exactly the view's (see replica.Replica.View).
// The caller closes the view.
func (s *Store) View(id keys.RangeID) (*replica.View, error) {
	h, err := s.handle(id)
	if err != nil {
		return nil, err
	}
	return h.view(), nil
}

// Propose submits a proposal to a range and waits for its result or ctx.
//
// A closed timeout (nil: none) ends the wait with context.DeadlineExceeded,
// as a deadline on ctx would, without a timer per call.
func (s *Store) Propose(ctx context.Context, id keys.RangeID, p *replica.Proposal, timeout <-chan struct{}) (replica.Result, error) {
	h, err := s.handle(id)
	if err != nil {
		return replica.Result{}, err
	}
	h.post(func(m *mailbox) { m.proposals = append(m.proposals, p) })
	select {
	case res := <-p.Done():
		return res, nil
	case <-ctx.Done():
		return replica.Result{}, ctx.Err()
	case <-timeout:
		return replica.Result{}, context.DeadlineExceeded
	}
}

// ReadIndex waits until the range's replica has applied everything committed
// before the call, as confirmed by a quorum: a linearizable read may then be
// served from local state.
//
// A closed timeout (nil: none) ends the wait as Propose's does.
func (s *Store) ReadIndex(ctx context.Context, id keys.RangeID, timeout <-chan struct{}) error {
	h, err := s.handle(id)
	if err != nil {
		return err
	}
	rd := replica.NewRead()
	h.post(func(m *mailbox) { m.reads = append(m.reads, rd) })
	select {
	case err := <-rd.Done():
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-timeout:
		return context.DeadlineExceeded
	}
}

// ReadIndexAtLeast waits until the replica has applied index, the index a
// read fence of term answered, or an entry of a later term
// (replica.NewReadAtLeast): no read index round, the fence's leader made
// one. An index of 0 makes it ReadIndex.
func (s *Store) ReadIndexAtLeast(ctx context.Context, id keys.RangeID, index, term uint64, timeout <-chan struct{}) error {
	h, err := s.handle(id)
	if err != nil {
		return err
	}
	// No shortcut on the published applied index: the replica publishes
	// it before the node has handed that batch's events on (onApply), and
	// a watch closed at the fence would pass events it has not seen yet.
	rd := replica.NewReadAtLeast(index, term)
	h.post(func(m *mailbox) { m.reads = append(m.reads, rd) })
	select {
	case err := <-rd.Done():
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-timeout:
		return context.DeadlineExceeded
	}
}

// FenceReads asks the range's replica, which must lead it, for a read
// fence at rev (replica.Fence) and waits for the answer.
func (s *Store) FenceReads(ctx context.Context, id keys.RangeID, rev uint64) (replica.FenceResult, error) {
	h, err := s.handle(id)
	if err != nil {
		return replica.FenceResult{}, err
	}
	f := replica.NewFence(rev)
	h.post(func(m *mailbox) {
		m.fns = append(m.fns, func(r *replica.Replica) { r.FenceReads(f) })
	})
	select {
	case res := <-f.Done():
		return res, res.Err
	case <-ctx.Done():
		return replica.FenceResult{}, ctx.Err()
	case <-h.stopped():
		return replica.FenceResult{}, replica.ErrStopped
	}
}

// LeaderKnown returns a channel that is closed once the range's replica
// knows a leader (at once if it knows one now). A replica that stops
// without knowing one never closes it: callers bound their wait.
func (s *Store) LeaderKnown(id keys.RangeID) (<-chan struct{}, error) {
	h, err := s.handle(id)
	if err != nil {
		return nil, err
	}
	return h.leaderKnownChan(), nil
}

// AddRevisions hands a range's replica the revisions it asked for
// (replica.RevisionsWanted), without waiting.
func (s *Store) AddRevisions(id keys.RangeID, w replica.RevisionsWanted, first uint64) error {
	h, err := s.handle(id)
	if err != nil {
		return err
	}
	h.post(func(m *mailbox) {
		m.fns = append(m.fns, func(r *replica.Replica) { r.AddRevisionsFor(w, first) })
	})
	return nil
}

// Do runs fn on the replica's goroutine and waits for it. fn must be quick.
func (s *Store) Do(ctx context.Context, id keys.RangeID, fn func(r *replica.Replica)) error {
	h, err := s.handle(id)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	h.post(func(m *mailbox) {
		m.fns = append(m.fns, func(r *replica.Replica) {
			fn(r)
			close(done)
		})
	})
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-h.stopped():
		return replica.ErrStopped
	}
}

// HandleRaft implements transport.Handler.
func (s *Store) HandleRaft(id keys.RangeID, msgs []*pb.Message) {
	h, err := s.handle(id)
	if err != nil {
		return
	}
	h.post(func(m *mailbox) { m.msgs = append(m.msgs, msgs...) })
}

// NewIncomingSnapshot implements transport.Handler.
func (s *Store) NewIncomingSnapshot(id keys.RangeID) (*replica.IncomingSnapshot, error) {
	h, err := s.handle(id)
	if err != nil {
		return nil, err
	}
	return replica.NewIncomingSnapshotOf(s.cfg.DB, id, h.r.Spans()), nil
}

// HandleSnapshot implements transport.Handler.
func (s *Store) HandleSnapshot(id keys.RangeID, msg *pb.Message, data *replica.IncomingSnapshot) error {
	h, err := s.handle(id)
	if err != nil {
		data.Close()
		return err
	}
	h.post(func(m *mailbox) { m.snapshots = append(m.snapshots, incomingSnap{msg, data}) })
	return nil
}

// ReportUnreachable implements transport.Handler.
func (s *Store) ReportUnreachable(id keys.RangeID, peer uint64) {
	h, err := s.handle(id)
	if err != nil {
		return
	}
	h.post(func(m *mailbox) { m.unreachable = append(m.unreachable, peer) })
}
