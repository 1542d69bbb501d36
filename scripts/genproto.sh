#!/usr/bin/env bash
# Generates the Go code of the .proto files under api/ (committed: CI never
# runs protoc). Needs protoc (apt-get install -y protobuf-compiler) and the
# plugins at the versions the committed code was generated with:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
#
# The protos import etcd's own messages (etcdserverpb.ResponseHeader,
# mvccpb.KeyValue) from the etcd API module in the module cache, so the
# generated code uses the very Go types the rest of Synod uses.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$(go env GOPATH)/bin:$PATH"
for tool in protoc protoc-gen-go protoc-gen-go-grpc; do
  command -v "$tool" >/dev/null || { echo "genproto: $tool not found" >&2; exit 1; }
done

etcd_api="$(go list -m -f '{{.Dir}}' go.etcd.io/etcd/api/v3)"
inc="$(mktemp -d)"
trap 'rm -rf "$inc"' EXIT

# etcd's protos import one another as etcd/api/<pkg>/<file>.proto.
mkdir -p "$inc/etcd"
ln -s "$etcd_api" "$inc/etcd/api"
# rpc.proto also imports the OpenAPI options of grpc-gateway (from the module
# cache) and Google's HTTP annotations, which no Go module ships as .proto: a
# minimal stand-in declaring the option lets protoc parse rpc.proto. Neither
# reaches the generated code.
gateway="$(go list -m -f '{{.Dir}}' github.com/grpc-ecosystem/grpc-gateway/v2)"
ln -s "$gateway/protoc-gen-openapiv2" "$inc/protoc-gen-openapiv2"
mkdir -p "$inc/google/api"
cat >"$inc/google/api/annotations.proto" <<'PROTO'
syntax = "proto3";
package google.api;
option go_package = "google.golang.org/genproto/googleapis/api/annotations";
import "google/protobuf/descriptor.proto";
message HttpRule {
  string get = 2;
  string put = 3;
  string post = 4;
  string delete = 5;
  string patch = 6;
  string body = 7;
  repeated HttpRule additional_bindings = 11;
}
extend google.protobuf.MethodOptions {
  HttpRule http = 72295728;
}
PROTO

for f in v3lockpb/v3lock.proto v3electionpb/v3election.proto synodpb/groups.proto synodpb/limits.proto synodpb/ranges.proto queuepb/queue.proto; do
  protoc -I api -I "$inc" -I /usr/include \
    --go_out=api --go_opt=paths=source_relative \
    --go-grpc_out=api --go-grpc_opt=paths=source_relative \
    "api/$f"
done
# Internal messages (Raft command payloads, calls between nodes).
for f in limit/limitpb/limitpb.proto; do
  protoc -I internal -I api -I "$inc" -I /usr/include \
    --go_out=internal --go_opt=paths=source_relative \
    "internal/$f"
done
# The job queues' internal commands and records (no service).
protoc -I api -I internal/queue \
  --go_out=internal/queue --go_opt=paths=source_relative \
  internal/queue/queuewire/queuewire.proto
echo "genproto: generated $(ls api/*/*.pb.go internal/*/*/*.pb.go | wc -l) files"
