package etcdapi

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/watch"
)

// The identity every fake response header carries.
const (
	testClusterID = 0xc1
	testMemberID  = 0x3e
	testRaftTerm  = 4
)

// fakeBackend is a Backend whose behaviour each test sets through its
// function fields. A method a test reaches without setting its field fails
// the test (the services must not have called it); the methods no test
// reaches are left to the embedded nil interface, and panic.
type fakeBackend struct {
	Backend

	t   *testing.T
	hub *watch.Hub

	propose        func(ctx context.Context, kind raftcmd.Kind, req proto.Message) (any, error)
	rangeFn        func(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error)
	readTxn        func(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error)
	waitCompaction func(ctx context.Context, rev int64) error
	members        func(ctx context.Context, linearizable bool) ([]cluster.Member, error)
	waitLeader     func(ctx context.Context) error
	leaseGrant     func(ctx context.Context, req *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error)
	leaseRenew     func(ctx context.Context, id int64) (int64, error)
	snapshot       func(ctx context.Context, w io.Writer) (int64, error)
	hasLeader      func() bool
	electionTick   time.Duration
}

// newFakeBackend returns a fake whose hub is at revision rev.
func newFakeBackend(t *testing.T, rev int64) *fakeBackend {
	return &fakeBackend{t: t, hub: watch.NewHub(watch.Config{}, kv.Meta{Revision: rev})}
}

var errUnexpectedCall = errors.New("unexpected backend call")

func (f *fakeBackend) unexpected(what string) error {
	f.t.Errorf("backend %s was called, want no call", what)
	return errUnexpectedCall
}

func (f *fakeBackend) Header() *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: testClusterID, MemberId: testMemberID, RaftTerm: testRaftTerm}
}

func (f *fakeBackend) Hub() *watch.Hub { return f.hub }

func (f *fakeBackend) Propose(ctx context.Context, kind raftcmd.Kind, req proto.Message) (any, error) {
	if f.propose == nil {
		return nil, f.unexpected("Propose")
	}
	return f.propose(ctx, kind, req)
}

func (f *fakeBackend) Range(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	if f.rangeFn == nil {
		return nil, f.unexpected("Range")
	}
	return f.rangeFn(ctx, req)
}

func (f *fakeBackend) ReadTxn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	if f.readTxn == nil {
		return nil, f.unexpected("ReadTxn")
	}
	return f.readTxn(ctx, req)
}

func (f *fakeBackend) WaitCompaction(ctx context.Context, rev int64) error {
	if f.waitCompaction == nil {
		return f.unexpected("WaitCompaction")
	}
	return f.waitCompaction(ctx, rev)
}

func (f *fakeBackend) Members(ctx context.Context, linearizable bool) ([]cluster.Member, error) {
	if f.members == nil {
		return nil, f.unexpected("Members")
	}
	return f.members(ctx, linearizable)
}

func (f *fakeBackend) WaitLeader(ctx context.Context) error {
	if f.waitLeader == nil {
		return f.unexpected("WaitLeader")
	}
	return f.waitLeader(ctx)
}

func (f *fakeBackend) HasLeader() bool {
	if f.hasLeader == nil {
		f.unexpected("HasLeader")
		return false
	}
	return f.hasLeader()
}

func (f *fakeBackend) ElectionTimeout() time.Duration {
	if f.electionTick == 0 {
		f.unexpected("ElectionTimeout")
		return time.Hour
	}
	return f.electionTick
}

func (f *fakeBackend) LeaseGrant(ctx context.Context, req *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	if f.leaseGrant == nil {
		return nil, f.unexpected("LeaseGrant")
	}
	return f.leaseGrant(ctx, req)
}

func (f *fakeBackend) LeaseRenew(ctx context.Context, id int64) (int64, error) {
	if f.leaseRenew == nil {
		return 0, f.unexpected("LeaseRenew")
	}
	return f.leaseRenew(ctx, id)
}

func (f *fakeBackend) Snapshot(ctx context.Context, w io.Writer) (int64, error) {
	if f.snapshot == nil {
		return 0, f.unexpected("Snapshot")
	}
	return f.snapshot(ctx, w)
}

func (f *fakeBackend) SnapshotSizeEstimate() int64 { return 0 }

// failingBackend fails every call with err.
type failingBackend struct {
	Backend
	err error
}

func (f failingBackend) Header() *pb.ResponseHeader { return &pb.ResponseHeader{} }
func (f failingBackend) Hub() *watch.Hub {
	return watch.NewHub(watch.Config{}, kv.Meta{Revision: 1})
}
func (f failingBackend) Propose(context.Context, raftcmd.Kind, proto.Message) (any, error) {
	return nil, f.err
}
func (f failingBackend) Range(context.Context, *pb.RangeRequest) (*pb.RangeResponse, error) {
	return nil, f.err
}
func (f failingBackend) ReadTxn(context.Context, *pb.TxnRequest) (*pb.TxnResponse, error) {
	return nil, f.err
}
func (f failingBackend) Members(context.Context, bool) ([]cluster.Member, error) { return nil, f.err }
func (f failingBackend) Status(context.Context) (*pb.StatusResponse, error)      { return nil, f.err }
func (f failingBackend) WaitLeader(context.Context) error                        { return f.err }
func (f failingBackend) LeaseGrant(context.Context, *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	return nil, f.err
}
func (f failingBackend) LeaseRevoke(context.Context, *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	return nil, f.err
}
func (f failingBackend) LeaseRenew(context.Context, int64) (int64, error) { return 0, f.err }
func (f failingBackend) LeaseTimeToLive(context.Context, *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	return nil, f.err
}
func (f failingBackend) LeaseLeases(context.Context) (*pb.LeaseLeasesResponse, error) {
	return nil, f.err
}
func (f failingBackend) MemberAdd(context.Context, *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	return nil, f.err
}
func (f failingBackend) MemberRemove(context.Context, *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	return nil, f.err
}
func (f failingBackend) MemberUpdate(context.Context, *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	return nil, f.err
}
func (f failingBackend) MemberPromote(context.Context, *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	return nil, f.err
}
func (f failingBackend) MoveLeader(context.Context, *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	return nil, f.err
}
func (f failingBackend) Hash(context.Context) (*pb.HashResponse, error)            { return nil, f.err }
func (f failingBackend) HashKV(context.Context, int64) (*pb.HashKVResponse, error) { return nil, f.err }
func (f failingBackend) Alarm(context.Context, *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	return nil, f.err
}
func (f failingBackend) Defragment(context.Context) (*pb.DefragmentResponse, error) {
	return nil, f.err
}
func (f failingBackend) Snapshot(context.Context, io.Writer) (int64, error) { return 0, f.err }
func (f failingBackend) SnapshotSizeEstimate() int64                        { return 0 }

// checkErr fails the test unless err is want as an etcd client sees it:
// the same gRPC code and the same etcd error description.
func checkErr(t *testing.T, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("got error %v, want none", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("got no error, want %v", want)
	}
	if got, w := status.Code(err), status.Code(want); got != w {
		t.Fatalf("got code %v (%v), want %v (%v)", got, err, w, want)
	}
	if got, w := rpctypes.ErrorDesc(err), rpctypes.ErrorDesc(want); got != w {
		t.Fatalf("got error %q, want %q", got, w)
	}
}

// checkHeader fails the test unless h is the fake's header at revision rev.
func checkHeader(t *testing.T, h *pb.ResponseHeader, rev int64) {
	t.Helper()
	want := &pb.ResponseHeader{ClusterId: testClusterID, MemberId: testMemberID, RaftTerm: testRaftTerm, Revision: rev}
	if !proto.Equal(h, want) {
		t.Fatalf("got header %v, want %v", h, want)
	}
}

// waitTimeout bounds every wait for an asynchronous answer.
const waitTimeout = 10 * time.Second

// serverStream is a gRPC server stream for calling a streaming handler
// directly: requests come from reqs (closing it is the client closing its
// side), responses go to resps. Methods of grpc.ServerStream the handlers
// do not use are left to the embedded nil interface.
type serverStream[Req, Resp any] struct {
	grpc.ServerStream
	ctx   context.Context
	reqs  chan *Req
	resps chan *Resp

	mu      sync.Mutex
	sendErr error // returned by Send when set
}

func newServerStream[Req, Resp any](ctx context.Context) *serverStream[Req, Resp] {
	return &serverStream[Req, Resp]{ctx: ctx, reqs: make(chan *Req), resps: make(chan *Resp, 4096)}
}

func (s *serverStream[Req, Resp]) Context() context.Context { return s.ctx }

func (s *serverStream[Req, Resp]) Recv() (*Req, error) {
	select {
	case r, ok := <-s.reqs:
		if !ok {
			return nil, io.EOF
		}
		return r, nil
	case <-s.ctx.Done():
		return nil, status.FromContextError(s.ctx.Err()).Err()
	}
}

func (s *serverStream[Req, Resp]) Send(r *Resp) error {
	s.mu.Lock()
	err := s.sendErr
	s.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case s.resps <- r:
		return nil
	default:
		panic("test stream: too many responses not read")
	}
}

// send hands the handler a request, failing the test if it is not read in
// time.
func (s *serverStream[Req, Resp]) send(t *testing.T, r *Req) {
	t.Helper()
	select {
	case s.reqs <- r:
	case <-time.After(waitTimeout):
		t.Fatalf("request %v not read after %v", r, waitTimeout)
	}
}

// next returns the next response, failing the test if none comes in time.
func (s *serverStream[Req, Resp]) next(t *testing.T) *Resp {
	t.Helper()
	select {
	case r := <-s.resps:
		return r
	case <-time.After(waitTimeout):
		t.Fatalf("no response after %v", waitTimeout)
		return nil
	}
}

// serve runs a streaming handler in a goroutine; the returned channel gets
// its result.
func serve(handler func() error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- handler() }()
	return done
}

// result waits for a handler's result.
func result(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(waitTimeout):
		t.Fatalf("handler still running after %v", waitTimeout)
		return nil
	}
}
