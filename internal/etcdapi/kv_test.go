package etcdapi

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/replica"
)

func putOp(key string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte("v")}}}
}

func rangeOp(key string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(key)}}}
}

func deleteOp(key, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(key), RangeEnd: []byte(end)}}}
}

func txnOp(t *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: t}}
}

func ops(op *pb.RequestOp, n int) []*pb.RequestOp {
	out := make([]*pb.RequestOp, n)
	for i := range out {
		out[i] = proto.Clone(op).(*pb.RequestOp)
		if p := out[i].GetRequestPut(); p != nil {
			p.Key = fmt.Appendf(nil, "%s%d", p.Key, i)
		}
	}
	return out
}

func reserved(suffix string) string { return string(keys.ReservedPrefix) + suffix }

// TestKVRefusesInvalidRequests checks that every request etcd refuses is
// refused with etcd's error, before it reaches the node.
func TestKVRefusesInvalidRequests(t *testing.T) {
	limits := Limits{MaxRequestBytes: 256, MaxTxnOps: 3}
	big := bytes.Repeat([]byte("x"), 300)
	tests := []struct {
		name string
		call func(ctx context.Context, s *KV) error
		want error
	}{
		{"range empty key", func(ctx context.Context, s *KV) error {
			_, err := s.Range(ctx, &pb.RangeRequest{RangeEnd: []byte("z")})
			return err
		}, rpctypes.ErrGRPCEmptyKey},
		{"range bad sort order", func(ctx context.Context, s *KV) error {
			_, err := s.Range(ctx, &pb.RangeRequest{Key: []byte("a"), SortOrder: 7})
			return err
		}, rpctypes.ErrGRPCInvalidSortOption},
		{"range bad sort target", func(ctx context.Context, s *KV) error {
			_, err := s.Range(ctx, &pb.RangeRequest{Key: []byte("a"), SortTarget: 9})
			return err
		}, rpctypes.ErrGRPCInvalidSortOption},
		{"put empty key", func(ctx context.Context, s *KV) error {
			_, err := s.Put(ctx, &pb.PutRequest{Value: []byte("v")})
			return err
		}, rpctypes.ErrGRPCEmptyKey},
		{"put ignore_value with a value", func(ctx context.Context, s *KV) error {
			_, err := s.Put(ctx, &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreValue: true})
			return err
		}, rpctypes.ErrGRPCValueProvided},
		{"put ignore_lease with a lease", func(ctx context.Context, s *KV) error {
			_, err := s.Put(ctx, &pb.PutRequest{Key: []byte("a"), Lease: 5, IgnoreLease: true})
			return err
		}, rpctypes.ErrGRPCLeaseProvided},
		{"put reserved key", func(ctx context.Context, s *KV) error {
			_, err := s.Put(ctx, &pb.PutRequest{Key: []byte(reserved("q/x")), Value: []byte("v")})
			return err
		}, ErrReservedKey},
		{"put over the size limit", func(ctx context.Context, s *KV) error {
			_, err := s.Put(ctx, &pb.PutRequest{Key: []byte("a"), Value: big})
			return err
		}, rpctypes.ErrGRPCRequestTooLarge},
		{"delete empty key", func(ctx context.Context, s *KV) error {
			_, err := s.DeleteRange(ctx, &pb.DeleteRangeRequest{RangeEnd: []byte("z")})
			return err
		}, rpctypes.ErrGRPCEmptyKey},
		{"delete reserved key", func(ctx context.Context, s *KV) error {
			_, err := s.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte(reserved("x"))})
			return err
		}, ErrReservedKey},
		{"delete every key", func(ctx context.Context, s *KV) error {
			_, err := s.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
			return err
		}, ErrReservedKey},
		{"delete range across the reserved keys", func(ctx context.Context, s *KV) error {
			_, err := s.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte{0}, RangeEnd: []byte{2}})
			return err
		}, ErrReservedKey},
		{"delete over the size limit", func(ctx context.Context, s *KV) error {
			_, err := s.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: big})
			return err
		}, rpctypes.ErrGRPCRequestTooLarge},
		{"txn compare with empty key", func(ctx context.Context, s *KV) error {
			_, err := s.Txn(ctx, &pb.TxnRequest{Compare: []*pb.Compare{{Target: pb.Compare_VERSION}}, Success: []*pb.RequestOp{putOp("a")}})
			return err
		}, rpctypes.ErrGRPCEmptyKey},
		{"txn too many compares", func(ctx context.Context, s *KV) error {
			cmp := &pb.Compare{Key: []byte("a"), Target: pb.Compare_VERSION}
			_, err := s.Txn(ctx, &pb.TxnRequest{Compare: []*pb.Compare{cmp, cmp, cmp, cmp}})
			return err
		}, rpctypes.ErrGRPCTooManyOps},
		{"txn too many success ops", func(ctx context.Context, s *KV) error {
			_, err := s.Txn(ctx, &pb.TxnRequest{Success: ops(putOp("k"), 4)})
			return err
		}, rpctypes.ErrGRPCTooManyOps},
		{"txn too many failure ops", func(ctx context.Context, s *KV) error {
			_, err := s.Txn(ctx, &pb.TxnRequest{Failure: ops(rangeOp("k"), 4)})
			return err
		}, rpctypes.ErrGRPCTooManyOps},
		{"nested txn over what its parent leaves", func(ctx context.Context, s *KV) error {
			// The parent uses 2 of the 3 ops: the nested txn may have 1.
			nested := &pb.TxnRequest{Success: ops(putOp("n"), 2)}
			_, err := s.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{putOp("a"), txnOp(nested)}})
			return err
		}, rpctypes.ErrGRPCTooManyOps},
		{"txn op with no request", func(ctx context.Context, s *KV) error {
			_, err := s.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{}}})
			return err
		}, rpctypes.ErrGRPCKeyNotFound},
		{"txn range with empty key", func(ctx context.Context, s *KV) error {
			_, err := s.Txn(ctx, &pb.TxnRequest{Failure: []*pb.RequestOp{rangeOp("")}})
			return err
		}, rpctypes.ErrGRPCEmptyKey},
		{"txn put with ignore_value and a value", func(ctx context.Context, s *KV) error {
			op := &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreValue: true}}}
			_, err := s.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{op}})
			return err
		}, rpctypes.ErrGRPCValueProvided},
		{"txn puts a key twice", func(ctx context.Context, s *KV) error {
			_, err := s.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{putOp("a"), putOp("a")}})
			return err
		}, rpctypes.ErrGRPCDuplicateKey},
		{"txn puts a key it deletes", func(ctx context.Context, s *KV) error {
			_, err := s.Txn(ctx, &pb.TxnRequest{Failure: []*pb.RequestOp{deleteOp("a", "c"), putOp("b")}})
			return err
		}, rpctypes.ErrGRPCDuplicateKey},
		{"txn puts a key a nested txn puts", func(ctx context.Context, s *KV) error {
			nested := &pb.TxnRequest{Failure: []*pb.RequestOp{putOp("a")}}
			_, err := s.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{putOp("a"), txnOp(nested)}})
			return err
		}, rpctypes.ErrGRPCDuplicateKey},
		{"txn writes a reserved key in its failure branch", func(ctx context.Context, s *KV) error {
			_, err := s.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{putOp("a")}, Failure: []*pb.RequestOp{putOp(reserved("x"))}})
			return err
		}, ErrReservedKey},
		{"nested txn deletes the reserved keys", func(ctx context.Context, s *KV) error {
			nested := &pb.TxnRequest{Success: []*pb.RequestOp{deleteOp(reserved(""), string(keys.ReservedEnd))}}
			_, err := s.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{txnOp(nested)}})
			return err
		}, ErrReservedKey},
		{"txn over the size limit", func(ctx context.Context, s *KV) error {
			_, err := s.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{rangeOp(string(big))}})
			return err
		}, rpctypes.ErrGRPCRequestTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewKV(newFakeBackend(t, 1), limits)
			checkErr(t, tt.call(context.Background(), s), tt.want)
		})
	}
}

// TestReservedKeyError checks the error that refuses writes to the
// reserved keys: a client must see an invalid argument, not a retryable
// error.
func TestReservedKeyError(t *testing.T) {
	if got := rpctypes.ErrorDesc(ErrReservedKey); !strings.Contains(got, "reserved") {
		t.Fatalf("got %q, want a description that says the keys are reserved", got)
	}
	if got, want := status.Code(ErrReservedKey), codes.InvalidArgument; got != want {
		t.Fatalf("got code %v, want %v", got, want)
	}
}

// TestKVAcceptsValidRequests checks requests etcd accepts that are close
// to refused ones: each must reach the node, unchanged.
func TestKVAcceptsValidRequests(t *testing.T) {
	limits := Limits{MaxRequestBytes: 256, MaxTxnOps: 3}
	tests := []struct {
		name     string
		call     func(ctx context.Context, s *KV) error
		wantKind raftcmd.Kind // 0: a read
	}{
		{"put with ignore_value and no value", func(ctx context.Context, s *KV) error {
			_, err := s.Put(ctx, &pb.PutRequest{Key: []byte("a"), IgnoreValue: true})
			return err
		}, raftcmd.KindPut},
		{"put with ignore_lease and no lease", func(ctx context.Context, s *KV) error {
			_, err := s.Put(ctx, &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreLease: true})
			return err
		}, raftcmd.KindPut},
		{"put next to the reserved keys", func(ctx context.Context, s *KV) error {
			_, err := s.Put(ctx, &pb.PutRequest{Key: []byte("\x01synod"), Value: []byte("v")})
			return err
		}, raftcmd.KindPut},
		{"read of the reserved keys", func(ctx context.Context, s *KV) error {
			_, err := s.Range(ctx, &pb.RangeRequest{Key: []byte(reserved("")), RangeEnd: keys.ReservedEnd})
			return err
		}, 0},
		{"read of every key", func(ctx context.Context, s *KV) error {
			_, err := s.Range(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
			return err
		}, 0},
		{"delete of a prefix after the reserved keys", func(ctx context.Context, s *KV) error {
			_, err := s.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte{0}})
			return err
		}, raftcmd.KindDeleteRange},
		{"txn at the op limit", func(ctx context.Context, s *KV) error {
			_, err := s.Txn(ctx, &pb.TxnRequest{Success: ops(putOp("k"), 3), Failure: ops(putOp("k"), 3)})
			return err
		}, raftcmd.KindTxn},
		{"txn puts one key in both branches", func(ctx context.Context, s *KV) error {
			_, err := s.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{putOp("a")}, Failure: []*pb.RequestOp{putOp("a")}})
			return err
		}, raftcmd.KindTxn},
		{"txn deletes overlapping ranges", func(ctx context.Context, s *KV) error {
			_, err := s.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{deleteOp("a", "c"), deleteOp("b", "d")}})
			return err
		}, raftcmd.KindTxn},
		{"txn reads a reserved key", func(ctx context.Context, s *KV) error {
			_, err := s.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{rangeOp(reserved("x"))}})
			return err
		}, 0},
		{"compaction", func(ctx context.Context, s *KV) error {
			_, err := s.Compact(ctx, &pb.CompactionRequest{Revision: 3})
			return err
		}, raftcmd.KindCompact},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend(t, 1)
			var gotKind raftcmd.Kind
			b.propose = func(_ context.Context, kind raftcmd.Kind, req proto.Message) (any, error) {
				gotKind = kind
				switch kind {
				case raftcmd.KindPut:
					return &pb.PutResponse{}, nil
				case raftcmd.KindDeleteRange:
					return &pb.DeleteRangeResponse{}, nil
				case raftcmd.KindTxn:
					return &pb.TxnResponse{}, nil
				case raftcmd.KindCompact:
					return &pb.CompactionResponse{}, nil
				}
				return nil, fmt.Errorf("unexpected kind %v", kind)
			}
			read := false
			b.rangeFn = func(context.Context, *pb.RangeRequest) (*pb.RangeResponse, error) {
				read = true
				return &pb.RangeResponse{}, nil
			}
			b.readTxn = func(context.Context, *pb.TxnRequest) (*pb.TxnResponse, error) {
				read = true
				return &pb.TxnResponse{}, nil
			}
			if err := tt.call(context.Background(), NewKV(b, limits)); err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if gotKind != tt.wantKind {
				t.Fatalf("got proposal of kind %v, want %v", gotKind, tt.wantKind)
			}
			if wantRead := tt.wantKind == 0; read != wantRead {
				t.Fatalf("got read %v, want %v", read, wantRead)
			}
		})
	}
}

// TestKVResponseHeader checks that responses carry the node's identity and
// the revision the node answered with.
func TestKVResponseHeader(t *testing.T) {
	b := newFakeBackend(t, 1)
	b.rangeFn = func(_ context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error) {
		return &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: 42}, Kvs: []*mvccpb.KeyValue{{Key: req.Key}}, Count: 1}, nil
	}
	b.propose = func(context.Context, raftcmd.Kind, proto.Message) (any, error) {
		return &pb.PutResponse{Header: &pb.ResponseHeader{Revision: 43}}, nil
	}
	s := NewKV(b, Limits{})
	ctx := context.Background()
	rr, err := s.Range(ctx, &pb.RangeRequest{Key: []byte("a")})
	if err != nil {
		t.Fatalf("range: got error %v, want none", err)
	}
	checkHeader(t, rr.Header, 42)
	if len(rr.Kvs) != 1 || string(rr.Kvs[0].Key) != "a" {
		t.Fatalf("got kvs %v, want the key a", rr.Kvs)
	}
	pr, err := s.Put(ctx, &pb.PutRequest{Key: []byte("a")})
	if err != nil {
		t.Fatalf("put: got error %v, want none", err)
	}
	checkHeader(t, pr.Header, 43)
}

// TestKVTxnRouting checks that a txn that only reads, nested txns included,
// is served as a read, and any other is proposed.
func TestKVTxnRouting(t *testing.T) {
	readOnly := &pb.TxnRequest{
		Compare: []*pb.Compare{{Key: []byte("a"), Target: pb.Compare_VALUE, TargetUnion: &pb.Compare_Value{Value: []byte("v")}}},
		Success: []*pb.RequestOp{rangeOp("a"), txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{rangeOp("b")}})},
		Failure: []*pb.RequestOp{rangeOp("c")},
	}
	writesNested := &pb.TxnRequest{
		Success: []*pb.RequestOp{rangeOp("a")},
		Failure: []*pb.RequestOp{txnOp(&pb.TxnRequest{Failure: []*pb.RequestOp{deleteOp("b", "")}})},
	}
	tests := []struct {
		name      string
		req       *pb.TxnRequest
		wantWrite bool
	}{
		{"read only", readOnly, false},
		{"nested delete", writesNested, true},
		{"put", &pb.TxnRequest{Success: []*pb.RequestOp{putOp("a")}}, true},
		{"empty", &pb.TxnRequest{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend(t, 1)
			wrote := false
			b.propose = func(_ context.Context, kind raftcmd.Kind, req proto.Message) (any, error) {
				wrote = true
				if kind != raftcmd.KindTxn {
					t.Errorf("got kind %v, want %v", kind, raftcmd.KindTxn)
				}
				if !proto.Equal(req, tt.req) {
					t.Errorf("got proposal %v, want %v", req, tt.req)
				}
				return &pb.TxnResponse{Header: &pb.ResponseHeader{Revision: 9}, Succeeded: true}, nil
			}
			b.readTxn = func(_ context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
				return &pb.TxnResponse{Header: &pb.ResponseHeader{Revision: 9}, Succeeded: true}, nil
			}
			resp, err := NewKV(b, Limits{}).Txn(context.Background(), tt.req)
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if wrote != tt.wantWrite {
				t.Fatalf("got proposed %v, want %v", wrote, tt.wantWrite)
			}
			if !resp.Succeeded {
				t.Fatalf("got succeeded false, want the node's answer (true)")
			}
			checkHeader(t, resp.Header, 9)
		})
	}
}

// TestKVUnexpectedResponseType checks that a node answering a command with
// the wrong response is an internal error, not a crash.
func TestKVUnexpectedResponseType(t *testing.T) {
	b := newFakeBackend(t, 1)
	b.propose = func(context.Context, raftcmd.Kind, proto.Message) (any, error) {
		return &pb.RangeResponse{}, nil
	}
	s := NewKV(b, Limits{})
	ctx := context.Background()
	calls := map[string]func() error{
		"put": func() error { _, err := s.Put(ctx, &pb.PutRequest{Key: []byte("a")}); return err },
		"delete": func() error {
			_, err := s.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("a")})
			return err
		},
		"txn": func() error {
			_, err := s.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{putOp("a")}})
			return err
		},
		"compact": func() error { _, err := s.Compact(ctx, &pb.CompactionRequest{Revision: 2}); return err },
	}
	for name, call := range calls {
		if got := status.Code(call()); got != codes.Internal {
			t.Errorf("%s: got code %v, want %v", name, got, codes.Internal)
		}
	}
}

// TestKVCompactPhysical checks that a physical compaction waits for the
// versions to be removed, and fails as that wait does.
func TestKVCompactPhysical(t *testing.T) {
	for _, tt := range []struct {
		name     string
		physical bool
		waitErr  error
		want     error
	}{
		{"logical", false, nil, nil},
		{"physical", true, nil, nil},
		{"physical, node stops", true, fmt.Errorf("wait: %w", replica.ErrStopped), rpctypes.ErrGRPCStopped},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend(t, 1)
			b.propose = func(context.Context, raftcmd.Kind, proto.Message) (any, error) {
				return &pb.CompactionResponse{Header: &pb.ResponseHeader{Revision: 12}}, nil
			}
			var waited []int64
			if tt.physical {
				b.waitCompaction = func(_ context.Context, rev int64) error {
					waited = append(waited, rev)
					return tt.waitErr
				}
			}
			resp, err := NewKV(b, Limits{}).Compact(context.Background(), &pb.CompactionRequest{Revision: 7, Physical: tt.physical})
			checkErr(t, err, tt.want)
			if tt.physical && (len(waited) != 1 || waited[0] != 7) {
				t.Fatalf("got waits for %v, want one for revision 7", waited)
			}
			if err == nil {
				checkHeader(t, resp.Header, 12)
			}
		})
	}
}

// TestKVRangeStream checks that a large range is streamed in chunks, the
// header and count in the last one.
func TestKVRangeStream(t *testing.T) {
	const n = 2*rangeStreamChunk + 7
	b := newFakeBackend(t, 1)
	b.rangeFn = func(context.Context, *pb.RangeRequest) (*pb.RangeResponse, error) {
		resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: 5}, Count: n}
		for i := range n {
			resp.Kvs = append(resp.Kvs, &mvccpb.KeyValue{Key: fmt.Appendf(nil, "k%05d", i)})
		}
		return resp, nil
	}
	s := NewKV(b, Limits{})
	stream := newServerStream[pb.RangeRequest, pb.RangeStreamResponse](context.Background())
	if err := s.RangeStream(&pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")}, stream); err != nil {
		t.Fatalf("got error %v, want none", err)
	}
	close(stream.resps)
	var sizes []int
	next := 0
	var last *pb.RangeResponse
	for r := range stream.resps {
		last = r.RangeResponse
		sizes = append(sizes, len(last.Kvs))
		for _, kv := range last.Kvs {
			if want := fmt.Sprintf("k%05d", next); string(kv.Key) != want {
				t.Fatalf("got key %q, want %q", kv.Key, want)
			}
			next++
		}
	}
	if want := []int{rangeStreamChunk, rangeStreamChunk, 7}; fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Fatalf("got chunks of %v keys, want %v", sizes, want)
	}
	checkHeader(t, last.Header, 5)
	if last.Count != n {
		t.Fatalf("got count %d, want %d", last.Count, n)
	}

	// An invalid request is refused before anything is sent.
	stream = newServerStream[pb.RangeRequest, pb.RangeStreamResponse](context.Background())
	checkErr(t, s.RangeStream(&pb.RangeRequest{}, stream), rpctypes.ErrGRPCEmptyKey)
	if len(stream.resps) != 0 {
		t.Fatalf("got %d responses to an invalid request, want 0", len(stream.resps))
	}
}
