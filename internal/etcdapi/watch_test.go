package etcdapi

import (
	"context"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/watch"
)

type watchStreamT = serverStream[pb.WatchRequest, pb.WatchResponse]

// openWatch runs a Watch stream on b; when the test ends the stream is
// closed, must end without error and must leave no watcher in the hub.
func openWatch(t *testing.T, b *fakeBackend) *watchStreamT {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream := newServerStream[pb.WatchRequest, pb.WatchResponse](ctx)
	done := serve(func() error { return NewWatch(b, Limits{}).Watch(stream) })
	t.Cleanup(func() {
		cancel()
		// The test ends the stream by cancelling its context: the
		// handler may see that first (Canceled) or the closed receive.
		if err := result(t, done); err != nil && status.Code(err) != codes.Canceled {
			t.Errorf("got error %v when the stream ended, want none or Canceled", err)
		}
		if n := b.hub.Stats().Watchers; n != 0 {
			t.Errorf("got %d watchers left in the hub, want 0", n)
		}
	})
	return stream
}

func createReq(c *pb.WatchCreateRequest) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: c}}
}

func cancelReq(id int64) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}}
}

func progressReq() *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}
}

// checkWatchResp fails the test unless got is want, headers included.
func checkWatchResp(t *testing.T, got, want *pb.WatchResponse) {
	t.Helper()
	want.Header = &pb.ResponseHeader{ClusterId: testClusterID, MemberId: testMemberID, RaftTerm: testRaftTerm, Revision: want.GetHeader().GetRevision()}
	if !proto.Equal(got, want) {
		t.Fatalf("got response %v, want %v", got, want)
	}
}

func created(id, rev int64) *pb.WatchResponse {
	return &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: rev}, WatchId: id, Created: true}
}

// refused is the answer to a create that fails, as etcd gives it.
func refused(rev int64, reason string) *pb.WatchResponse {
	return &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: rev}, WatchId: -1, Created: true, Canceled: true, CancelReason: reason}
}

func publishPut(b *fakeBackend, key string, rev int64) {
	b.hub.Publish([]kv.Event{{Type: mvccpb.PUT, KV: &mvccpb.KeyValue{Key: []byte(key), Value: []byte("v"), ModRevision: rev, CreateRevision: rev, Version: 1}}}, kv.Meta{Revision: rev})
}

// TestWatchIDs checks etcd's watch IDs: the lowest unused from 0 unless
// the client chooses one, and a chosen ID in use refused.
func TestWatchIDs(t *testing.T) {
	b := newFakeBackend(t, 10)
	stream := openWatch(t, b)
	steps := []struct {
		id   int64
		want *pb.WatchResponse
	}{
		{0, created(0, 10)},
		{0, created(1, 10)},
		{3, created(3, 10)},
		{0, created(2, 10)},
		{0, created(4, 10)},
		{3, refused(10, "mvcc: duplicate watch ID provided on the WatchStream")},
	}
	for _, s := range steps {
		stream.send(t, createReq(&pb.WatchCreateRequest{Key: []byte("a"), WatchId: s.id}))
		checkWatchResp(t, stream.next(t), s.want)
	}
}

// TestWatchRefusesEmptyRange checks that a watch of a range with no key
// (range_end at or before key) is refused as etcd refuses it, rather than
// created to never fire; from-key and single-key watches are not.
func TestWatchRefusesEmptyRange(t *testing.T) {
	const reason = "mvcc: watcher range is empty"
	tests := []struct {
		name     string
		key, end string
		want     *pb.WatchResponse
	}{
		{"end before key", "b", "a", refused(10, reason)},
		{"end equal to key", "b", "b", refused(10, reason)},
		{"empty key, end at the smallest key", "", "\x00", created(0, 10)},
		{"from key", "b", "\x00", created(0, 10)},
		{"single key", "b", "", created(0, 10)},
		{"range", "b", "c", created(0, 10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend(t, 10)
			stream := openWatch(t, b)
			stream.send(t, createReq(&pb.WatchCreateRequest{Key: []byte(tt.key), RangeEnd: []byte(tt.end)}))
			checkWatchResp(t, stream.next(t), tt.want)
			if tt.want.Canceled {
				// Nothing was registered, and the refused create took no ID.
				if n := b.hub.Stats().Watchers; n != 0 {
					t.Fatalf("got %d watchers in the hub, want 0", n)
				}
				stream.send(t, createReq(&pb.WatchCreateRequest{Key: []byte("a")}))
				checkWatchResp(t, stream.next(t), created(0, 10))
			}
		})
	}
}

// TestWatchEmptyKey checks that a watch of the empty key watches "\x00",
// the smallest key, as etcd's does.
func TestWatchEmptyKey(t *testing.T) {
	b := newFakeBackend(t, 10)
	stream := openWatch(t, b)
	stream.send(t, createReq(&pb.WatchCreateRequest{}))
	checkWatchResp(t, stream.next(t), created(0, 10))
	stream.send(t, createReq(&pb.WatchCreateRequest{Key: []byte("z")}))
	checkWatchResp(t, stream.next(t), created(1, 10))
	publishPut(b, "\x00", 11)
	publishPut(b, "z", 12)
	resp := stream.next(t)
	if resp.WatchId != 0 || len(resp.Events) != 1 || string(resp.Events[0].Kv.Key) != "\x00" {
		t.Fatalf("got response %v, want watcher 0's put of \"\\x00\"", resp)
	}
}

// TestWatchEvents checks that a watcher gets the events of its range at
// their revision, filtered as it asked.
func TestWatchEvents(t *testing.T) {
	b := newFakeBackend(t, 10)
	stream := openWatch(t, b)
	stream.send(t, createReq(&pb.WatchCreateRequest{Key: []byte("a"), RangeEnd: []byte("c"), Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}}))
	checkWatchResp(t, stream.next(t), created(0, 10))
	publishPut(b, "b", 11)
	publishDelete(b, "b", 12)
	want := &pb.WatchResponse{
		Header: &pb.ResponseHeader{Revision: 12}, WatchId: 0,
		Events: []*mvccpb.Event{{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("b"), ModRevision: 12}}},
	}
	checkWatchResp(t, stream.next(t), want)
}

// TestWatchCancel checks that a cancel of a watcher answers with its ID,
// and a cancel of an ID not in use is ignored, as etcd does.
func TestWatchCancel(t *testing.T) {
	b := newFakeBackend(t, 10)
	stream := openWatch(t, b)
	stream.send(t, createReq(&pb.WatchCreateRequest{Key: []byte("a")}))
	checkWatchResp(t, stream.next(t), created(0, 10))
	stream.send(t, cancelReq(99))
	stream.send(t, cancelReq(0))
	// Responses come in order: had the unknown cancel been answered, its
	// answer would come first.
	checkWatchResp(t, stream.next(t), &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 10}, WatchId: 0, Canceled: true})
	if n := b.hub.Stats().Watchers; n != 0 {
		t.Fatalf("got %d watchers in the hub after the cancel, want 0", n)
	}
	// The canceled watcher gets no more events, a second cancel of it is
	// ignored, and automatic IDs go on counting (as etcd's).
	publishPut(b, "a", 11)
	stream.send(t, cancelReq(0))
	stream.send(t, createReq(&pb.WatchCreateRequest{Key: []byte("b")}))
	checkWatchResp(t, stream.next(t), created(1, 11))
}

// TestWatchProgressRequest checks that a progress request is answered with
// watch ID -1 at the revision every watcher of the stream has reached.
func TestWatchProgressRequest(t *testing.T) {
	b := newFakeBackend(t, 10)
	stream := openWatch(t, b)
	stream.send(t, progressReq())
	checkWatchResp(t, stream.next(t), &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 10}, WatchId: -1})

	stream.send(t, createReq(&pb.WatchCreateRequest{Key: []byte("a")}))
	checkWatchResp(t, stream.next(t), created(0, 10))
	publishPut(b, "z", 11) // not the watcher's: it is synced at 11 at once
	stream.send(t, progressReq())
	checkWatchResp(t, stream.next(t), &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 11}, WatchId: -1})
}

// TestWatchCompacted checks that a watch from a compacted revision is
// canceled with the compaction revision, as etcd's is, and that its
// header carries no revision.
func TestWatchCompacted(t *testing.T) {
	b := newFakeBackend(t, 10)
	b.hub = watch.NewHub(watch.Config{}, kv.Meta{Revision: 10, CompactRevision: 6})
	ctx, cancel := context.WithCancel(context.Background())
	hubDone := make(chan struct{})
	go func() { defer close(hubDone); b.hub.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-hubDone })
	stream := openWatch(t, b)
	stream.send(t, createReq(&pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 3}))
	checkWatchResp(t, stream.next(t), created(0, 10))
	checkWatchResp(t, stream.next(t), &pb.WatchResponse{WatchId: 0, Canceled: true, CompactRevision: 6})
	if n := b.hub.Stats().Watchers; n != 0 {
		t.Fatalf("got %d watchers in the hub after the compaction cancel, want 0", n)
	}
}

// TestWatchRequireLeader checks a stream that requires a leader, as
// clientv3's WithRequireLeader asks: it fails at once when the node finds
// none, and later when the node has none for leaderlessChecks checks in a
// row.
func TestWatchRequireLeader(t *testing.T) {
	md := metadata.Pairs(rpctypes.MetadataRequireLeaderKey, rpctypes.MetadataHasLeader)
	ctx := metadata.NewIncomingContext(context.Background(), md)

	t.Run("no leader at the start", func(t *testing.T) {
		b := newFakeBackend(t, 10)
		b.waitLeader = func(context.Context) error { return rpctypes.ErrGRPCNoLeader }
		stream := newServerStream[pb.WatchRequest, pb.WatchResponse](ctx)
		checkErr(t, NewWatch(b, Limits{}).Watch(stream), rpctypes.ErrGRPCNoLeader)
	})

	t.Run("leader lost", func(t *testing.T) {
		b := newFakeBackend(t, 10)
		b.waitLeader = func(context.Context) error { return nil }
		b.electionTick = time.Millisecond
		checks := make(chan struct{}, 100)
		b.hasLeader = func() bool {
			checks <- struct{}{}
			return false
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel() // as gRPC does when the handler returns
		stream := newServerStream[pb.WatchRequest, pb.WatchResponse](ctx)
		done := serve(func() error { return NewWatch(b, Limits{}).Watch(stream) })
		checkErr(t, result(t, done), rpctypes.ErrGRPCNoLeader)
		if got := len(checks); got != leaderlessChecks {
			t.Fatalf("got %d leader checks before giving up, want %d", got, leaderlessChecks)
		}
	})

	t.Run("not asked", func(t *testing.T) {
		b := newFakeBackend(t, 10) // WaitLeader and HasLeader must not be called
		stream := openWatch(t, b)
		stream.send(t, progressReq())
		checkWatchResp(t, stream.next(t), &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 10}, WatchId: -1})
	})
}

// TestWatchClientCloses checks that the stream goes on sending after the
// client closes its side, as etcd's does.
func TestWatchClientCloses(t *testing.T) {
	b := newFakeBackend(t, 10)
	stream := openWatch(t, b)
	stream.send(t, createReq(&pb.WatchCreateRequest{Key: []byte("a")}))
	checkWatchResp(t, stream.next(t), created(0, 10))
	close(stream.reqs)
	publishPut(b, "a", 11)
	resp := stream.next(t)
	if len(resp.Events) != 1 || resp.Events[0].Kv.ModRevision != 11 {
		t.Fatalf("got response %v, want the put at revision 11", resp)
	}
}
