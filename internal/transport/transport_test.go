package transport

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/replica"
)

func TestFrameRoundTrip(t *testing.T) {
	rf := raftFrame{clusterID: 7, from: 9, items: []raftItem{{rangeID: 1, msg: []byte("a")}, {rangeID: 2, msg: nil}}}
	var got raftFrame
	if err := (codec{}).Unmarshal(rf.marshal(), &got); err != nil {
		t.Fatal(err)
	}
	if got.clusterID != 7 || got.from != 9 || len(got.items) != 2 || got.items[1].rangeID != 2 || string(got.items[0].msg) != "a" {
		t.Fatalf("raft frame: got %+v, want %+v", got, rf)
	}
	big := raftFrame{clusterID: 1 << 60, from: 1 << 40, items: []raftItem{{rangeID: 1 << 30, msg: bytes.Repeat([]byte("m"), 300)}, {rangeID: 5, msg: []byte("n")}}}
	enc := big.marshal()
	if len(enc) != cap(enc) {
		t.Fatalf("raft frame buffer: got length %d capacity %d, want them equal", len(enc), cap(enc))
	}
	var gotBig raftFrame
	if err := (codec{}).Unmarshal(enc, &gotBig); err != nil {
		t.Fatal(err)
	}
	if gotBig.clusterID != big.clusterID || gotBig.from != big.from || len(gotBig.items) != 2 ||
		gotBig.items[0].rangeID != 1<<30 || !bytes.Equal(gotBig.items[0].msg, big.items[0].msg) || string(gotBig.items[1].msg) != "n" {
		t.Fatalf("raft frame: got %+v, want %+v", gotBig, big)
	}
	sf := snapshotFrame{clusterID: 1, rangeID: 3, msg: []byte("m"), keys: [][]byte{[]byte("k")}, values: [][]byte{nil}, final: true}
	var gs snapshotFrame
	if err := (codec{}).Unmarshal(sf.marshal(), &gs); err != nil {
		t.Fatal(err)
	}
	if gs.rangeID != 3 || !gs.final || string(gs.keys[0]) != "k" || len(gs.values[0]) != 0 || string(gs.msg) != "m" {
		t.Fatalf("snapshot frame: got %+v, want %+v", gs, sf)
	}
}

func FuzzFrames(f *testing.F) {
	f.Add((&raftFrame{clusterID: 1, items: []raftItem{{1, []byte("x")}}}).marshal())
	f.Add((&snapshotFrame{keys: [][]byte{{1}}, values: [][]byte{{2}}}).marshal())
	f.Fuzz(func(t *testing.T, data []byte) {
		var rf raftFrame
		var sf snapshotFrame
		var a ack
		_ = rf.unmarshal(data)
		_ = sf.unmarshal(data)
		_ = a.unmarshal(data)
	})
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// recorder is a Handler that records what it receives.
type recorder struct {
	db *pebble.DB
	mu sync.Mutex
	// msgs by range
	msgs        map[keys.RangeID][]*pb.Message
	snaps       []*replica.IncomingSnapshot
	unreachable int
}

func (r *recorder) HandleRaft(id keys.RangeID, msgs []*pb.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs[id] = append(r.msgs[id], msgs...)
}

func (r *recorder) NewIncomingSnapshot(id keys.RangeID) (*replica.IncomingSnapshot, error) {
	return replica.NewIncomingSnapshot(r.db, id), nil
}

func (r *recorder) HandleSnapshot(_ keys.RangeID, _ *pb.Message, data *replica.IncomingSnapshot) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snaps = append(r.snaps, data)
	return nil
}

func (r *recorder) ReportUnreachable(keys.RangeID, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unreachable++
}

func (r *recorder) count(id keys.RangeID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs[id])
}

type node struct {
	t    *Transport
	rec  *recorder
	srv  *grpc.Server
	addr string
}

func startNode(t *testing.T, clusterID, id uint64) (*node, string) {
	t.Helper()
	n, err := startNodeAt(t, clusterID, id, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return n, n.addr
}

// startNodeAt starts a node listening on addr.
func startNodeAt(t *testing.T, clusterID, id uint64, addr string) (*node, error) {
	t.Helper()
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{db: db, msgs: map[keys.RangeID][]*pb.Message{}}
	tr := New(Config{ClusterID: clusterID, NodeID: id, Handler: rec, SnapshotChunkBytes: 16})
	srv := grpc.NewServer(ServerOptions()...)
	tr.Register(srv)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Stop()
		tr.Close()
		rec.mu.Lock()
		for _, s := range rec.snaps {
			s.Close()
		}
		rec.mu.Unlock()
		db.Close()
	})
	return &node{t: tr, rec: rec, srv: srv, addr: l.Addr().String()}, nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func heartbeat(from, to uint64, i int) *pb.Message {
	return &pb.Message{Type: pb.MsgHeartbeat.Enum(), From: proto.Uint64(from), To: proto.Uint64(to), Commit: proto.Uint64(uint64(i))}
}

func TestMessagesArriveInOrderPerRange(t *testing.T) {
	a, _ := startNode(t, 1, 10)
	b, addrB := startNode(t, 1, 20)
	a.t.SetPeer(20, addrB)
	const n = 500
	for i := 0; i < n; i++ {
		a.t.Send(keys.RangeID(1+i%2), []*pb.Message{heartbeat(10, 20, i)})
	}
	waitFor(t, "all messages", func() bool { return b.rec.count(1)+b.rec.count(2) == n })
	for _, id := range []keys.RangeID{1, 2} {
		b.rec.mu.Lock()
		msgs := b.rec.msgs[id]
		b.rec.mu.Unlock()
		for k := 1; k < len(msgs); k++ {
			if msgs[k].GetCommit() <= msgs[k-1].GetCommit() {
				t.Fatalf("range %d: message %d out of order", id, k)
			}
		}
	}
	// Messages addressed to another node are dropped by the receiver.
	a.t.Send(1, []*pb.Message{heartbeat(10, 99, 0)})
	waitFor(t, "unreachable report for unknown peer", func() bool {
		a.rec.mu.Lock()
		defer a.rec.mu.Unlock()
		return a.rec.unreachable > 0
	})
}

func TestOtherClusterIsRefused(t *testing.T) {
	a, _ := startNode(t, 1, 10)
	b, addrB := startNode(t, 2, 20)
	a.t.SetPeer(20, addrB)
	i := 0
	waitFor(t, "unreachable reports", func() bool {
		i++
		a.t.Send(1, []*pb.Message{heartbeat(10, 20, i)})
		a.rec.mu.Lock()
		defer a.rec.mu.Unlock()
		return a.rec.unreachable > 0
	})
	if got := b.rec.count(1); got != 0 {
		t.Fatalf("messages accepted from another cluster: got %d, want 0", got)
	}
}

func TestSnapshotStreams(t *testing.T) {
	a, _ := startNode(t, 1, 10)
	b, addrB := startNode(t, 1, 20)
	a.t.SetPeer(20, addrB)

	// Source data: a replica's replicated keys, written straight to Pebble.
	src, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bt := src.NewBatch()
	if err := replica.Bootstrap(bt, 1, []uint64{10, 20}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		_ = bt.Set(keys.MVCCKey([]byte(fmt.Sprintf("k%03d", i)), int64(i+1)), []byte("value"), nil)
	}
	if err := bt.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	snap, err := replica.NewOutgoingSnapshot(src, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := &pb.Message{Type: pb.MsgSnap.Enum(), From: proto.Uint64(10), To: proto.Uint64(20), Snapshot: &pb.Snapshot{Metadata: snap.Meta}}
	done := make(chan bool, 1)
	a.t.SendSnapshot(1, m, snap, func(ok bool) { done <- ok })
	if ok := <-done; !ok {
		t.Fatalf("snapshot send failed")
	}
	b.rec.mu.Lock()
	defer b.rec.mu.Unlock()
	if len(b.rec.snaps) != 1 {
		t.Fatalf("snapshots received: got %d, want 1", len(b.rec.snaps))
	}
	var got [][]byte
	if err := b.rec.snaps[0].Iterate(func(k, _ []byte) error {
		got = append(got, append([]byte(nil), k...))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var want [][]byte
	for _, span := range keys.ReplicatedSpans(1) {
		it, _ := src.NewIter(&pebble.IterOptions{LowerBound: span.Start, UpperBound: span.End})
		for v := it.First(); v; v = it.Next() {
			want = append(want, append([]byte(nil), it.Key()...))
		}
		it.Close()
	}
	if len(got) != len(want) {
		t.Fatalf("snapshot keys: got %d, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("snapshot key %d: got %q, want %q", i, got[i], want[i])
		}
	}
}

// TestRestartedPeerIsRedialledAtOnce checks that a node waiting out its
// backoff before opening a stream to a peer again stops waiting as soon as
// that peer's traffic arrives: a restarted member must hear from its
// leader within an election timeout, not after the leader's backoff.
func TestRestartedPeerIsRedialledAtOnce(t *testing.T) {
	a, addrA := startNode(t, 1, 10)
	// Nothing listens at b's address yet.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addrB := l.Addr().String()
	l.Close()
	// Only the peer's traffic can end a's wait within the test.
	a.t.redialMin, a.t.redialMax = time.Hour, time.Hour
	a.t.SetPeer(20, addrB)
	a.t.Send(1, []*pb.Message{heartbeat(10, 20, 1)})
	waitFor(t, "a failed attempt", func() bool {
		a.rec.mu.Lock()
		defer a.rec.mu.Unlock()
		return a.rec.unreachable > 0
	})

	b, err := startNodeAt(t, 1, 20, addrB)
	if err != nil {
		t.Fatal(err)
	}
	b.t.SetPeer(10, addrA)
	b.t.Send(1, []*pb.Message{heartbeat(20, 10, 1)})
	waitFor(t, "b's heartbeat at a", func() bool { return a.rec.count(1) > 0 })
	i := 1
	waitFor(t, "a's messages at b", func() bool {
		i++
		a.t.Send(1, []*pb.Message{heartbeat(10, 20, i)})
		return b.rec.count(1) > 0
	})
}
