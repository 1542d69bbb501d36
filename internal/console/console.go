package console

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/gateway"
	"github.com/synod-io/synod/internal/metrics"
)

// Prefix is the URL path under which the console is served.
const Prefix = "/ui/"

//go:embed ui
var files embed.FS

// Backend is what the console needs of its node.
type Backend interface {
	// Identify returns the auth state and the user that the credentials of
	// ctx (from gateway.CallContext) identify, as every gRPC call is
	// identified (auth.Authorizer.Identify).
	Identify(ctx context.Context) (*auth.State, string, error)
	// Overview gathers the cluster's state as this node sees it, with the
	// status of every member it could reach.
	Overview(ctx context.Context) (*Overview, error)
	// Samples returns the node's KV traffic over the last minutes, oldest
	// first, and the interval between two samples.
	Samples() ([]metrics.Sample, time.Duration)
	// Queues returns the names of the job queues, sorted (the queue API
	// has no call that lists them).
	Queues(ctx context.Context) ([]string, error)
}

// Overview is the cluster's state as one node sees it.
type Overview struct {
	ClusterID uint64
	// MemberID is the node that answers.
	MemberID        uint64
	Leader          uint64
	RaftTerm        uint64
	Revision        int64
	CompactRevision int64
	// SynodVersion is the answering node's version.
	SynodVersion string
	Members      []Member
	Alarms       []*pb.AlarmMember
	Ranges       []Range
}

// Member is one member of the cluster and, if it answered, its status.
type Member struct {
	ID         uint64
	Name       string
	PeerURLs   []string
	ClientURLs []string
	Learner    bool
	// Status is the member's etcd Status; nil when it did not answer.
	Status *pb.StatusResponse
	// SynodVersion is the member's version, when it told it.
	SynodVersion string
	// Err is why the member did not answer.
	Err error
}

// Range is one range of the keyspace and its replicas.
type Range struct {
	ID uint64
	// System is set for the system range, which holds the cluster's own
	// state (members, auth), no user keys.
	System bool
	// Start and End bound the range's keys, [Start, End); nil End: to the
	// end of the keyspace.
	Start, End []byte
	Leader     uint64
	Voters     []uint64
	Learners   []uint64
}

// Handler serves the console under Prefix.
type Handler struct {
	b      Backend
	logger *slog.Logger
	assets map[string]asset // by path under Prefix ("" is index.html)
}

type asset struct {
	data  []byte
	etag  string
	ctype string
}

// New returns the console's handler.
func New(b Backend, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{b: b, logger: logger, assets: map[string]asset{}}
	err := fs.WalkDir(files, "ui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		h.assets[strings.TrimPrefix(p, "ui/")] = asset{
			data:  data,
			etag:  `"` + hex.EncodeToString(sum[:12]) + `"`,
			ctype: contentType(p),
		}
		return nil
	})
	if err != nil {
		// The files are compiled in: a failure here is a build mistake.
		panic(fmt.Sprintf("console: read embedded files: %v", err))
	}
	h.assets[""] = h.assets["index.html"]
	return h
}

// contentType is the Content-Type of an embedded file, by its extension
// (not the system's MIME tables, which differ between machines).
func contentType(p string) string {
	switch path.Ext(p) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".png":
		return "image/png"
	}
	return "application/octet-stream"
}

// contentSecurityPolicy allows the console's own files and connections to
// its own origin only: no inline scripts or styles, no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	rel, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if api, ok := strings.CutPrefix(rel, "api/"); ok {
		h.serveAPI(w, r, api)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	a, ok := h.assets[rel]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", a.ctype)
	w.Header().Set("ETag", a.etag)
	// Revalidated on every load (a cheap 304), so that a new binary's
	// files are used at once.
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, rel, time.Time{}, bytes.NewReader(a.data))
}

// serveAPI answers the console's JSON endpoints.
func (h *Handler) serveAPI(w http.ResponseWriter, r *http.Request, name string) {
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ctx := gateway.CallContext(r.Context(), r)
	var (
		v   any
		err error
	)
	switch name {
	case "session":
		v, err = h.session(ctx)
	case "overview":
		ctx, cancel := context.WithTimeout(ctx, overviewTimeout)
		defer cancel()
		v, err = h.overview(ctx)
	case "metrics":
		v, err = h.metrics(ctx)
	case "queues":
		v, err = h.queues(ctx)
	default:
		http.NotFound(w, r)
		return
	}
	if err != nil {
		gateway.WriteError(w, err)
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		gateway.WriteError(w, fmt.Errorf("console: marshal %s: %w", name, err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// overviewTimeout bounds the overview, members that do not answer included.
const overviewTimeout = 3 * time.Second

// sessionJSON is what /ui/api/session answers.
type sessionJSON struct {
	AuthEnabled bool `json:"auth_enabled"`
	// User is empty while auth is disabled, or when the request has no
	// credentials.
	User string `json:"user,omitempty"`
	// Root may do everything (also every user while auth is disabled).
	Root bool `json:"root"`
	// Read and Write are the key intervals the user may read and write,
	// sorted and disjoint (base64 keys; a null end is unbounded); empty for
	// root.
	Read  []intervalJSON `json:"read"`
	Write []intervalJSON `json:"write"`
}

type intervalJSON struct {
	Start []byte `json:"start"`
	End   []byte `json:"end"`
}

func intervals(ivs []auth.Interval) []intervalJSON {
	out := make([]intervalJSON, len(ivs))
	for i, iv := range ivs {
		out[i] = intervalJSON{Start: iv.Start, End: iv.End}
		if out[i].Start == nil {
			out[i].Start = []byte{}
		}
	}
	return out
}

// session identifies the request's user. A request without credentials
// while auth is on is answered (the console then asks for a login); an
// invalid token is an error, as on the gateway.
func (h *Handler) session(ctx context.Context) (*sessionJSON, error) {
	st, user, err := h.b.Identify(ctx)
	switch {
	case errors.Is(err, rpctypes.ErrGRPCUserEmpty):
		return &sessionJSON{AuthEnabled: true, Read: []intervalJSON{}, Write: []intervalJSON{}}, nil
	case err != nil:
		return nil, err
	case !st.Enabled:
		return &sessionJSON{Root: true, Read: []intervalJSON{}, Write: []intervalJSON{}}, nil
	}
	if _, ok := st.Users[user]; !ok {
		// A token that outlived its user, or a certificate's CN that names
		// no user: it authorizes nothing.
		return nil, rpctypes.ErrGRPCInvalidAuthToken
	}
	s := &sessionJSON{AuthEnabled: true, User: user, Root: st.IsRoot(user), Read: []intervalJSON{}, Write: []intervalJSON{}}
	if !s.Root {
		s.Read = intervals(st.Coverage(user, auth.Read))
		s.Write = intervals(st.Coverage(user, auth.Write))
	}
	return s, nil
}

// requireLogin fails unless auth is disabled or the request comes from a
// user; it returns the auth state and the user.
func (h *Handler) requireLogin(ctx context.Context) (*auth.State, string, error) {
	st, user, err := h.b.Identify(ctx)
	if err != nil {
		return nil, "", err
	}
	if st.Enabled {
		if _, ok := st.Users[user]; !ok {
			return nil, "", rpctypes.ErrGRPCPermissionDenied
		}
	}
	return st, user, nil
}

// hexID formats a member or cluster ID as etcdctl prints it.
func hexID(id uint64) string {
	if id == 0 {
		return ""
	}
	return strconv.FormatUint(id, 16)
}

type overviewJSON struct {
	ClusterID       string        `json:"cluster_id"`
	MemberID        string        `json:"member_id"`
	Leader          string        `json:"leader"`
	RaftTerm        uint64        `json:"raft_term"`
	Revision        int64         `json:"revision"`
	CompactRevision int64         `json:"compact_revision"`
	SynodVersion    string        `json:"synod_version,omitempty"`
	Members         []memberJSON  `json:"members"`
	Alarms          []alarmJSON   `json:"alarms"`
	Ranges          []rangeJSON   `json:"ranges"`
	Time            int64         `json:"time"` // Unix milliseconds
	Health          overviewCount `json:"health"`
}

type overviewCount struct {
	Healthy int `json:"healthy"`
	Total   int `json:"total"`
}

type memberJSON struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peer_urls"`
	ClientURLs []string `json:"client_urls"`
	// Role is leader, follower or learner; unknown if the member did not
	// answer.
	Role    string   `json:"role"`
	Healthy bool     `json:"healthy"`
	Errors  []string `json:"errors"`
	// The rest is from the member's Status, when it answered.
	Answered         bool   `json:"answered"`
	Version          string `json:"version,omitempty"`
	SynodVersion     string `json:"synod_version,omitempty"`
	DBSize           int64  `json:"db_size"`
	DBSizeInUse      int64  `json:"db_size_in_use"`
	DBSizeQuota      int64  `json:"db_size_quota"`
	RaftTerm         uint64 `json:"raft_term"`
	RaftIndex        uint64 `json:"raft_index"`
	RaftAppliedIndex uint64 `json:"raft_applied_index"`
	Revision         int64  `json:"revision"`
	// Lag is how many entries the member's applied index is behind the
	// leader's last index (as `synod status`); -1 when unknown.
	Lag int64 `json:"lag"`
}

type alarmJSON struct {
	MemberID string `json:"member_id"`
	Alarm    string `json:"alarm"`
}

type rangeJSON struct {
	ID       uint64   `json:"id"`
	System   bool     `json:"system,omitempty"`
	Start    []byte   `json:"start"`
	End      []byte   `json:"end"`
	Leader   string   `json:"leader"`
	Voters   []string `json:"voters"`
	Learners []string `json:"learners"`
}

func (h *Handler) overview(ctx context.Context) (*overviewJSON, error) {
	ov, err := h.b.Overview(ctx)
	if err != nil {
		return nil, err
	}
	out := &overviewJSON{
		ClusterID:       hexID(ov.ClusterID),
		MemberID:        hexID(ov.MemberID),
		Leader:          hexID(ov.Leader),
		RaftTerm:        ov.RaftTerm,
		Revision:        ov.Revision,
		CompactRevision: ov.CompactRevision,
		SynodVersion:    ov.SynodVersion,
		Members:         []memberJSON{},
		Alarms:          []alarmJSON{},
		Ranges:          []rangeJSON{},
		Time:            time.Now().UnixMilli(),
	}
	// The lag is counted from the leader's last index, as `synod status`
	// counts it (without an answer from the leader: the highest seen).
	var top uint64
	for _, m := range ov.Members {
		if s := m.Status; s != nil && s.Leader != 0 && s.Leader == m.ID {
			top = s.RaftIndex
		}
	}
	if top == 0 {
		for _, m := range ov.Members {
			if m.Status != nil {
				top = max(top, m.Status.RaftIndex)
			}
		}
	}
	members := slices.Clone(ov.Members)
	slices.SortStableFunc(members, func(a, b Member) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	for _, m := range members {
		mj := memberJSON{
			ID: hexID(m.ID), Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs,
			Role: "unknown", Errors: []string{}, Lag: -1, SynodVersion: m.SynodVersion,
		}
		if mj.PeerURLs == nil {
			mj.PeerURLs = []string{}
		}
		if mj.ClientURLs == nil {
			mj.ClientURLs = []string{}
		}
		if m.Learner {
			mj.Role = "learner"
		}
		if s := m.Status; s != nil {
			mj.Answered = true
			mj.Version = s.Version
			mj.DBSize, mj.DBSizeInUse, mj.DBSizeQuota = s.DbSize, s.DbSizeInUse, s.DbSizeQuota
			mj.RaftTerm, mj.RaftIndex, mj.RaftAppliedIndex = s.RaftTerm, s.RaftIndex, s.RaftAppliedIndex
			mj.Revision = s.GetHeader().GetRevision()
			mj.Errors = append(mj.Errors, s.Errors...)
			switch {
			case s.IsLearner:
				mj.Role = "learner"
			case s.Leader != 0 && s.Leader == m.ID:
				mj.Role = "leader"
			default:
				mj.Role = "follower"
			}
			if top > 0 {
				mj.Lag = max(0, int64(top)-int64(s.RaftAppliedIndex))
			}
			mj.Healthy = s.Leader != 0 && len(s.Errors) == 0
		} else if m.Err != nil {
			mj.Errors = append(mj.Errors, m.Err.Error())
		}
		if mj.Healthy {
			out.Health.Healthy++
		}
		out.Health.Total++
		out.Members = append(out.Members, mj)
	}
	for _, a := range ov.Alarms {
		out.Alarms = append(out.Alarms, alarmJSON{MemberID: hexID(a.MemberID), Alarm: a.Alarm.String()})
	}
	for _, r := range ov.Ranges {
		rj := rangeJSON{ID: r.ID, System: r.System, Start: r.Start, End: r.End, Leader: hexID(r.Leader), Voters: []string{}, Learners: []string{}}
		if rj.Start == nil {
			rj.Start = []byte{}
		}
		for _, id := range r.Voters {
			rj.Voters = append(rj.Voters, hexID(id))
		}
		for _, id := range r.Learners {
			rj.Learners = append(rj.Learners, hexID(id))
		}
		out.Ranges = append(out.Ranges, rj)
	}
	return out, nil
}

type metricsJSON struct {
	IntervalMs int64        `json:"interval_ms"`
	Samples    []sampleJSON `json:"samples"`
}

// sampleJSON is one metrics.Sample; latencies in milliseconds, null when
// no request ended in the interval.
type sampleJSON struct {
	Time     int64    `json:"t"`
	Reads    float64  `json:"reads"`
	Writes   float64  `json:"writes"`
	ReadP50  *float64 `json:"read_p50"`
	ReadP99  *float64 `json:"read_p99"`
	WriteP50 *float64 `json:"write_p50"`
	WriteP99 *float64 `json:"write_p99"`
}

func ms(secs float64) *float64 {
	if math.IsNaN(secs) || math.IsInf(secs, 0) {
		return nil
	}
	v := secs * 1000
	return &v
}

func (h *Handler) metrics(ctx context.Context) (*metricsJSON, error) {
	if _, _, err := h.requireLogin(ctx); err != nil {
		return nil, err
	}
	samples, interval := h.b.Samples()
	out := &metricsJSON{IntervalMs: interval.Milliseconds(), Samples: make([]sampleJSON, len(samples))}
	for i, s := range samples {
		out.Samples[i] = sampleJSON{
			Time: s.Time.UnixMilli(), Reads: s.Reads, Writes: s.Writes,
			ReadP50: ms(s.ReadP50), ReadP99: ms(s.ReadP99), WriteP50: ms(s.WriteP50), WriteP99: ms(s.WriteP99),
		}
	}
	return out, nil
}

type queuesJSON struct {
	Queues []string `json:"queues"`
}

// queues lists the job queues the user may read: those whose name key
// (auth.QueuePermissionPrefix + name) the user's roles let them read, as
// the queue service decides Stats and List; every queue for root or with
// auth disabled. It needs a login when auth is enabled.
func (h *Handler) queues(ctx context.Context) (*queuesJSON, error) {
	st, user, err := h.requireLogin(ctx)
	if err != nil {
		return nil, err
	}
	names, err := h.b.Queues(ctx)
	if err != nil {
		return nil, err
	}
	out := &queuesJSON{Queues: []string{}}
	for _, q := range names {
		if !st.Enabled || st.Allowed(user, []byte(auth.QueuePermissionPrefix+q), nil, auth.Read) {
			out.Queues = append(out.Queues, q)
		}
	}
	return out, nil
}
