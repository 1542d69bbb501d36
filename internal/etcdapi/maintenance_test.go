package etcdapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/replica"
)

// TestMemberList checks that members are listed as etcd lists them, with
// the linearizability the client asked for.
func TestMemberList(t *testing.T) {
	for _, linearizable := range []bool{false, true} {
		t.Run(fmt.Sprint("linearizable=", linearizable), func(t *testing.T) {
			b := newFakeBackend(t, 1)
			b.members = func(_ context.Context, l bool) ([]cluster.Member, error) {
				if l != linearizable {
					t.Errorf("got linearizable %v, want %v", l, linearizable)
				}
				return []cluster.Member{
					{ID: 1, Name: "n1", PeerURLs: []string{"http://a:2380"}, ClientURLs: []string{"http://a:2379"}},
					{ID: 2, PeerURLs: []string{"http://b:2380"}, IsLearner: true},
				}, nil
			}
			resp, err := NewCluster(b).MemberList(context.Background(), &pb.MemberListRequest{Linearizable: linearizable})
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			want := &pb.MemberListResponse{
				Header: &pb.ResponseHeader{ClusterId: testClusterID, MemberId: testMemberID, RaftTerm: testRaftTerm},
				Members: []*pb.Member{
					{ID: 1, Name: "n1", PeerURLs: []string{"http://a:2380"}, ClientURLs: []string{"http://a:2379"}},
					{ID: 2, PeerURLs: []string{"http://b:2380"}, IsLearner: true},
				},
			}
			if !proto.Equal(resp, want) {
				t.Fatalf("got %v, want %v", resp, want)
			}
		})
	}
}

type snapshotStream = serverStream[pb.SnapshotRequest, pb.SnapshotResponse]

// snapshotOf returns a backup of n bytes.
func snapshotOf(n int) []byte {
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i * 7)
	}
	return data
}

// TestSnapshot checks that a backup is streamed whole, in chunks, and
// ends with a message that says nothing remains, as etcd's does.
func TestSnapshot(t *testing.T) {
	for _, size := range []int{0, 10, snapshotChunk, 2*snapshotChunk + 123} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			data := snapshotOf(size)
			b := newFakeBackend(t, 1)
			b.snapshot = func(_ context.Context, w io.Writer) (int64, error) {
				n, err := w.Write(data)
				return int64(n), err
			}
			stream := newServerStream[pb.SnapshotRequest, pb.SnapshotResponse](context.Background())
			if err := NewMaintenance(b).Snapshot(&pb.SnapshotRequest{}, stream); err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			close(stream.resps)
			var got []byte
			var last *pb.SnapshotResponse
			for r := range stream.resps {
				if last != nil && last.RemainingBytes == 0 {
					t.Fatalf("got a message after one with no bytes remaining")
				}
				if len(r.Blob) > snapshotChunk {
					t.Fatalf("got a chunk of %d bytes, want at most %d", len(r.Blob), snapshotChunk)
				}
				got = append(got, r.Blob...)
				last = r
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes, want the %d of the backup", len(got), len(data))
			}
			if last == nil || last.RemainingBytes != 0 || len(last.Blob) != 0 {
				t.Fatalf("got last message %v, want an empty one with no bytes remaining", last)
			}
			checkHeader(t, last.Header, 0)
		})
	}
}

// TestSnapshotFails checks that a backup that fails part way ends the
// stream with the etcd error for the failure, and a stream the client
// left ends the backup.
func TestSnapshotFails(t *testing.T) {
	t.Run("backup fails", func(t *testing.T) {
		b := newFakeBackend(t, 1)
		b.snapshot = func(_ context.Context, w io.Writer) (int64, error) {
			n, err := w.Write(snapshotOf(snapshotChunk + 10))
			if err != nil {
				return int64(n), err
			}
			return int64(n), fmt.Errorf("read: %w", replica.ErrStopped)
		}
		stream := newServerStream[pb.SnapshotRequest, pb.SnapshotResponse](context.Background())
		checkErr(t, NewMaintenance(b).Snapshot(&pb.SnapshotRequest{}, stream), rpctypes.ErrGRPCStopped)
		for len(stream.resps) > 0 {
			if r := <-stream.resps; r.RemainingBytes == 0 {
				t.Fatalf("got a message saying the backup is complete, want none")
			}
		}
	})
	t.Run("client gone", func(t *testing.T) {
		b := newFakeBackend(t, 1)
		backupErr := make(chan error, 1)
		b.snapshot = func(_ context.Context, w io.Writer) (int64, error) {
			n, err := w.Write(snapshotOf(4 * snapshotChunk))
			backupErr <- err
			return int64(n), err
		}
		stream := newServerStream[pb.SnapshotRequest, pb.SnapshotResponse](context.Background())
		gone := errors.New("client gone")
		stream.sendErr = gone
		if err := NewMaintenance(b).Snapshot(&pb.SnapshotRequest{}, stream); !errors.Is(err, gone) {
			t.Fatalf("got error %v, want %v", err, gone)
		}
		if err := <-backupErr; !errors.Is(err, gone) {
			t.Fatalf("got backup write error %v, want %v", err, gone)
		}
	})
}
