package queue

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/grpc"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/queue/machine"
	"github.com/synod-io/synod/internal/raftcmd"
)

// Backend is what the queue service needs from its node.
type Backend interface {
	// Propose replicates a command of the data range holding the queues and
	// returns its result's response, or the command's error. ctx may carry
	// an auth.Fence; cost is what the command may add to the stored data
	// (checked against the storage quota).
	Propose(ctx context.Context, kind raftcmd.Kind, payload []byte, cost int64) (any, error)
	// ProposeFenced replicates a decision this node took as the range's
	// leader in term: it applies only if appended in that term.
	ProposeFenced(ctx context.Context, kind raftcmd.Kind, payload []byte, term uint64) (any, error)
	// Leader reports whether this node leads the range, and in which term.
	Leader() (term uint64, ok bool)
	// View returns a consistent view of the range's applied data.
	View() (pebble.Reader, func(), error)
	// Linearize waits until this node has applied everything committed
	// before the call.
	Linearize(ctx context.Context) error
	// Header returns a response header with the current revision.
	Header() *queuepb.ResponseHeader
}

// Config configures a Service.
type Config struct {
	Backend Backend
	// MaxCommandBytes bounds the size of one batch command (the node's
	// request size limit).
	MaxCommandBytes int
	Logger          *slog.Logger
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// Service is a node's queue service: the gRPC service, the claim streams
// served on this node, the batching of operations into commands, and, on
// the range leader, the time-driven work.
type Service struct {
	cfg     Config
	b       Backend
	logger  *slog.Logger
	machine atomic.Pointer[machine.Machine]
	batch   *batcher
	metrics *metrics
	// wake asks the leader loop to look for due work.
	wake chan struct{}

	ctx    context.Context
	cancel context.CancelFunc

	mu struct {
		sync.Mutex
		// streams are the claim streams served here, by queue and worker.
		streams map[workerKey]*claimStream
		// waiters are the Wait calls, by job.
		waiters map[jobKey]map[chan struct{}]struct{}
	}
	streamSeq atomic.Uint64
}

type workerKey struct{ queue, worker string }

type jobKey struct {
	queue string
	id    uint64
}

// New returns a queue service; Run runs it.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxCommandBytes <= 0 {
		cfg.MaxCommandBytes = 1 << 20
	}
	s := &Service{cfg: cfg, b: cfg.Backend, logger: cfg.Logger, wake: make(chan struct{}, 1)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mu.streams = map[workerKey]*claimStream{}
	s.mu.waiters = map[jobKey]map[chan struct{}]struct{}{}
	s.metrics = newMetrics(s)
	// Leave room for the command's own fields around the operations.
	s.batch = newBatcher(s, cfg.MaxCommandBytes*3/4)
	return s
}

// NewExtension returns the queues' extension of a data range's state
// machine; the service reads the range's queue state through it.
func (s *Service) NewExtension() datarange.Extension {
	m := machine.New()
	s.machine.Store(m)
	return m
}

// m returns the state machine of the range holding the queues.
func (s *Service) m() *machine.Machine {
	if m := s.machine.Load(); m != nil {
		return m
	}
	return machine.New() // no range yet: nothing in it
}

func (s *Service) now() int64 { return s.cfg.Now().UnixMilli() }

// Queues returns the names of the queues that have state (jobs, settings
// or schedules), sorted, once this node has applied everything committed
// before the call: the API has no call that lists them, and the web
// console (package console) shows them.
func (s *Service) Queues(ctx context.Context) ([]string, error) {
	if err := s.b.Linearize(ctx); err != nil {
		return nil, err
	}
	return s.m().Queues(), nil
}

// Run runs the service's goroutines until ctx ends; then claim streams
// and waits end.
func (s *Service) Run(ctx context.Context) {
	defer s.cancel()
	var wg sync.WaitGroup
	wg.Go(func() { s.batch.collect(s.ctx) })
	for range proposers {
		wg.Go(func() { s.batch.propose(s.ctx) })
	}
	wg.Go(func() { s.leaderLoop(s.ctx) })
	select {
	case <-ctx.Done():
	case <-s.ctx.Done():
	}
	s.cancel()
	wg.Wait()
}

// Register registers the Queue service with srv.
func (s *Service) Register(srv grpc.ServiceRegistrar) {
	queuepb.RegisterQueueServer(srv, &server{s: s})
}

// OnApply hands the service what an applied batch of the range asks of it
// (rangesm.Effects.Extensions): claims to deliver, revocations to tell,
// finished jobs to report, counts. It runs on the replica's goroutine and
// does not block. After a snapshot install every stream and waiter looks
// again at the state, since the install replaced it without effects.
func (s *Service) OnApply(effects []any, snapshotInstalled bool) {
	wake := snapshotInstalled
	for _, e := range effects {
		eff, ok := e.(*machine.Effect)
		if !ok {
			continue
		}
		s.metrics.applied(eff)
		if len(eff.Claimed) > 0 || len(eff.Revoked) > 0 || len(eff.Finished) > 0 {
			s.route(eff)
		}
		wake = true
	}
	if snapshotInstalled {
		s.resync()
	}
	if wake {
		s.wakeLeader()
	}
}

func (s *Service) wakeLeader() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// route hands claims and revocations to the streams they are for, and
// wakes the waiters of finished jobs.
func (s *Service) route(eff *machine.Effect) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range eff.Claimed {
		if st := s.mu.streams[workerKey{c.Queue, c.Worker}]; st != nil && st.lease == c.Lease {
			st.claimed(c)
		}
	}
	for _, r := range eff.Revoked {
		if st := s.mu.streams[workerKey{r.Queue, r.Worker}]; st != nil && st.lease == r.Lease {
			st.revoked(r)
		}
	}
	for _, f := range eff.Finished {
		k := jobKey{f.Queue, f.ID}
		for ch := range s.mu.waiters[k] {
			close(ch)
		}
		delete(s.mu.waiters, k)
	}
}

// resync makes every stream deliver what it may have missed, and every
// waiter look again.
func (s *Service) resync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.mu.streams {
		st.resync()
	}
	for k, ws := range s.mu.waiters {
		for ch := range ws {
			close(ch)
		}
		delete(s.mu.waiters, k)
	}
}
