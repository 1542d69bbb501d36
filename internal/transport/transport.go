package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/raftwire"
	"github.com/synod-io/synod/internal/replica"
)

// Handler receives what peers send. The store implements it.
type Handler interface {
	// HandleRaft delivers Raft messages for a range. It must not block.
	HandleRaft(rangeID keys.RangeID, msgs []*pb.Message)
	// NewIncomingSnapshot starts collecting snapshot data for a range; it
	// fails if this node does not host (and cannot create) the range.
	NewIncomingSnapshot(rangeID keys.RangeID) (*replica.IncomingSnapshot, error)
	// HandleSnapshot hands a fully received snapshot to the range's replica.
	HandleSnapshot(rangeID keys.RangeID, m *pb.Message, data *replica.IncomingSnapshot) error
	// ReportUnreachable says a message of the range to peer was dropped.
	ReportUnreachable(rangeID keys.RangeID, peer uint64)
}

// Config configures a Transport.
type Config struct {
	ClusterID uint64
	NodeID    uint64
	Handler   Handler
	// DialOptions are added to every peer connection (TLS comes here).
	DialOptions []grpc.DialOption
	// QueueLen bounds the messages queued for one peer (default 4096).
	QueueLen int
	// SnapshotChunkBytes is the size of one snapshot frame (default 1 MiB).
	SnapshotChunkBytes int
	// Interceptor, if set, decides the fate of every outgoing message and
	// snapshot (tests use it to inject network faults; see Interceptor).
	Interceptor Interceptor
	// IsRemoved, if set, tells whether a node was removed from the cluster:
	// its traffic is refused with ErrRemoved, so that it learns it. It is
	// called for every frame received and must be cheap.
	IsRemoved func(id uint64) bool
	// OnRemoved, if set, is called when a peer refused this node's traffic
	// because this node was removed from the cluster.
	OnRemoved func()
	Logger    *slog.Logger
}

// Transport sends Raft traffic to peers and serves theirs.
type Transport struct {
	cfg    Config
	logger *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// redialMin and redialMax bound the wait before a peer's stream is
	// opened again after an attempt failed (it doubles from one to the
	// other); a frame from the peer ends the wait at once.
	redialMin, redialMax time.Duration

	mu struct {
		sync.Mutex
		addrs  map[uint64]string
		peers  map[uint64]*peer
		closed bool
		// heard is when a frame last arrived from each node.
		heard map[uint64]time.Time
	}
}

// New returns a transport; Close stops its goroutines.
func New(cfg Config) *Transport {
	if cfg.QueueLen == 0 {
		cfg.QueueLen = 4096
	}
	if cfg.SnapshotChunkBytes == 0 {
		cfg.SnapshotChunkBytes = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Transport{cfg: cfg, logger: cfg.Logger.With("component", "transport"),
		redialMin: 50 * time.Millisecond, redialMax: time.Second}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.mu.addrs = map[uint64]string{}
	t.mu.peers = map[uint64]*peer{}
	t.mu.heard = map[uint64]time.Time{}
	return t
}

// SetPeer sets (or changes) the address of a peer node.
func (t *Transport) SetPeer(id uint64, addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.mu.addrs[id]; ok && old == addr {
		return
	}
	t.mu.addrs[id] = addr
	if p, ok := t.mu.peers[id]; ok {
		p.stop()
		delete(t.mu.peers, id)
	}
}

// RetainPeers forgets every peer not in keep.
func (t *Transport) RetainPeers(keep map[uint64]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id := range t.mu.addrs {
		if keep[id] {
			continue
		}
		delete(t.mu.addrs, id)
		if p, ok := t.mu.peers[id]; ok {
			p.stop()
			delete(t.mu.peers, id)
		}
	}
}

// RemovePeer forgets a peer and closes its connection.
func (t *Transport) RemovePeer(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.mu.addrs, id)
	if p, ok := t.mu.peers[id]; ok {
		p.stop()
		delete(t.mu.peers, id)
	}
}

// peerLocked returns the sender for a peer, starting it if needed.
func (t *Transport) peerLocked(id uint64) (*peer, bool) {
	if t.mu.closed {
		return nil, false
	}
	if p, ok := t.mu.peers[id]; ok {
		return p, true
	}
	addr, ok := t.mu.addrs[id]
	if !ok {
		return nil, false
	}
	p := newPeer(t, id, addr)
	t.mu.peers[id] = p
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		p.run()
	}()
	return p, true
}

// Send queues Raft messages of one range; it never blocks.
func (t *Transport) Send(rangeID keys.RangeID, msgs []*pb.Message) {
	if t.cfg.Interceptor != nil {
		t.intercept(rangeID, msgs)
		return
	}
	var unreachable []uint64
	t.mu.Lock()
	for _, m := range msgs {
		p, ok := t.peerLocked(m.GetTo())
		if !ok || !p.enqueue(outMsg{rangeID: rangeID, msg: m}) {
			unreachable = append(unreachable, m.GetTo())
		}
	}
	t.mu.Unlock()
	for _, to := range unreachable {
		t.cfg.Handler.ReportUnreachable(rangeID, to)
	}
}

// SendSnapshot streams a snapshot to m.To in the background. done is called
// with the outcome; snap is closed in every case.
func (t *Transport) SendSnapshot(rangeID keys.RangeID, m *pb.Message, snap *replica.OutgoingSnapshot, done func(ok bool)) {
	if t.cfg.Interceptor != nil && !t.cfg.Interceptor.Snapshot(rangeID, m.GetTo()) {
		snap.Close()
		done(false)
		return
	}
	t.mu.Lock()
	p, ok := t.peerLocked(m.GetTo())
	t.mu.Unlock()
	if !ok {
		snap.Close()
		done(false)
		return
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer snap.Close()
		err := p.sendSnapshot(t.ctx, rangeID, m, snap)
		if err != nil {
			t.logger.Warn("snapshot send failed", "range", uint64(rangeID), "to", fmt.Sprintf("%x", m.GetTo()), "err", err)
		} else {
			t.logger.Info("snapshot sent", "range", uint64(rangeID), "to", fmt.Sprintf("%x", m.GetTo()),
				"index", m.GetSnapshot().GetMetadata().GetIndex())
		}
		done(err == nil)
	}()
}

// Close stops every sender and waits for them.
func (t *Transport) Close() {
	t.mu.Lock()
	t.mu.closed = true
	for id, p := range t.mu.peers {
		p.stop()
		delete(t.mu.peers, id)
	}
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
}

type outMsg struct {
	rangeID keys.RangeID
	msg     *pb.Message
}

// peer sends to one node over one stream, batching whatever is queued.
type peer struct {
	t    *Transport
	id   uint64
	addr string
	done chan struct{}

	mu struct {
		sync.Mutex
		queue   []outMsg
		stopped bool
	}
	wake chan struct{}
	// up is signalled when a frame arrives from the peer while this side
	// may be waiting out a backoff: the peer is back, retry now.
	up chan struct{}

	connMu sync.Mutex
	conn   *grpc.ClientConn
}

func newPeer(t *Transport, id uint64, addr string) *peer {
	return &peer{t: t, id: id, addr: addr, done: make(chan struct{}), wake: make(chan struct{}, 1), up: make(chan struct{}, 1)}
}

func (p *peer) enqueue(m outMsg) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.stopped || len(p.mu.queue) >= p.t.cfg.QueueLen {
		return false
	}
	p.mu.queue = append(p.mu.queue, m)
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return true
}

func (p *peer) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.mu.stopped {
		p.mu.stopped = true
		close(p.done)
	}
}

func (p *peer) take() []outMsg {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := p.mu.queue
	p.mu.queue = nil
	return q
}

func (p *peer) client() (*grpc.ClientConn, error) {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	if p.conn != nil {
		return p.conn, nil
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// gRPC's default reconnect backoff grows to two minutes; a peer that
		// restarts must be reached within about an election timeout.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(codec{}), grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
	}, windowDialOptions()...)
	opts = append(opts, p.t.cfg.DialOptions...)
	conn, err := grpc.NewClient(p.addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial peer %x at %s: %w", p.id, p.addr, err)
	}
	p.conn = conn
	return conn, nil
}

// resetBackoff makes a connection waiting to retry try again now, and so
// does the stream loop (run) if it is waiting out its own backoff.
func (p *peer) resetBackoff() {
	select {
	case p.up <- struct{}{}:
	default:
	}
	p.connMu.Lock()
	defer p.connMu.Unlock()
	if p.conn != nil && p.conn.GetState() == connectivity.TransientFailure {
		p.conn.ResetConnectBackoff()
	}
}

func (p *peer) closeConn() {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
}

// run owns the Raft stream to the peer until the peer is stopped.
func (p *peer) run() {
	defer p.closeConn()
	ctx, cancel := context.WithCancel(p.t.ctx)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	var stream grpc.ClientStream
	var broken <-chan error
	// inFlight holds a message of each range sent on the current stream:
	// if the stream breaks, they may have been lost.
	var inFlight []outMsg
	var buf []byte // reused to encode each batch's messages
	backoff := p.t.redialMin
	peerUp := false // the peer was heard from during the last backoff
	for {
		select {
		case <-ctx.Done():
			if stream != nil {
				_ = stream.CloseSend()
			}
			return
		case err := <-broken:
			// The receiver ended the stream (it restarted, or refused us):
			// what was in flight may be lost; the next batch opens a new one.
			p.t.logger.Debug("peer ended stream", "peer", fmt.Sprintf("%x", p.id), "err", err)
			if isRemovedError(err) && p.t.cfg.OnRemoved != nil {
				p.t.cfg.OnRemoved()
			}
			p.dropped(inFlight)
			stream, broken, inFlight = nil, nil, nil
			continue
		case <-p.wake:
		}
		batch := p.take()
		if len(batch) == 0 {
			continue
		}
		if stream == nil {
			s, b, err := p.openRaftStream(ctx, peerUp)
			peerUp = false
			if err != nil {
				p.dropped(batch)
				p.t.logger.Debug("peer unreachable", "peer", fmt.Sprintf("%x", p.id), "err", err)
				timer := time.NewTimer(backoff)
				select {
				case <-ctx.Done():
				case <-timer.C:
					backoff = min(backoff*2, p.t.redialMax)
				case <-p.up:
					// A restarted peer reached us: it is up again.
					backoff, peerUp = p.t.redialMin, true
				}
				timer.Stop()
				continue
			}
			stream, broken, backoff = s, b, p.t.redialMin
		}
		var err error
		if buf, err = p.sendBatch(stream, batch, buf); err != nil {
			p.dropped(batch)
			p.t.logger.Debug("peer stream broke", "peer", fmt.Sprintf("%x", p.id), "err", err)
			stream, broken, inFlight = nil, nil, nil
			continue
		}
		inFlight = appendNewRanges(inFlight, batch)
	}
}

func appendNewRanges(dst, batch []outMsg) []outMsg {
	for _, m := range batch {
		seen := false
		for _, d := range dst {
			if d.rangeID == m.rangeID {
				seen = true
				break
			}
		}
		if !seen {
			dst = append(dst, m)
		}
	}
	return dst
}

// openRaftStream opens the stream of Raft frames to the peer. The returned
// channel yields why the stream ended when the peer ends it; the goroutine
// watching for that ends with the stream.
func (p *peer) openRaftStream(ctx context.Context, waitReady bool) (grpc.ClientStream, <-chan error, error) {
	conn, err := p.client()
	if err != nil {
		return nil, nil, err
	}
	if waitReady {
		// The peer was just heard from and its connection is being made
		// again (resetBackoff): wait for it, briefly, rather than fail at
		// once in the state the reset left it in.
		awaitReady(ctx, conn, time.Second)
	}
	stream, err := conn.NewStream(ctx, &serviceDesc.Streams[0], raftMethod)
	if err != nil {
		return nil, nil, err
	}
	broken := make(chan error, 1)
	p.t.wg.Add(1)
	go func() {
		defer p.t.wg.Done()
		var a ack
		err := stream.RecvMsg(&a) // returns only when the stream ends
		if err == nil {
			err = io.EOF
		}
		broken <- err
	}()
	return stream, broken, nil
}

// awaitReady waits until conn is ready, at most d.
func awaitReady(ctx context.Context, conn *grpc.ClientConn, d time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	conn.Connect()
	for {
		st := conn.GetState()
		if st == connectivity.Ready || !conn.WaitForStateChange(ctx, st) {
			return
		}
	}
}

// maxFrameBytes bounds one frame of Raft messages.
const maxFrameBytes = 8 << 20

// sendBatch encodes batch into frames and sends them. buf is scratch space
// for the encoded messages; it is returned for the next batch.
func (p *peer) sendBatch(stream grpc.ClientStream, batch []outMsg, buf []byte) ([]byte, error) {
	f := raftFrame{clusterID: p.t.cfg.ClusterID, from: p.t.cfg.NodeID, items: make([]raftItem, 0, len(batch))}
	size := 0
	buf = buf[:0]
	for i, m := range batch {
		start := len(buf)
		var err error
		buf, err = raftwire.AppendMessage(buf, m.msg)
		if err != nil {
			return buf, fmt.Errorf("encode raft message: %w", err)
		}
		b := buf[start:]
		if size > 0 && size+len(b) > maxFrameBytes {
			if err := stream.SendMsg(&f); err != nil {
				p.dropped(batch[i:])
				return buf, err
			}
			f.items, size = f.items[:0], 0
		}
		f.items = append(f.items, raftItem{rangeID: uint64(m.rangeID), msg: b})
		size += len(b)
	}
	if cap(buf) > maxFrameBytes {
		buf = nil // a snapshot-sized batch: do not keep its buffer
	}
	return buf, stream.SendMsg(&f)
}

func (p *peer) dropped(batch []outMsg) {
	seen := map[keys.RangeID]bool{}
	for _, m := range batch {
		if !seen[m.rangeID] {
			seen[m.rangeID] = true
			p.t.cfg.Handler.ReportUnreachable(m.rangeID, p.id)
		}
	}
}

func (p *peer) sendSnapshot(ctx context.Context, rangeID keys.RangeID, m *pb.Message, snap *replica.OutgoingSnapshot) error {
	conn, err := p.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	stream, err := conn.NewStream(ctx, &serviceDesc.Streams[1], snapshotMethod)
	if err != nil {
		return err
	}
	msg, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode snapshot message: %w", err)
	}
	base := snapshotFrame{clusterID: p.t.cfg.ClusterID, from: p.t.cfg.NodeID, rangeID: uint64(rangeID)}
	head := base
	head.msg = msg
	if err := stream.SendMsg(&head); err != nil {
		return err
	}
	err = snap.Iterate(p.t.cfg.SnapshotChunkBytes, func(kvs []replica.KeyValue) error {
		f := base
		for _, kv := range kvs {
			f.keys = append(f.keys, kv.Key)
			f.values = append(f.values, kv.Value)
		}
		return stream.SendMsg(&f)
	})
	if err != nil {
		return err
	}
	last := base
	last.final = true
	if err := stream.SendMsg(&last); err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	var a ack
	if err := stream.RecvMsg(&a); err != nil {
		return err
	}
	if a.err != "" {
		return errors.New(a.err)
	}
	return nil
}

// Server methods.

const (
	serviceName    = "synod.transport.v1.Peer"
	raftMethod     = "/" + serviceName + "/Raft"
	snapshotMethod = "/" + serviceName + "/Snapshot"
)

// ServerOptions returns the gRPC server options the peer server needs.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodec(codec{}),
		grpc.MaxRecvMsgSize(64 << 20),
		grpc.MaxSendMsgSize(64 << 20),
		grpc.StaticStreamWindowSize(streamWindow),
		grpc.StaticConnWindowSize(connWindow),
	}
}

// Flow control windows of the peer connections, in both directions. They
// are static: with gRPC's dynamic windows, every data frame that arrived
// while no bandwidth probe was outstanding made the receiver send a window
// update and a BDP ping, and the sender answer the ping, so each Raft
// message cost its two members extra frames and wake-ups. A stream's window
// holds a whole frame of Raft messages (maxFrameBytes).
const (
	streamWindow = maxFrameBytes
	connWindow   = 2 * maxFrameBytes
)

// windowDialOptions are the client side of the static windows.
func windowDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithStaticStreamWindowSize(streamWindow),
		grpc.WithStaticConnWindowSize(connWindow),
	}
}

// Register adds the peer service to a gRPC server created with ServerOptions.
func (t *Transport) Register(s *grpc.Server) {
	s.RegisterService(&serviceDesc, t)
}

type peerServer interface{}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*peerServer)(nil),
	Streams: []grpc.StreamDesc{
		{StreamName: "Raft", Handler: handleRaftStream, ClientStreams: true},
		{StreamName: "Snapshot", Handler: handleSnapshotStream, ClientStreams: true},
	},
	Metadata: "synod/transport.proto",
}

var errWrongCluster = errors.New("frame from another cluster")

// removedMessage is the status message of ErrRemoved.
const removedMessage = "synod: this member was removed from the cluster"

// ErrRemoved is how a node refuses the traffic of a removed member.
var ErrRemoved = status.Error(codes.PermissionDenied, removedMessage)

func isRemovedError(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.PermissionDenied && st.Message() == removedMessage
}

func handleRaftStream(srv any, stream grpc.ServerStream) error {
	t := srv.(*Transport)
	first := true
	for {
		var f raftFrame
		if err := stream.RecvMsg(&f); err != nil {
			if errors.Is(err, io.EOF) {
				return stream.SendMsg(&ack{})
			}
			return err
		}
		if f.clusterID != t.cfg.ClusterID {
			t.logger.Warn("refusing raft traffic from another cluster", "cluster", fmt.Sprintf("%x", f.clusterID), "from", fmt.Sprintf("%x", f.from))
			return errWrongCluster
		}
		if t.cfg.IsRemoved != nil && t.cfg.IsRemoved(f.from) {
			t.logger.Warn("refusing raft traffic from a removed member", "from", fmt.Sprintf("%x", f.from))
			return ErrRemoved
		}
		t.noteHeard(f.from)
		if first {
			// The peer is up: if our connection to it is waiting out a
			// backoff, retry now.
			t.peerIsUp(f.from)
			first = false
		}
		t.deliver(&f)
	}
}

func (t *Transport) noteHeard(id uint64) {
	now := time.Now()
	t.mu.Lock()
	t.mu.heard[id] = now
	t.mu.Unlock()
}

// LastHeard returns when a frame last arrived from a node (zero: never).
// With heartbeats every tick, it tells which peers are alive more promptly
// than Raft's per-election-timeout activity flags.
func (t *Transport) LastHeard(id uint64) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mu.heard[id]
}

func (t *Transport) peerIsUp(id uint64) {
	t.mu.Lock()
	p, ok := t.mu.peers[id]
	t.mu.Unlock()
	if ok {
		p.resetBackoff()
	}
}

// deliver groups a frame's messages by range and hands them to the handler.
func (t *Transport) deliver(f *raftFrame) {
	var cur keys.RangeID
	var msgs []*pb.Message
	flush := func() {
		if len(msgs) > 0 {
			t.cfg.Handler.HandleRaft(cur, msgs)
			msgs = nil
		}
	}
	for _, it := range f.items {
		// The frame was decoded from a private copy (codec.Unmarshal), so
		// the message may alias it.
		m, err := raftwire.DecodeMessage(it.msg)
		if err != nil {
			t.logger.Warn("dropping undecodable raft message", "from", fmt.Sprintf("%x", f.from), "err", err)
			continue
		}
		if m.GetTo() != t.cfg.NodeID || m.GetType() == pb.MsgSnap {
			continue
		}
		if keys.RangeID(it.rangeID) != cur {
			flush()
			cur = keys.RangeID(it.rangeID)
		}
		msgs = append(msgs, m)
	}
	flush()
}

func handleSnapshotStream(srv any, stream grpc.ServerStream) error {
	t := srv.(*Transport)
	err := t.receiveSnapshot(stream)
	a := ack{}
	if err != nil {
		t.logger.Warn("snapshot receive failed", "err", err)
		a.err = err.Error()
	}
	return stream.SendMsg(&a)
}

func (t *Transport) receiveSnapshot(stream grpc.ServerStream) error {
	var head snapshotFrame
	if err := stream.RecvMsg(&head); err != nil {
		return fmt.Errorf("receive snapshot header: %w", err)
	}
	if head.clusterID != t.cfg.ClusterID {
		return errWrongCluster
	}
	m := &pb.Message{}
	if err := proto.Unmarshal(head.msg, m); err != nil || m.GetType() != pb.MsgSnap || m.GetTo() != t.cfg.NodeID {
		return fmt.Errorf("snapshot header carries no snapshot message for this node")
	}
	rangeID := keys.RangeID(head.rangeID)
	data, err := t.cfg.Handler.NewIncomingSnapshot(rangeID)
	if err != nil {
		return err
	}
	handed := false
	defer func() {
		if !handed {
			data.Close()
		}
	}()
	for {
		var f snapshotFrame
		if err := stream.RecvMsg(&f); err != nil {
			return fmt.Errorf("receive snapshot data: %w", err)
		}
		if f.rangeID != head.rangeID || f.clusterID != head.clusterID {
			return errors.New("snapshot frame of another stream")
		}
		for i := range f.keys {
			if err := data.Add(f.keys[i], f.values[i]); err != nil {
				return err
			}
		}
		if f.final {
			break
		}
	}
	handed = true
	return t.cfg.Handler.HandleSnapshot(rangeID, m, data)
}

// Conn returns the connection to a peer node, for other peer services (the
// lease forwarding of the server) to share with Raft traffic. Its calls use
// the peer codec, which also carries protobuf messages.
func (t *Transport) Conn(id uint64) (*grpc.ClientConn, error) {
	t.mu.Lock()
	p, ok := t.peerLocked(id)
	t.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no address for peer %x", id)
	}
	return p.client()
}

// Dial opens a connection to a node's peer service at addr, outside the
// transport's own peers (a joining node uses it to find its cluster).
func Dial(addr string, extra []grpc.DialOption) (*grpc.ClientConn, error) {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(codec{})),
	}, windowDialOptions()...)
	opts = append(opts, extra...)
	return grpc.NewClient(addr, opts...)
}
