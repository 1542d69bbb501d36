package limit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/limit/algo"
	"github.com/synod-io/synod/internal/limit/limitpb"
	"github.com/synod-io/synod/internal/limit/limitsm"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/watch"
)

// Leadership is what a node knows of the leader of the limits' range.
type Leadership struct {
	// Lead is the leader's member ID (0: none known), Term its term.
	Lead, Term uint64
	// Leader is set when this node leads.
	Leader bool
	// Voters is the number of voting members.
	Voters int
}

// Backend is the node the service runs on.
type Backend interface {
	// Header is a response header of the node.
	Header() *etcdpb.ResponseHeader
	// MemberID is this node's member ID.
	MemberID() uint64
	// Propose replicates a command of the limits' range and returns its
	// response; a term other than 0 fences it to that leadership term.
	Propose(ctx context.Context, kind raftcmd.Kind, req proto.Message, term uint64) (any, error)
	// Leadership reports the leader of the limits' range.
	Leadership() Leadership
	// WaitLeader waits until a leader is known (for a bounded time).
	WaitLeader(ctx context.Context) error
	// Linearize waits until this node applied everything committed
	// before the call.
	Linearize(ctx context.Context) error
	// DB reads the node's applied state.
	DB() pebble.Reader
	// Range reads keys (etcd's Range).
	Range(ctx context.Context, req *etcdpb.RangeRequest) (*etcdpb.RangeResponse, error)
	// Hub is the node's watch hub.
	Hub() *watch.Hub
	// PeerConn is the peer connection to a member.
	PeerConn(member uint64) (grpc.ClientConnInterface, error)
	// LeaseGrant grants a lease of ttl seconds.
	LeaseGrant(ctx context.Context, ttl int64) (int64, error)
	// After returns a channel closed about d from now.
	After(d time.Duration) <-chan struct{}
}

// Config configures a Service.
type Config struct {
	Backend Backend
	// ElectionTimeout is the range's election timeout.
	ElectionTimeout time.Duration
	// Metrics, if set, receives the service's metrics.
	Metrics MetricsRegisterer
	Logger  *slog.Logger
}

// Service is a node's rate limiters: the Limits gRPC service, the owner
// of the limits' keys while the node leads their range, and the
// forwarding of other requests to the owner.
type Service struct {
	b               Backend
	logger          *slog.Logger
	electionTimeout time.Duration
	metrics         *metrics
	defs            *defs
	owner           *owner
	fwd             *forwarder
	local           *localShares
	permits         *permitWaiters
	shares          shareTimes
}

// New returns the service; Run runs its background work.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{b: cfg.Backend, logger: cfg.Logger, electionTimeout: cfg.ElectionTimeout, permits: newPermitWaiters(), shares: newShareTimes(cfg.ElectionTimeout)}
	s.metrics = newMetrics(cfg.Metrics, s)
	s.defs = newDefs(cfg.Backend)
	s.defs.permitsFreed = s.permits.notify
	s.owner = newOwner(s)
	s.fwd = newForwarder(s)
	s.local = newLocalShares(s)
	return s
}

// Register registers the Limits service with srv (the client gRPC server
// and the gateway).
func (s *Service) Register(srv grpc.ServiceRegistrar) {
	synodpb.RegisterLimitsServer(srv, &server{s: s})
}

// Run runs the service's background work until ctx ends: following the
// definitions, checkpointing while the node owns the keys, reporting local
// shares, and giving up ownership when the node stops leading.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, fn := range []func(context.Context){s.defs.run, s.owner.flushLoop, s.local.reportLoop, s.leadershipLoop} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(ctx)
		}()
	}
	wg.Wait()
	s.fwd.wait()
}

// leadershipLoop takes the keys over as soon as the node leads (so that
// the first requests do not wait for it) and lets them go when it stops.
func (s *Service) leadershipLoop(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.b.Leadership().Leader {
			tctx, cancel := context.WithTimeout(ctx, s.electionTimeout)
			_, _ = s.owner.ensure(tctx)
			cancel()
		} else {
			s.owner.demote()
		}
	}
}

func invalid(err error) error {
	if errors.Is(err, algo.ErrCostTooLarge) {
		return status.Error(codes.InvalidArgument, "synod: "+err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.InvalidArgument, "synod: "+err.Error())
}

// maxItems bounds the items of one request.
const maxItems = 1000

// checkItems validates the items of a take or refund and returns their
// definitions.
func (s *Service) checkItems(ctx context.Context, items []*synodpb.TakeItem) ([]*Def, error) {
	if len(items) == 0 || len(items) > maxItems {
		return nil, status.Errorf(codes.InvalidArgument, "synod: a request takes 1 to %d items", maxItems)
	}
	defs := make([]*Def, len(items))
	for i, it := range items {
		def, err := s.defs.lookup(ctx, it.Limit)
		if err != nil {
			return nil, err
		}
		if def.Concurrency() {
			return nil, status.Errorf(codes.FailedPrecondition, "synod: limit %q is a concurrency limit: acquire a permit", it.Limit)
		}
		if len(it.Key) > limitsm.MaxKeyLen {
			return nil, status.Errorf(codes.InvalidArgument, "synod: key longer than %d bytes", limitsm.MaxKeyLen)
		}
		if it.Cost < 0 || cost(it) > def.Params.Capacity() {
			return nil, status.Errorf(codes.InvalidArgument, "synod: cost %d of limit %q is outside 0..%d (its capacity)", it.Cost, it.Limit, def.Params.Capacity())
		}
		defs[i] = def
	}
	return defs, nil
}

// retriable reports whether a failure to reach the owner may pass once a
// leader is elected or known.
func retriable(err error) bool {
	if errors.Is(err, errNotOwner) || errors.Is(err, rpctypes.ErrGRPCNoLeader) || errors.Is(err, rpctypes.ErrGRPCNotLeader) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted:
		return true
	}
	return errors.Is(err, errNoLeader)
}

var errNoLeader = status.Error(codes.Unavailable, "synod: no leader")

// Take decides a request.
func (s *Service) Take(ctx context.Context, req *synodpb.TakeRequest) (*synodpb.TakeResponse, error) {
	defs, err := s.checkItems(ctx, req.Items)
	if err != nil {
		return nil, err
	}
	if req.MaxWaitMs < 0 {
		return nil, status.Error(codes.InvalidArgument, "synod: max_wait_ms must not be negative")
	}
	timeout := defs[0].Timeout()
	for _, d := range defs[1:] {
		timeout = min(timeout, d.Timeout())
	}
	deadline := s.b.After(timeout)
	var resp *synodpb.TakeResponse
	if len(req.Items) == 1 && defs[0].Limit.Mode == synodpb.Limit_LOCAL && !req.Peek && req.MaxWaitMs == 0 {
		resp, err = s.local.take(ctx, req.Items[0], defs[0], deadline)
	} else {
		resp, err = s.atOwner(ctx, req, defs, deadline)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !retriable(err) && !errors.Is(err, errTimeout) {
			return nil, err
		}
		resp = unavailable(req, defs)
	}
	s.metrics.count(req, defs, resp)
	resp.Header = s.b.Header()
	return resp, nil
}

// unavailable is the answer when no decision could be made in time: each
// limit's fail_open.
func unavailable(req *synodpb.TakeRequest, defs []*Def) *synodpb.TakeResponse {
	resp := &synodpb.TakeResponse{Allowed: true, Decisions: make([]*synodpb.Decision, len(req.Items))}
	for i, def := range defs {
		resp.Decisions[i] = &synodpb.Decision{Allowed: def.Limit.FailOpen, Unavailable: true, Limit: capacity(def)}
		resp.Allowed = resp.Allowed && def.Limit.FailOpen
	}
	return resp
}

func capacity(def *Def) int64 {
	if def.Concurrency() {
		return def.Limit.Max
	}
	return def.Params.Capacity()
}

// atOwner has the owner decide: this node if it leads, else the leader,
// retrying as leadership moves until the deadline.
func (s *Service) atOwner(ctx context.Context, req *synodpb.TakeRequest, defs []*Def, deadline <-chan struct{}) (*synodpb.TakeResponse, error) {
	for {
		var resp *synodpb.TakeResponse
		var err error
		ls := s.b.Leadership()
		switch {
		case ls.Leader:
			resp, err = s.takeAsOwner(ctx, req, defs, deadline)
		case ls.Lead != 0:
			var res *limitpb.OpResult
			res, err = s.fwd.do(ctx, ls.Lead, &limitpb.Op{Op: &limitpb.Op_Take{Take: req}}, deadline)
			if err == nil {
				resp, err = res.GetTake(), opError(res)
			}
		default:
			err = errNoLeader
		}
		if err == nil {
			return resp, nil
		}
		if !retriable(err) {
			return nil, err
		}
		if werr := s.backoff(ctx, deadline); werr != nil {
			return nil, werr
		}
	}
}

// backoff waits a little before a retry (for a leader to be elected or
// known), or fails at the deadline.
func (s *Service) backoff(ctx context.Context, deadline <-chan struct{}) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-deadline:
		return errTimeout
	case <-s.b.After(retryInterval):
		return nil
	}
}

// retryInterval spaces retries while the owner is unknown or moving.
const retryInterval = 20 * time.Millisecond

func (s *Service) takeAsOwner(ctx context.Context, req *synodpb.TakeRequest, defs []*Def, deadline <-chan struct{}) (*synodpb.TakeResponse, error) {
	term, err := s.owner.ensure(ctx)
	if err != nil {
		return nil, err
	}
	resp, p, err := s.owner.take(term, req, defs, time.Now().UnixNano())
	if err != nil {
		return nil, err
	}
	if err := s.owner.await(ctx, p, deadline); err != nil {
		return nil, err
	}
	return resp, nil
}

// opError returns the error an OpResult carries.
func opError(r *limitpb.OpResult) error {
	if r.Code == 0 {
		return nil
	}
	return status.Error(codes.Code(r.Code), r.Message)
}

// Refund gives tokens back.
func (s *Service) Refund(ctx context.Context, req *synodpb.RefundRequest) (*synodpb.RefundResponse, error) {
	defs, err := s.checkItems(ctx, req.Items)
	if err != nil {
		return nil, err
	}
	var rest []*synodpb.TakeItem
	var restDefs []*Def
	for i, it := range req.Items {
		if defs[i].Limit.Mode == synodpb.Limit_LOCAL && s.local.refund(it, defs[i]) {
			continue
		}
		rest, restDefs = append(rest, it), append(restDefs, defs[i])
	}
	if len(rest) > 0 {
		deadline := s.b.After(defs[0].Timeout())
		req = &synodpb.RefundRequest{Items: rest}
		for {
			ls := s.b.Leadership()
			switch {
			case ls.Leader:
				var term uint64
				if term, err = s.owner.ensure(ctx); err == nil {
					err = s.owner.refund(term, rest, restDefs, time.Now().UnixNano())
				}
			case ls.Lead != 0:
				var res *limitpb.OpResult
				if res, err = s.fwd.do(ctx, ls.Lead, &limitpb.Op{Op: &limitpb.Op_Refund{Refund: req}}, deadline); err == nil {
					err = opError(res)
				}
			default:
				err = errNoLeader
			}
			if err == nil || !retriable(err) {
				break
			}
			if err = s.backoff(ctx, deadline); err != nil {
				break
			}
		}
		if err != nil {
			return nil, err
		}
	}
	return &synodpb.RefundResponse{Header: s.b.Header()}, nil
}

// SetLimit creates or changes a limit.
func (s *Service) SetLimit(ctx context.Context, req *synodpb.SetLimitRequest) (*synodpb.SetLimitResponse, error) {
	l := proto.Clone(req.GetLimit()).(*synodpb.Limit)
	if req.GetLimit() == nil {
		return nil, status.Error(codes.InvalidArgument, "synod: no limit given")
	}
	l.Revision = 0
	if err := limitsm.Validate(l); err != nil {
		return nil, invalid(err)
	}
	out, err := s.b.Propose(ctx, limitsm.KindSet, &limitpb.SetLimit{Limit: l}, 0)
	if err != nil {
		return nil, err
	}
	res, ok := out.(*limitsm.SetResult)
	if !ok {
		return nil, fmt.Errorf("set limit returned %T", out)
	}
	if def, err := newDef(&limitpb.StoredLimit{Limit: l, StateRevision: res.StateRevision}, res.Revision); err == nil {
		s.defs.update(l.Name, def, res.Revision) // read your writes on this node
	}
	l.Revision = res.Revision
	h := s.b.Header()
	h.Revision = res.Revision
	return &synodpb.SetLimitResponse{Header: h, Limit: l, Created: res.Created}, nil
}

// GetLimit returns a limit, as of everything committed before the call.
func (s *Service) GetLimit(ctx context.Context, req *synodpb.GetLimitRequest) (*synodpb.GetLimitResponse, error) {
	if err := limitsm.ValidName(req.Name); err != nil {
		return nil, invalid(err)
	}
	resp, err := s.read(ctx, limitsm.DefKey(req.Name), nil)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, limitsm.ErrNotFound(req.Name)
	}
	def, err := decodeDef(resp.Kvs[0])
	if err != nil {
		return nil, err
	}
	return &synodpb.GetLimitResponse{Header: resp.Header, Limit: def.Limit}, nil
}

// read is a linearizable range of the limits' keys.
func (s *Service) read(ctx context.Context, key, end []byte) (*etcdpb.RangeResponse, error) {
	if err := s.b.Linearize(ctx); err != nil {
		return nil, err
	}
	resp, err := s.b.Range(ctx, &etcdpb.RangeRequest{Key: key, RangeEnd: end, Serializable: true})
	if err != nil {
		return nil, err
	}
	// The node's Range answers with the revision alone (as a nested
	// response's header); the caller's answer is the node's, with the
	// cluster, member and term as every other service gives them.
	h := s.b.Header()
	if resp.Header != nil {
		h.Revision = resp.Header.Revision
	}
	resp.Header = h
	return resp, nil
}

// ListLimits returns every limit.
func (s *Service) ListLimits(ctx context.Context, _ *synodpb.ListLimitsRequest) (*synodpb.ListLimitsResponse, error) {
	resp, err := s.read(ctx, keys.LimitPrefix, keys.PrefixEnd(keys.LimitPrefix))
	if err != nil {
		return nil, err
	}
	out := &synodpb.ListLimitsResponse{Header: resp.Header}
	for _, kv := range resp.Kvs {
		if _, ok := limitsm.NameOfDefKey(kv.Key); !ok {
			continue
		}
		if def, err := decodeDef(kv); err == nil {
			out.Limits = append(out.Limits, def.Limit)
		}
	}
	return out, nil
}

// DeleteLimit removes a limit.
func (s *Service) DeleteLimit(ctx context.Context, req *synodpb.DeleteLimitRequest) (*synodpb.DeleteLimitResponse, error) {
	if err := limitsm.ValidName(req.Name); err != nil {
		return nil, invalid(err)
	}
	out, err := s.b.Propose(ctx, limitsm.KindDelete, &limitpb.DeleteLimit{Name: req.Name}, 0)
	if err != nil {
		return nil, err
	}
	res, ok := out.(*limitsm.DeleteResult)
	if !ok {
		return nil, fmt.Errorf("delete limit returned %T", out)
	}
	if res.Deleted {
		s.defs.update(req.Name, nil, res.Revision)
	}
	return &synodpb.DeleteLimitResponse{Header: s.b.Header(), Deleted: res.Deleted}, nil
}

// LimitStats returns the owner's counts of a limit.
func (s *Service) LimitStats(ctx context.Context, req *synodpb.LimitStatsRequest) (*synodpb.LimitStatsResponse, error) {
	def, err := s.defs.lookup(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	deadline := s.b.After(def.Timeout())
	for {
		ls := s.b.Leadership()
		var resp *synodpb.LimitStatsResponse
		switch {
		case ls.Leader:
			resp, err = s.statsAsOwner(ctx, def)
		case ls.Lead != 0:
			var res *limitpb.OpResult
			if res, err = s.fwd.do(ctx, ls.Lead, &limitpb.Op{Op: &limitpb.Op_Stats{Stats: req}}, deadline); err == nil {
				resp, err = res.GetStats(), opError(res)
			}
		default:
			err = errNoLeader
		}
		if err == nil {
			resp.Header = s.b.Header()
			return resp, nil
		}
		if !retriable(err) {
			return nil, err
		}
		if err := s.backoff(ctx, deadline); err != nil {
			return nil, err
		}
	}
}

func (s *Service) statsAsOwner(ctx context.Context, def *Def) (*synodpb.LimitStatsResponse, error) {
	term, err := s.owner.ensure(ctx)
	if err != nil {
		return nil, err
	}
	resp := &synodpb.LimitStatsResponse{Limit: def.Limit, Owner: s.b.MemberID()}
	if err := s.owner.stats(term, def, resp); err != nil {
		return nil, err
	}
	if def.Concurrency() {
		p := append(limitsm.Prefix(def.Limit.Name), "permit/"...)
		// Linearizable: an owner that was just elected may not have applied
		// every permit its range committed yet.
		r, err := s.b.Range(ctx, &etcdpb.RangeRequest{Key: p, RangeEnd: keys.PrefixEnd(p), CountOnly: true})
		if err != nil {
			return nil, err
		}
		resp.Permits = r.Count
	}
	return resp, nil
}

// Acquire takes a permit of a concurrency limit.
func (s *Service) Acquire(ctx context.Context, req *synodpb.AcquireRequest) (*synodpb.AcquireResponse, error) {
	def, err := s.defs.lookup(ctx, req.Limit)
	if err != nil {
		return nil, err
	}
	if !def.Concurrency() {
		return nil, status.Errorf(codes.FailedPrecondition, "synod: limit %q is a rate limit: take from it", req.Limit)
	}
	if len(req.Key) > limitsm.MaxKeyLen || req.WaitMs < 0 || req.Ttl < 0 {
		return nil, status.Error(codes.InvalidArgument, "synod: bad acquire request (key too long, or a negative wait or ttl)")
	}
	permit := req.Permit
	if permit == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		permit = hex.EncodeToString(b[:])
	} else if err := limitsm.ValidPermit(permit); err != nil {
		return nil, invalid(err)
	}
	lease := req.Lease
	if lease == 0 {
		ttl := req.Ttl
		if ttl == 0 {
			ttl = 60
		}
		if lease, err = s.b.LeaseGrant(ctx, ttl); err != nil {
			return nil, err
		}
	}
	var deadline <-chan struct{}
	if req.WaitMs > 0 {
		deadline = s.b.After(time.Duration(req.WaitMs) * time.Millisecond)
	}
	cmd := &limitpb.Acquire{Limit: req.Limit, Key: req.Key, Lease: lease, Permit: permit}
	for {
		freed := s.permits.wait(req.Limit)
		out, err := s.b.Propose(ctx, limitsm.KindAcquire, cmd, 0)
		if err != nil {
			return nil, err
		}
		res, ok := out.(*limitpb.AcquireResult)
		if !ok {
			return nil, fmt.Errorf("acquire returned %T", out)
		}
		if res.Acquired || deadline == nil {
			return &synodpb.AcquireResponse{Header: s.b.Header(), Acquired: res.Acquired, Permit: permit, Lease: lease, Held: res.Held, Max: res.Max}, nil
		}
		select {
		case <-freed:
		case <-deadline:
			return &synodpb.AcquireResponse{Header: s.b.Header(), Permit: permit, Lease: lease, Held: res.Held, Max: res.Max}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Release gives a permit back.
func (s *Service) Release(ctx context.Context, req *synodpb.ReleaseRequest) (*synodpb.ReleaseResponse, error) {
	if err := limitsm.ValidName(req.Limit); err != nil {
		return nil, invalid(err)
	}
	if err := limitsm.ValidPermit(req.Permit); err != nil {
		return nil, invalid(err)
	}
	out, err := s.b.Propose(ctx, limitsm.KindRelease, &limitpb.Release{Limit: req.Limit, Key: req.Key, Permit: req.Permit}, 0)
	if err != nil {
		return nil, err
	}
	res, ok := out.(*limitsm.ReleaseResult)
	if !ok {
		return nil, fmt.Errorf("release returned %T", out)
	}
	return &synodpb.ReleaseResponse{Header: s.b.Header(), Released: res.Released}, nil
}

// permitWaiters wakes the Acquire calls waiting for a permit of a limit
// when one is deleted (released, or its lease ended).
type permitWaiters struct {
	mu struct {
		sync.Mutex
		ch map[string]chan struct{}
	}
}

func newPermitWaiters() *permitWaiters {
	w := &permitWaiters{}
	w.mu.ch = map[string]chan struct{}{}
	return w
}

// wait returns a channel closed at the next deletion of a permit of name.
func (w *permitWaiters) wait(name string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := w.mu.ch[name]
	if ch == nil {
		ch = make(chan struct{})
		w.mu.ch[name] = ch
	}
	return ch
}

func (w *permitWaiters) notify(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch := w.mu.ch[name]; ch != nil {
		close(ch)
		delete(w.mu.ch, name)
	}
}

// server implements synodpb.LimitsServer.
type server struct {
	synodpb.UnimplementedLimitsServer
	s *Service
}

func (v *server) SetLimit(ctx context.Context, r *synodpb.SetLimitRequest) (*synodpb.SetLimitResponse, error) {
	return v.s.SetLimit(ctx, r)
}

func (v *server) GetLimit(ctx context.Context, r *synodpb.GetLimitRequest) (*synodpb.GetLimitResponse, error) {
	return v.s.GetLimit(ctx, r)
}

func (v *server) ListLimits(ctx context.Context, r *synodpb.ListLimitsRequest) (*synodpb.ListLimitsResponse, error) {
	return v.s.ListLimits(ctx, r)
}

func (v *server) DeleteLimit(ctx context.Context, r *synodpb.DeleteLimitRequest) (*synodpb.DeleteLimitResponse, error) {
	return v.s.DeleteLimit(ctx, r)
}

func (v *server) Take(ctx context.Context, r *synodpb.TakeRequest) (*synodpb.TakeResponse, error) {
	return v.s.Take(ctx, r)
}

func (v *server) Refund(ctx context.Context, r *synodpb.RefundRequest) (*synodpb.RefundResponse, error) {
	return v.s.Refund(ctx, r)
}

func (v *server) Acquire(ctx context.Context, r *synodpb.AcquireRequest) (*synodpb.AcquireResponse, error) {
	return v.s.Acquire(ctx, r)
}

func (v *server) Release(ctx context.Context, r *synodpb.ReleaseRequest) (*synodpb.ReleaseResponse, error) {
	return v.s.Release(ctx, r)
}

func (v *server) LimitStats(ctx context.Context, r *synodpb.LimitStatsRequest) (*synodpb.LimitStatsResponse, error) {
	return v.s.LimitStats(ctx, r)
}
