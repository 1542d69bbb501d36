package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// outputFormat is the value of --write-out.
type outputFormat string

const (
	outputSimple outputFormat = "simple"
	outputJSON   outputFormat = "json"
)

func parseOutputFormat(s string) (outputFormat, error) {
	switch f := outputFormat(strings.ToLower(s)); f {
	case outputSimple, outputJSON:
		return f, nil
	}
	return "", usageErrorf("--write-out must be simple or json, got %q", s)
}

// printer writes command results in the chosen format. Simple output
// follows etcdctl's; JSON output is the response message in protobuf's
// JSON mapping (field names as in the .proto files), one line per result.
type printer struct {
	w      io.Writer
	format outputFormat
}

func (p *printer) write(b []byte) error {
	_, err := p.w.Write(b)
	return err
}

// json writes one protobuf message as a line of JSON.
func (p *printer) json(m proto.Message) error {
	b, err := marshalJSON(m)
	if err != nil {
		return err
	}
	return p.write(append(b, '\n'))
}

// marshalJSON encodes m as compact JSON. protojson varies its whitespace on
// purpose; compacting makes the output stable.
func marshalJSON(m proto.Message) ([]byte, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s as json: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("compact json: %w", err)
	}
	return buf.Bytes(), nil
}

func (p *printer) put(r *pb.PutResponse) error {
	if p.format == outputJSON {
		return p.json(r)
	}
	var b bytes.Buffer
	formatPut(&b, r)
	return p.write(b.Bytes())
}

// getStyle is how a get result is printed in simple output.
type getStyle struct {
	valueOnly bool // print values without their keys
	countOnly bool // print the count of keys only
}

func (p *printer) get(r *pb.RangeResponse, style getStyle) error {
	if p.format == outputJSON {
		return p.json(r)
	}
	var b bytes.Buffer
	formatGet(&b, r, style)
	return p.write(b.Bytes())
}

func (p *printer) del(r *pb.DeleteRangeResponse) error {
	if p.format == outputJSON {
		return p.json(r)
	}
	var b bytes.Buffer
	formatDel(&b, r)
	return p.write(b.Bytes())
}

func (p *printer) txn(r *pb.TxnResponse, styles []getStyle) error {
	if p.format == outputJSON {
		return p.json(r)
	}
	var b bytes.Buffer
	formatTxn(&b, r, styles)
	return p.write(b.Bytes())
}

func (p *printer) compact(r *pb.CompactionResponse, rev int64) error {
	if p.format == outputJSON {
		return p.json(r)
	}
	return p.write(fmt.Appendf(nil, "compacted revision %d\n", rev))
}

func (p *printer) members(r *pb.MemberListResponse, statuses []memberStatus) error {
	if p.format == outputJSON {
		return p.json(r)
	}
	var b bytes.Buffer
	formatMembers(&b, statuses)
	return p.write(b.Bytes())
}

func (p *printer) status(rows []endpointStatus) error {
	if p.format == outputJSON {
		b, err := marshalStatusJSON(rows)
		if err != nil {
			return err
		}
		return p.write(append(b, '\n'))
	}
	var b bytes.Buffer
	formatStatus(&b, rows)
	return p.write(b.Bytes())
}

// formatKV writes a key line and a value line, as etcdctl does.
func formatKV(b *bytes.Buffer, kv *mvccpb.KeyValue, valueOnly bool) {
	if !valueOnly {
		b.Write(kv.Key)
		b.WriteByte('\n')
	}
	b.Write(kv.Value)
	b.WriteByte('\n')
}

func formatPut(b *bytes.Buffer, r *pb.PutResponse) {
	b.WriteString("OK\n")
	if r.PrevKv != nil {
		formatKV(b, r.PrevKv, false)
	}
}

func formatGet(b *bytes.Buffer, r *pb.RangeResponse, style getStyle) {
	if style.countOnly {
		b.WriteString(strconv.FormatInt(r.Count, 10))
		b.WriteByte('\n')
		return
	}
	for _, kv := range r.Kvs {
		formatKV(b, kv, style.valueOnly)
	}
}

func formatDel(b *bytes.Buffer, r *pb.DeleteRangeResponse) {
	b.WriteString(strconv.FormatInt(r.Deleted, 10))
	b.WriteByte('\n')
	for _, kv := range r.PrevKvs {
		formatKV(b, kv, false)
	}
}

// formatTxn writes SUCCESS or FAILURE, then each response after a blank
// line. styles[i] is the style of the i-th response if it is a get.
func formatTxn(b *bytes.Buffer, r *pb.TxnResponse, styles []getStyle) {
	if r.Succeeded {
		b.WriteString("SUCCESS\n")
	} else {
		b.WriteString("FAILURE\n")
	}
	for i, resp := range r.Responses {
		b.WriteByte('\n')
		switch v := resp.Response.(type) {
		case *pb.ResponseOp_ResponsePut:
			formatPut(b, v.ResponsePut)
		case *pb.ResponseOp_ResponseRange:
			var style getStyle
			if i < len(styles) {
				style = styles[i]
			}
			formatGet(b, v.ResponseRange, style)
		case *pb.ResponseOp_ResponseDeleteRange:
			formatDel(b, v.ResponseDeleteRange)
		case *pb.ResponseOp_ResponseTxn:
			formatTxn(b, v.ResponseTxn, nil)
		default:
			fmt.Fprintf(b, "unexpected response %T\n", resp.Response)
		}
	}
}

// column is one column of a table of rows of type T.
type column[T any] struct {
	header string
	value  func(T) string
}

// formatTable writes rows as a table with aligned columns.
func formatTable[T any](b *bytes.Buffer, cols []column[T], rows []T) {
	tw := tabwriter.NewWriter(b, 0, 0, 3, ' ', 0)
	line := make([]string, len(cols))
	for i, c := range cols {
		line[i] = c.header
	}
	fmt.Fprintln(tw, strings.Join(line, "\t"))
	for _, r := range rows {
		for i, c := range cols {
			line[i] = c.value(r)
		}
		fmt.Fprintln(tw, strings.Join(line, "\t"))
	}
	_ = tw.Flush() // a bytes.Buffer never fails
}

// memberStatus is a member and, if it answered, its status.
type memberStatus struct {
	M      *pb.Member
	Status endpointStatus // Endpoint empty: the member has no client URL yet
}

// memberColumns are the columns of `synod members`.
var memberColumns = []column[memberStatus]{
	{"ID", func(m memberStatus) string { return fmt.Sprintf("%x", m.M.ID) }},
	{"NAME", func(m memberStatus) string { return orDash(m.M.Name) }},
	{"ROLE", func(m memberStatus) string {
		if m.M.IsLearner {
			return "learner"
		}
		return role(m.Status)
	}},
	{"PEER URLS", func(m memberStatus) string { return orDash(strings.Join(m.M.PeerURLs, ",")) }},
	{"CLIENT URLS", func(m memberStatus) string { return orDash(strings.Join(m.M.ClientURLs, ",")) }},
	{"RAFT INDEX", func(m memberStatus) string { return raftIndex(m.Status) }},
	{"LAG", func(m memberStatus) string { return lag(m.Status) }},
	{"DB SIZE", func(m memberStatus) string { return dbSize(m.Status) }},
	{"HEALTH", func(m memberStatus) string { return health(m.Status) }},
}

func formatMembers(b *bytes.Buffer, ms []memberStatus) {
	formatTable(b, memberColumns, ms)
}

// orDash shows an empty cell as "-" so that columns stay parseable.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// endpointStatus is the answer of one endpoint to a status request.
type endpointStatus struct {
	Endpoint string
	Resp     *pb.StatusResponse // nil if Err is set
	Err      error
	// Lag is how many entries the endpoint's applied index is behind the
	// leader's last index; -1 if unknown.
	Lag int64
}

// fillLag computes every row's lag from the leader's row (or, without one,
// the highest index seen).
func fillLag(rows []endpointStatus) {
	var top uint64
	found := false
	for _, r := range rows {
		if r.Resp != nil && r.Resp.Leader != 0 && r.Resp.Leader == r.Resp.GetHeader().GetMemberId() {
			top, found = r.Resp.RaftIndex, true
		}
	}
	for _, r := range rows {
		if !found && r.Resp != nil {
			top = max(top, r.Resp.RaftIndex)
		}
	}
	for i := range rows {
		rows[i].Lag = -1
		if r := rows[i].Resp; r != nil && top > 0 {
			rows[i].Lag = int64(top) - int64(r.RaftAppliedIndex)
			if rows[i].Lag < 0 {
				rows[i].Lag = 0
			}
		}
	}
}

func role(s endpointStatus) string {
	switch {
	case s.Resp == nil:
		return "-"
	case s.Resp.IsLearner:
		return "learner"
	case s.Resp.Leader != 0 && s.Resp.Leader == s.Resp.GetHeader().GetMemberId():
		return "leader"
	}
	return "follower"
}

func raftIndex(s endpointStatus) string {
	if s.Resp == nil {
		return "-"
	}
	return strconv.FormatUint(s.Resp.RaftIndex, 10)
}

func lag(s endpointStatus) string {
	if s.Resp == nil || s.Lag < 0 {
		return "-"
	}
	return strconv.FormatInt(s.Lag, 10)
}

func dbSize(s endpointStatus) string {
	if s.Resp == nil {
		return "-"
	}
	return formatBytes(s.Resp.DbSize)
}

// health is "healthy" for an endpoint that answers, knows a leader and
// reports no error.
func health(s endpointStatus) string {
	if s.Endpoint == "" && s.Resp == nil && s.Err == nil {
		return "-" // not started: no client URL to ask
	}
	if s.Resp == nil || s.Resp.Leader == 0 || len(s.Resp.Errors) > 0 {
		return "unhealthy"
	}
	return "healthy"
}

// statusColumns are the columns of `synod status`; add a column here to
// show more.
var statusColumns = []column[endpointStatus]{
	{"ENDPOINT", func(s endpointStatus) string { return s.Endpoint }},
	{"ID", statusField(func(r *pb.StatusResponse) string { return fmt.Sprintf("%x", r.GetHeader().GetMemberId()) })},
	{"ROLE", role},
	{"VERSION", statusField(func(r *pb.StatusResponse) string { return r.Version })},
	{"DB SIZE", dbSize},
	{"RAFT TERM", statusField(func(r *pb.StatusResponse) string { return strconv.FormatUint(r.RaftTerm, 10) })},
	{"RAFT INDEX", raftIndex},
	{"APPLIED INDEX", statusField(func(r *pb.StatusResponse) string { return strconv.FormatUint(r.RaftAppliedIndex, 10) })},
	{"LAG", lag},
	{"HEALTH", health},
	{"ERRORS", func(s endpointStatus) string {
		if s.Err != nil {
			return errorMessage(s.Err)
		}
		return orDash(strings.Join(s.Resp.Errors, ", "))
	}},
}

// statusField shows a field of a status response, or "-" for an endpoint
// that did not answer.
func statusField(f func(*pb.StatusResponse) string) func(endpointStatus) string {
	return func(s endpointStatus) string {
		if s.Resp == nil {
			return "-"
		}
		return f(s.Resp)
	}
}

func formatStatus(b *bytes.Buffer, rows []endpointStatus) {
	formatTable(b, statusColumns, rows)
}

// marshalStatusJSON encodes status rows as a JSON array of
// {"endpoint", "status", "error"} objects.
func marshalStatusJSON(rows []endpointStatus) ([]byte, error) {
	type row struct {
		Endpoint string          `json:"endpoint"`
		Status   json.RawMessage `json:"status,omitempty"`
		Error    string          `json:"error,omitempty"`
	}
	out := make([]row, 0, len(rows))
	for _, s := range rows {
		r := row{Endpoint: s.Endpoint}
		if s.Err != nil {
			r.Error = errorMessage(s.Err)
		}
		if s.Resp != nil {
			b, err := marshalJSON(s.Resp)
			if err != nil {
				return nil, err
			}
			r.Status = b
		}
		out = append(out, r)
	}
	return json.Marshal(out)
}

// formatBytes shows a size with SI units, as etcdctl does ("25 kB").
func formatBytes(n int64) string {
	if n < 1000 {
		return fmt.Sprintf("%d B", n)
	}
	const units = "kMGTPE"
	f := float64(n)
	i := -1
	for f >= 999.5 && i < len(units)-1 {
		f /= 1000
		i++
	}
	if f < 9.95 {
		return fmt.Sprintf("%.1f %cB", f, units[i])
	}
	return fmt.Sprintf("%.0f %cB", f, units[i])
}
