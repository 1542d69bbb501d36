package etcdapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/watch"
)

// Watch implements etcdserverpb.WatchServer on the node's watch hub.
type Watch struct {
	pb.UnimplementedWatchServer
	b      Backend
	limits Limits
}

// NewWatch returns the Watch service.
func NewWatch(b Backend, l Limits) *Watch { return &Watch{b: b, limits: l} }

// errDuplicateWatchID is etcd's reason for refusing a client-chosen ID.
const errDuplicateWatchID = "mvcc: duplicate watch ID provided on the WatchStream"

// errEmptyWatchRange is etcd's reason for refusing a watch of a range whose
// end is not after its key: it could never see an event.
const errEmptyWatchRange = "mvcc: watcher range is empty"

// requiresLeader reports whether the client asked, as clientv3's
// WithRequireLeader does, that the stream fail when the node has no leader.
func requiresLeader(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return false
	}
	vs := md.Get(rpctypes.MetadataRequireLeaderKey)
	return len(vs) > 0 && vs[0] == rpctypes.MetadataHasLeader
}

// Watch implements WatchServer: one goroutine reads requests, this one sends
// responses, in the order the stream's queue holds them.
func (s *Watch) Watch(stream pb.Watch_WatchServer) error {
	ctx := stream.Context()
	needLeader := requiresLeader(ctx)
	if needLeader {
		// clientv3 gives up a watch for good on "no leader": a member that
		// has not heard from the leader yet waits for it first.
		if err := s.b.WaitLeader(ctx); err != nil {
			return toGRPC(ctx, err)
		}
	}
	ws := &watchStream{s: s, hub: s.b.Hub(), stream: stream, wake: make(chan struct{}, 1), room: make(chan struct{}, 1)}
	ws.mu.watchers = map[int64]*watch.Watcher{}
	ws.qmu.dirty = map[*watch.Watcher]bool{}
	defer ws.releaseHeld()
	defer ws.cancelAll()
	recvDone := make(chan error, 1)
	go func() { recvDone <- ws.recvLoop() }() // ends when the stream ends
	return ws.sendLoop(ctx, recvDone, needLeader)
}

// watchStream is the state of one Watch stream.
type watchStream struct {
	s      *Watch
	hub    *watch.Hub
	stream pb.Watch_WatchServer
	wake   chan struct{}
	room   chan struct{} // signalled when queued responses were taken to send

	// held is the size of the last response sent, which the hub still
	// counts against the stream: gRPC may hold its bytes for a while after
	// Send returns (Send waits only until most of the previous message has
	// gone out). It is released when the next one is sent or the sender has
	// nothing left to do. Only the sending goroutine touches these.
	held  int
	heldW *watch.Watcher

	// Lock order: mu, then the hub's lock, then qmu. The hub calls Notify
	// with its lock held, so Notify takes only qmu.
	mu struct {
		sync.Mutex
		watchers map[int64]*watch.Watcher
		nextID   int64
	}
	qmu struct {
		sync.Mutex
		queue    []streamItem
		dirty    map[*watch.Watcher]bool
		progress bool // a progress request awaits an answer
		// responses counts the ready responses in queue (created and
		// canceled answers), which the hub's budgets do not bound.
		responses int
	}
}

// maxQueuedResponses bounds the ready responses a stream queues: past it,
// the stream reads no more requests until its sender has taken them, so
// that a client that creates and cancels watchers without reading the
// answers cannot make the queue grow.
const maxQueuedResponses = 1024

// streamItem is either a ready response or a watcher with something to send.
type streamItem struct {
	resp *pb.WatchResponse
	w    *watch.Watcher
}

func (ws *watchStream) signal() {
	select {
	case ws.wake <- struct{}{}:
	default:
	}
}

// Notify implements watch.Sink.
func (ws *watchStream) Notify(w *watch.Watcher) {
	ws.qmu.Lock()
	if !ws.qmu.dirty[w] {
		ws.qmu.dirty[w] = true
		ws.qmu.queue = append(ws.qmu.queue, streamItem{w: w})
	}
	ws.qmu.Unlock()
	ws.signal()
}

func (ws *watchStream) enqueue(resp *pb.WatchResponse) {
	ws.qmu.Lock()
	ws.qmu.queue = append(ws.qmu.queue, streamItem{resp: resp})
	ws.qmu.responses++
	ws.qmu.Unlock()
	ws.signal()
}

func (ws *watchStream) header(rev int64) *pb.ResponseHeader {
	h := ws.s.b.Header()
	h.Revision = rev
	return h
}

// waitForRoom waits until the stream queues fewer than maxQueuedResponses
// ready responses.
func (ws *watchStream) waitForRoom(ctx context.Context) error {
	for {
		ws.qmu.Lock()
		n := ws.qmu.responses
		ws.qmu.Unlock()
		if n < maxQueuedResponses {
			return nil
		}
		select {
		case <-ws.room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (ws *watchStream) recvLoop() error {
	for {
		if err := ws.waitForRoom(ws.stream.Context()); err != nil {
			return err
		}
		req, err := ws.stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil // the client closed its side; keep sending
		}
		if err != nil {
			return err
		}
		switch r := req.RequestUnion.(type) {
		case *pb.WatchRequest_CreateRequest:
			ws.create(r.CreateRequest)
		case *pb.WatchRequest_CancelRequest:
			ws.cancel(r.CancelRequest.WatchId)
		case *pb.WatchRequest_ProgressRequest:
			ws.qmu.Lock()
			ws.qmu.progress = true
			ws.qmu.Unlock()
			ws.signal()
		}
	}
}

func (ws *watchStream) create(req *pb.WatchCreateRequest) {
	key, end := req.Key, req.RangeEnd
	if len(key) == 0 {
		key = []byte{0} // as etcd: the smallest key
	}
	fromKey := len(end) == 1 && end[0] == 0
	if len(end) > 0 && !fromKey && bytes.Compare(key, end) >= 0 {
		ws.enqueue(&pb.WatchResponse{
			Header: ws.header(ws.hub.Revision()), WatchId: -1,
			Created: true, Canceled: true, CancelReason: errEmptyWatchRange,
		})
		return
	}
	opts := watch.Options{
		Key:            key,
		RangeEnd:       end,
		StartRevision:  req.StartRevision,
		PrevKV:         req.PrevKv,
		ProgressNotify: req.ProgressNotify,
		Fragment:       req.Fragment,
	}
	for _, f := range req.Filters {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			opts.NoPut = true
		case pb.WatchCreateRequest_NODELETE:
			opts.NoDelete = true
		}
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	id := req.WatchId
	if id == 0 {
		// etcd's auto watch ID: the lowest unused ID counting from 0.
		for ws.mu.watchers[ws.mu.nextID] != nil {
			ws.mu.nextID++
		}
		id = ws.mu.nextID
		ws.mu.nextID++
	} else if ws.mu.watchers[id] != nil {
		ws.enqueue(&pb.WatchResponse{
			Header: ws.header(ws.hub.Revision()), WatchId: -1,
			Created: true, Canceled: true, CancelReason: errDuplicateWatchID,
		})
		return
	}
	opts.ID = id
	// The created response is queued by the hub as it registers the
	// watcher, at the revision the watcher starts after (a watcher of
	// "now"): it precedes every event of the watcher, and a write the
	// client makes once it has the response is the watcher's.
	opts.Created = func(rev int64) {
		ws.enqueue(&pb.WatchResponse{Header: ws.header(rev), WatchId: id, Created: true})
	}
	ws.mu.watchers[id] = ws.hub.Watch(opts, ws)
}

func (ws *watchStream) cancel(id int64) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w, ok := ws.mu.watchers[id]
	if !ok {
		return
	}
	ws.hub.Cancel(w)
	delete(ws.mu.watchers, id)
	ws.enqueue(&pb.WatchResponse{Header: ws.header(ws.hub.Revision()), WatchId: id, Canceled: true})
}

func (ws *watchStream) cancelAll() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for id, w := range ws.mu.watchers {
		ws.hub.Cancel(w)
		delete(ws.mu.watchers, id)
	}
}

// leaderlessChecks is how many checks in a row, an election timeout apart,
// must find no leader before a stream that requires one is cancelled: the
// member has then been without a leader for at least two election timeouts,
// as long as a new such stream waits for one before it is refused. Reopening
// streams costs more than waiting (etcd cancels after three checks too).
const leaderlessChecks = 3

func (ws *watchStream) sendLoop(ctx context.Context, recvDone <-chan error, needLeader bool) error {
	var leaderCheck <-chan time.Time
	if needLeader {
		t := time.NewTicker(ws.s.b.ElectionTimeout())
		defer t.Stop()
		leaderCheck = t.C
	}
	leaderless := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvDone:
			if err != nil {
				return err
			}
			recvDone = nil // the client closed its side: go on sending
			continue
		case <-leaderCheck:
			if ws.s.b.HasLeader() {
				leaderless = 0
			} else if leaderless++; leaderless >= leaderlessChecks {
				return rpctypes.ErrGRPCNoLeader
			}
			continue
		case <-ws.wake:
		}
		if err := ws.flush(); err != nil {
			return err
		}
	}
}

// flush sends everything queued, in order.
func (ws *watchStream) flush() error {
	ws.qmu.Lock()
	items := ws.qmu.queue
	ws.qmu.queue = nil
	for _, it := range items {
		if it.w != nil {
			delete(ws.qmu.dirty, it.w)
		}
	}
	ws.qmu.responses = 0
	ws.qmu.Unlock()
	select {
	case ws.room <- struct{}{}:
	default:
	}
	for _, it := range items {
		if it.resp != nil {
			if err := ws.stream.Send(it.resp); err != nil {
				return err
			}
			continue
		}
		if err := ws.sendWatcher(it.w); err != nil {
			return err
		}
	}
	if err := ws.answerProgress(); err != nil {
		return err
	}
	ws.releaseHeld()
	return nil
}

// releaseHeld releases the last response sent.
func (ws *watchStream) releaseHeld() {
	if ws.heldW != nil {
		ws.hub.Release(ws.heldW, ws.held)
		ws.heldW, ws.held = nil, 0
	}
}

// sent notes that w's response of n bytes was handed to gRPC: the one
// before it is released, and this one held.
func (ws *watchStream) sent(w *watch.Watcher, n int) {
	prev := ws.heldW
	if prev == nil {
		prev = w // nothing held: still tells the hub the stream moves
	}
	ws.hub.Release(prev, ws.held)
	ws.heldW, ws.held = w, n
}

// sendWatcher sends one response of w, of about responseChunkBytes: the
// hub queues the watcher again if it has more.
func (ws *watchStream) sendWatcher(w *watch.Watcher) error {
	limit := ws.s.limits.MaxRequestBytes
	if limit <= 0 {
		limit = defaultResponseBytes
	}
	resp, ok := ws.hub.TakeChunk(w, min(limit, responseChunkBytes))
	if !ok {
		return nil
	}
	id := w.ID()
	var wr *pb.WatchResponse
	if resp.CompactRevision > 0 {
		ws.mu.Lock()
		if ws.mu.watchers[id] == w {
			ws.hub.Cancel(w)
			delete(ws.mu.watchers, id)
		}
		ws.mu.Unlock()
		// etcd's header of this answer has no revision.
		wr = &pb.WatchResponse{
			Header: ws.header(0), WatchId: id,
			CompactRevision: resp.CompactRevision, Canceled: true,
		}
	} else {
		// The hub cuts responses at revision boundaries: a client that
		// resumes after the last event it got must not lose the rest of a
		// revision.
		wr = &pb.WatchResponse{Header: ws.header(resp.Revision), WatchId: id, Events: resp.Events}
	}
	var err error
	if w.Options().Fragment && proto.Size(wr) > limit {
		err = ws.sendFragments(wr, limit)
	} else {
		err = ws.stream.Send(wr)
	}
	if err != nil {
		ws.hub.Release(w, resp.Bytes)
		return err
	}
	ws.sent(w, resp.Bytes)
	return nil
}

// defaultResponseBytes bounds a watch response when no request limit is set.
const defaultResponseBytes = 1536 * 1024

// responseChunkBytes is the size of the whole revisions a response carries
// (one revision may be larger). A stream blocked on a client that does not
// read leaves gRPC holding two or three encoded responses, each in a buffer
// of its pool's next size up (256 B, 4, 16 and 32 KiB, then 1 MiB): with
// responses of up to 1.5 MiB, or even of 128 KiB, 10 such streams held 30
// MB, five times that in heap at GOGC=400. Responses that fit the 32 KiB
// buffers cost little more to send: the events are the bulk of them.
const responseChunkBytes = 28 << 10

// sendFragments splits a large response into fragments of at most limit
// bytes (but at least one event each); all but the last are marked Fragment.
func (ws *watchStream) sendFragments(wr *pb.WatchResponse, limit int) error {
	evs := wr.Events
	for len(evs) > 0 {
		n, size := 0, 0
		for n < len(evs) {
			sz := proto.Size(evs[n])
			if n > 0 && size+sz > limit {
				break
			}
			size += sz
			n++
		}
		frag := &pb.WatchResponse{Header: wr.Header, WatchId: wr.WatchId, Events: evs[:n], Fragment: n < len(evs)}
		if err := ws.stream.Send(frag); err != nil {
			return err
		}
		evs = evs[n:]
	}
	return nil
}

// answerProgress answers a pending progress request once every watcher of
// the stream is synced, as etcd does: the revision then holds for all.
func (ws *watchStream) answerProgress() error {
	ws.qmu.Lock()
	asked := ws.qmu.progress
	ws.qmu.Unlock()
	if !asked {
		return nil
	}
	ws.mu.Lock()
	all := make([]*watch.Watcher, 0, len(ws.mu.watchers))
	for _, w := range ws.mu.watchers {
		all = append(all, w)
	}
	ws.mu.Unlock()
	rev, ok := ws.hub.Synced(all)
	if !ok {
		return nil // asked again when a watcher syncs (it notifies us)
	}
	ws.qmu.Lock()
	ws.qmu.progress = false
	ws.qmu.Unlock()
	return ws.stream.Send(&pb.WatchResponse{Header: ws.header(rev), WatchId: -1})
}
