// Package gateway serves the node's gRPC services as JSON over HTTP, in the
// shape of etcd's gRPC gateway (grpc-gateway), so that curl, scripts and
// clients without a gRPC stack can use Synod as they use etcd:
//
//	curl -X POST http://127.0.0.1:2379/v3/kv/put -d '{"key":"Zm9v","value":"YmFy"}'
//
// Paths are etcd's (routes.go): every method is a POST of its request as
// JSON; the older /v3beta/ and /v3alpha/ prefixes answer as /v3/. Synod's
// own services live under /v3/synod/ (/v3/synod/groups/join, ...).
//
// JSON is protojson with the proto field names (snake_case), 64-bit
// integers as strings, bytes in base64, enums by name and fields at their
// zero value left out, as etcd's gateway marshals; requests accept either
// field name, numbers or strings, and ignore unknown fields. Answers are
// compact. An error is the gRPC status as JSON, {"code":3,"message":"..."},
// with the HTTP status of its code (400, 401, 403, 404, 429, 500, 501, 503,
// ...). A streaming method (Watch, LeaseKeepAlive, Snapshot, Observe,
// groups' Watch) answers with newline-delimited {"result": ...} objects,
// each flushed as it is sent; an error ends the stream with {"error": ...}.
// Its requests are the JSON values of the body, one after another (the body
// can stay open over HTTP/2 or chunked HTTP/1.1 to send more).
//
// The gateway calls the registered service implementations in process,
// through the gRPC server's interceptors, with the context a gRPC call would
// have: metadata (the Authorization header is the auth token, as with
// etcd's gateway; Grpc-Metadata-* headers are metadata), and the peer with
// its TLS state, so metrics, authentication (token or client certificate
// CN), authorization, limits and errors are those of gRPC. A request whose
// protobuf encoding passes the gRPC server's receive limit is refused with
// gRPC's ResourceExhausted error.
package gateway
