package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func kv(k, v string) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: []byte(k), Value: []byte(v), CreateRevision: 2, ModRevision: 3, Version: 1}
}

func TestFormatSimple(t *testing.T) {
	tests := []struct {
		name   string
		format func(*bytes.Buffer)
		want   string
	}{
		{"put", func(b *bytes.Buffer) { formatPut(b, &pb.PutResponse{}) }, "OK\n"},
		{"put prev-kv", func(b *bytes.Buffer) { formatPut(b, &pb.PutResponse{PrevKv: kv("k", "old")}) }, "OK\nk\nold\n"},
		{"get", func(b *bytes.Buffer) {
			formatGet(b, &pb.RangeResponse{Kvs: []*mvccpb.KeyValue{kv("a", "1"), kv("b", "2")}, Count: 2}, getStyle{})
		}, "a\n1\nb\n2\n"},
		{"get nothing", func(b *bytes.Buffer) { formatGet(b, &pb.RangeResponse{}, getStyle{}) }, ""},
		{"get value-only", func(b *bytes.Buffer) {
			formatGet(b, &pb.RangeResponse{Kvs: []*mvccpb.KeyValue{kv("a", "1"), kv("b", "2")}}, getStyle{valueOnly: true})
		}, "1\n2\n"},
		{"get keys-only", func(b *bytes.Buffer) {
			formatGet(b, &pb.RangeResponse{Kvs: []*mvccpb.KeyValue{{Key: []byte("a")}}}, getStyle{})
		}, "a\n\n"},
		{"get count-only", func(b *bytes.Buffer) { formatGet(b, &pb.RangeResponse{Count: 42}, getStyle{countOnly: true}) }, "42\n"},
		{"get binary", func(b *bytes.Buffer) {
			formatGet(b, &pb.RangeResponse{Kvs: []*mvccpb.KeyValue{kv("k\x00", "\xff")}}, getStyle{})
		}, "k\x00\n\xff\n"},
		{"del", func(b *bytes.Buffer) { formatDel(b, &pb.DeleteRangeResponse{Deleted: 2}) }, "2\n"},
		{"del prev-kv", func(b *bytes.Buffer) {
			formatDel(b, &pb.DeleteRangeResponse{Deleted: 1, PrevKvs: []*mvccpb.KeyValue{kv("k", "v")}})
		}, "1\nk\nv\n"},
		{"txn success", func(b *bytes.Buffer) {
			formatTxn(b, &pb.TxnResponse{Succeeded: true, Responses: []*pb.ResponseOp{
				{Response: &pb.ResponseOp_ResponsePut{ResponsePut: &pb.PutResponse{}}},
				{Response: &pb.ResponseOp_ResponseRange{ResponseRange: &pb.RangeResponse{Kvs: []*mvccpb.KeyValue{kv("k", "v")}, Count: 1}}},
				{Response: &pb.ResponseOp_ResponseRange{ResponseRange: &pb.RangeResponse{Count: 7}}},
				{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: &pb.DeleteRangeResponse{Deleted: 1}}},
			}}, []getStyle{{}, {}, {countOnly: true}, {}})
		}, "SUCCESS\n\nOK\n\nk\nv\n\n7\n\n1\n"},
		{"txn failure, no ops", func(b *bytes.Buffer) { formatTxn(b, &pb.TxnResponse{}, nil) }, "FAILURE\n"},
		{"members", func(b *bytes.Buffer) {
			formatMembers(b, []memberStatus{
				{M: &pb.Member{ID: 0x8e9e05c52164694d, Name: "n1", PeerURLs: []string{"http://127.0.0.1:2380"}, ClientURLs: []string{"http://127.0.0.1:2379"}},
					Status: endpointStatus{Endpoint: "http://127.0.0.1:2379", Lag: 0, Resp: &pb.StatusResponse{
						Header: &pb.ResponseHeader{MemberId: 0x8e9e05c52164694d}, Leader: 0x8e9e05c52164694d, RaftIndex: 12, DbSize: 2048}}},
				{M: &pb.Member{ID: 0xabc, PeerURLs: []string{"http://127.0.0.1:22380", "http://10.0.0.1:22380"}, IsLearner: true}},
			})
		}, "" +
			"ID                 NAME   ROLE      PEER URLS                                      CLIENT URLS             RAFT INDEX   LAG   DB SIZE   HEALTH\n" +
			"8e9e05c52164694d   n1     leader    http://127.0.0.1:2380                          http://127.0.0.1:2379   12           0     2.0 kB    healthy\n" +
			"abc                -      learner   http://127.0.0.1:22380,http://10.0.0.1:22380   -                       -            -     -         -\n"},
		{"status", func(b *bytes.Buffer) {
			rows := []endpointStatus{
				{Endpoint: "127.0.0.1:2379", Resp: &pb.StatusResponse{
					Header: &pb.ResponseHeader{MemberId: 0x1f}, Version: "3.6.0", DbSize: 24576,
					Leader: 0x1f, RaftTerm: 2, RaftIndex: 10, RaftAppliedIndex: 9,
				}},
				{Endpoint: "127.0.0.1:22379", Resp: &pb.StatusResponse{
					Header: &pb.ResponseHeader{MemberId: 0x2f}, Version: "3.6.0", DbSize: 999,
					Leader: 0x1f, RaftTerm: 2, RaftIndex: 10, RaftAppliedIndex: 10, IsLearner: true,
					Errors: []string{"etcdserver: no leader", "alarm"},
				}},
				{Endpoint: "127.0.0.1:32379", Err: rpctypes.ErrGRPCNoLeader},
			}
			fillLag(rows)
			formatStatus(b, rows)
		}, "" +
			"ENDPOINT          ID   ROLE      VERSION   DB SIZE   RAFT TERM   RAFT INDEX   APPLIED INDEX   LAG   HEALTH      ERRORS\n" +
			"127.0.0.1:2379    1f   leader    3.6.0     25 kB     2           10           9               1     healthy     -\n" +
			"127.0.0.1:22379   2f   learner   3.6.0     999 B     2           10           10              0     unhealthy   etcdserver: no leader, alarm\n" +
			"127.0.0.1:32379   -    -         -         -         -           -            -               -     unhealthy   etcdserver: no leader\n"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		tt.format(&b)
		if got := b.String(); got != tt.want {
			t.Errorf("%s: got\n%q\nwant\n%q", tt.name, got, tt.want)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {999, "999 B"}, {1000, "1.0 kB"}, {1500, "1.5 kB"}, {24576, "25 kB"},
		{999_499, "999 kB"}, {999_500, "1.0 MB"}, {9_960, "10 kB"}, {1_234_567_890, "1.2 GB"},
	}
	for _, tt := range tests {
		if got := formatBytes(tt.n); got != tt.want {
			t.Errorf("formatBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestPrinterJSON(t *testing.T) {
	var b bytes.Buffer
	p := &printer{w: &b, format: outputJSON}
	resp := &pb.RangeResponse{
		Header: &pb.ResponseHeader{Revision: 5, MemberId: 7},
		Kvs:    []*mvccpb.KeyValue{kv("k", "v")},
		Count:  1,
	}
	if err := p.get(resp, getStyle{countOnly: true}); err != nil {
		t.Fatal(err)
	}
	want := `{"header":{"member_id":"7","revision":"5"},"kvs":[{"key":"aw==","create_revision":"2","mod_revision":"3","version":"1","value":"dg=="}],"count":"1"}` + "\n"
	if got := b.String(); got != want {
		t.Errorf("json get: got\n%s\nwant\n%s", got, want)
	}

	b.Reset()
	if err := p.txn(&pb.TxnResponse{Succeeded: true}, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := b.String(), `{"succeeded":true}`+"\n"; got != want {
		t.Errorf("json txn: got %q, want %q", got, want)
	}

	b.Reset()
	rows := []endpointStatus{
		{Endpoint: "a:1", Resp: &pb.StatusResponse{Version: "3.6.0", RaftTerm: 3}},
		{Endpoint: "b:2", Err: errors.New("boom")},
	}
	if err := p.status(rows); err != nil {
		t.Fatal(err)
	}
	var decoded []map[string]any
	if err := json.Unmarshal(b.Bytes(), &decoded); err != nil {
		t.Fatalf("status json %q: %v", b.String(), err)
	}
	if len(decoded) != 2 || decoded[0]["endpoint"] != "a:1" || decoded[1]["error"] != "boom" {
		t.Errorf("status json = %s", b.String())
	}
	if st, _ := decoded[0]["status"].(map[string]any); st["raftTerm"] != "3" || st["version"] != "3.6.0" {
		t.Errorf("status json row 0 = %v, want raftTerm 3 and version 3.6.0", decoded[0])
	}
	if strings.Count(b.String(), "\n") != 1 {
		t.Errorf("status json should be one line, got %q", b.String())
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{rpctypes.ErrEmptyKey, "etcdserver: key is not provided"},
		{rpctypes.Error(rpctypes.ErrGRPCCompacted), "etcdserver: mvcc: required revision has been compacted"},
		{rpctypes.ErrGRPCNoLeader, "etcdserver: no leader"},
		{status.Error(codes.Unavailable, "connection refused"), "endpoint unavailable: connection refused"},
		{status.Error(codes.Internal, "boom"), "boom"},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), "context deadline exceeded (the command did not complete within --command-timeout)"},
		{errors.New("plain"), "plain"},
	}
	for _, tt := range tests {
		if got := errorMessage(tt.err); got != tt.want {
			t.Errorf("errorMessage(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
