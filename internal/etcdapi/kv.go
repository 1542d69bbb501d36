package etcdapi

import (
	"context"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/raftcmd"
)

// KV implements etcdserverpb.KVServer.
type KV struct {
	pb.UnimplementedKVServer
	b      Backend
	limits Limits
}

// NewKV returns the KV service.
func NewKV(b Backend, l Limits) *KV { return &KV{b: b, limits: l} }

func (s *KV) header(rev int64) *pb.ResponseHeader {
	h := s.b.Header()
	h.Revision = rev
	return h
}

func (s *KV) checkSize(req proto.Message) error {
	if s.limits.MaxRequestBytes > 0 && proto.Size(req) > s.limits.MaxRequestBytes {
		return rpctypes.ErrGRPCRequestTooLarge
	}
	return nil
}

// Range implements KVServer.
func (s *KV) Range(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	if err := kv.ValidateRange(req); err != nil {
		return nil, err
	}
	resp, err := s.b.Range(ctx, req)
	if err != nil {
		return nil, toGRPC(ctx, err)
	}
	resp.Header = s.header(resp.GetHeader().GetRevision())
	return resp, nil
}

// rangeStreamChunk is the number of KVs per RangeStream message.
const rangeStreamChunk = 1000

// RangeStream implements KVServer: the result of Range, in chunks.
func (s *KV) RangeStream(req *pb.RangeRequest, stream grpc.ServerStreamingServer[pb.RangeStreamResponse]) error {
	resp, err := s.Range(stream.Context(), req)
	if err != nil {
		return err
	}
	kvs := resp.Kvs
	for len(kvs) > rangeStreamChunk {
		chunk := &pb.RangeResponse{Kvs: kvs[:rangeStreamChunk]}
		if err := stream.Send(&pb.RangeStreamResponse{RangeResponse: chunk}); err != nil {
			return err
		}
		kvs = kvs[rangeStreamChunk:]
	}
	resp.Kvs = kvs
	return stream.Send(&pb.RangeStreamResponse{RangeResponse: resp})
}

// Put implements KVServer.
func (s *KV) Put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	if err := kv.ValidatePut(req); err != nil {
		return nil, err
	}
	if err := checkReserved(req); err != nil {
		return nil, err
	}
	if err := s.checkSize(req); err != nil {
		return nil, err
	}
	out, err := s.b.Propose(ctx, raftcmd.KindPut, req)
	if err != nil {
		return nil, toGRPC(ctx, err)
	}
	resp, ok := out.(*pb.PutResponse)
	if !ok {
		return nil, toGRPC(ctx, fmt.Errorf("put returned %T", out))
	}
	resp.Header = s.header(resp.GetHeader().GetRevision())
	return resp, nil
}

// DeleteRange implements KVServer.
func (s *KV) DeleteRange(ctx context.Context, req *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if err := kv.ValidateDeleteRange(req); err != nil {
		return nil, err
	}
	if err := checkReserved(req); err != nil {
		return nil, err
	}
	if err := s.checkSize(req); err != nil {
		return nil, err
	}
	out, err := s.b.Propose(ctx, raftcmd.KindDeleteRange, req)
	if err != nil {
		return nil, toGRPC(ctx, err)
	}
	resp, ok := out.(*pb.DeleteRangeResponse)
	if !ok {
		return nil, toGRPC(ctx, fmt.Errorf("delete range returned %T", out))
	}
	resp.Header = s.header(resp.GetHeader().GetRevision())
	return resp, nil
}

// Txn implements KVServer.
func (s *KV) Txn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := kv.ValidateTxn(req, kv.Limits{MaxTxnOps: s.limits.MaxTxnOps}); err != nil {
		return nil, err
	}
	if err := checkReserved(req); err != nil {
		return nil, err
	}
	if err := s.checkSize(req); err != nil {
		return nil, err
	}
	if kv.IsReadOnlyTxn(req) {
		resp, err := s.b.ReadTxn(ctx, req)
		if err != nil {
			return nil, toGRPC(ctx, err)
		}
		resp.Header = s.header(resp.GetHeader().GetRevision())
		return resp, nil
	}
	out, err := s.b.Propose(ctx, raftcmd.KindTxn, req)
	if err != nil {
		return nil, toGRPC(ctx, err)
	}
	resp, ok := out.(*pb.TxnResponse)
	if !ok {
		return nil, toGRPC(ctx, fmt.Errorf("txn returned %T", out))
	}
	resp.Header = s.header(resp.GetHeader().GetRevision())
	return resp, nil
}

// Compact implements KVServer.
func (s *KV) Compact(ctx context.Context, req *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if err := kv.ValidateCompaction(req); err != nil {
		return nil, err
	}
	out, err := s.b.Propose(ctx, raftcmd.KindCompact, req)
	if err != nil {
		return nil, toGRPC(ctx, err)
	}
	resp, ok := out.(*pb.CompactionResponse)
	if !ok {
		return nil, toGRPC(ctx, fmt.Errorf("compact returned %T", out))
	}
	if req.Physical {
		if err := s.b.WaitCompaction(ctx, req.Revision); err != nil {
			return nil, toGRPC(ctx, err)
		}
	}
	resp.Header = s.header(resp.GetHeader().GetRevision())
	return resp, nil
}
