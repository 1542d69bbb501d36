package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// marshalOptions give etcd's gateway's JSON: field names as in the .proto
// files (snake_case for most of etcd's, "ID", "TTL", "dbSize" where the
// .proto says so), 64-bit integers as strings, bytes in base64, enums by
// name, and fields at their zero value left out.
var marshalOptions = protojson.MarshalOptions{UseProtoNames: true}

// unmarshalOptions accept either name of a field (proto or lowerCamel),
// numbers or strings for 64-bit integers, and ignore unknown fields, as
// etcd's gateway does.
var unmarshalOptions = protojson.UnmarshalOptions{DiscardUnknown: true}

// marshal encodes m compactly. protojson adds random spaces to its output
// (to keep anyone from depending on its bytes); json.Compact removes them,
// so the gateway's answers are stable.
func marshal(m proto.Message) ([]byte, error) {
	b, err := marshalOptions.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	out.Grow(len(b))
	if err := json.Compact(&out, b); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// errorBody encodes an error as etcd's gateway does: the google.rpc.Status
// of the gRPC error, {"code":3,"message":"..."} (details when it has any).
func errorBody(st *status.Status) []byte {
	b, err := marshal(st.Proto())
	if err != nil {
		return []byte(`{"code":13,"message":"failed to marshal error message"}`)
	}
	return b
}

// writeError answers with err's gRPC status, as etcd's gateway does: the
// HTTP status that corresponds to the gRPC code, and the status as JSON.
func writeError(w http.ResponseWriter, err error) {
	st := statusOf(err)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if st.Code() == codes.Unauthenticated {
		h.Set("WWW-Authenticate", st.Message())
	}
	w.WriteHeader(HTTPStatus(st.Code()))
	_, _ = w.Write(errorBody(st))
}

// HTTPStatus is the HTTP status of an answer with gRPC code c, as in
// google/rpc/code.proto (and etcd's gateway).
func HTTPStatus(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return 499 // client closed request
	case codes.Unknown:
		return http.StatusInternalServerError
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.FailedPrecondition:
		return http.StatusBadRequest // not 412, as code.proto says
	case codes.Aborted:
		return http.StatusConflict
	case codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Internal:
		return http.StatusInternalServerError
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DataLoss:
		return http.StatusInternalServerError
	}
	return http.StatusInternalServerError
}

// decoder reads the JSON values of a request body one by one, refusing a
// value that takes more than limit bytes of the body.
type decoder struct {
	lr  *limitReader
	dec *json.Decoder
}

func newDecoder(body io.Reader, limit int64) *decoder {
	lr := &limitReader{r: body, limit: limit}
	return &decoder{lr: lr, dec: json.NewDecoder(lr)}
}

// next returns the next value's bytes, or io.EOF at the end of the body.
func (d *decoder) next() (json.RawMessage, error) {
	d.lr.n = 0
	var raw json.RawMessage
	err := d.dec.Decode(&raw)
	switch {
	case err == nil:
		return raw, nil
	case errors.Is(err, io.EOF):
		return nil, io.EOF
	case errors.Is(err, errBodyTooLarge):
		return nil, status.Errorf(codes.ResourceExhausted, "gateway: request larger than max (%d bytes of JSON)", d.lr.limit)
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return nil, err
	}
	return nil, status.Error(codes.InvalidArgument, err.Error())
}

var errBodyTooLarge = errors.New("request body too large")

// limitReader fails once more than limit bytes were read since n was last
// reset.
type limitReader struct {
	r     io.Reader
	n     int64
	limit int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n >= l.limit {
		return 0, errBodyTooLarge
	}
	if rest := l.limit - l.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	k, err := l.r.Read(p)
	l.n += int64(k)
	return k, err
}
