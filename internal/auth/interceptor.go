package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/api/v3electionpb"
	"github.com/synod-io/synod/api/v3lockpb"
	"github.com/synod-io/synod/internal/keys"
)

// TokenMetadataKey is the gRPC metadata key etcd clients send their token in.
const TokenMetadataKey = "token"

// groupsPrefix is the key prefix of Synod's groups service (package coord,
// coord.GroupsPrefix); a group g lives under groupsPrefix + g + "/".
const groupsPrefix = "synod/groups/"

// Config configures an Authorizer.
type Config struct {
	// DB is the node's Pebble instance, holding the replicated auth state.
	DB pebble.Reader
	// Tokens issues and resolves tokens.
	Tokens *Tokens
	// BcryptCost is the cost of password hashes (bcrypt.DefaultCost if 0).
	BcryptCost int
	// Header returns a response header, for refused watch creations.
	Header func() *pb.ResponseHeader
	// RetryTimeout bounds how long a request refused at apply because the
	// auth state changed since its check (ErrGRPCAuthOldRevision) is
	// checked and proposed again, counted from its first refusal (the node's
	// request timeout; 0: DefaultRetryTimeout). The request's own deadline
	// bounds it too.
	RetryTimeout time.Duration
	// Login configures the throttling of failed logins.
	Login LoginConfig
	// Sync waits until the node has applied, and registered the tokens of,
	// everything committed before the call. A simple token is assigned
	// through Raft and handed to the client when it applied on the node
	// that issued it; another node may not have applied it yet, so an
	// unknown simple token is looked up again after Sync.
	Sync func(ctx context.Context) error
}

// Authorizer authenticates and authorizes the client requests of a node.
type Authorizer struct {
	cache        *Cache
	tokens       *Tokens
	bcryptCost   int
	header       func() *pb.ResponseHeader
	sync         func(ctx context.Context) error
	retryTimeout time.Duration
	logins       *loginThrottle
	passwords    *passwordChecker
}

// DefaultRetryTimeout is Config.RetryTimeout's default.
const DefaultRetryTimeout = 5 * time.Second

// New returns an Authorizer.
func New(cfg Config) *Authorizer {
	cost := cfg.BcryptCost
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	retry := cfg.RetryTimeout
	if retry <= 0 {
		retry = DefaultRetryTimeout
	}
	return &Authorizer{
		cache:        NewCache(cfg.DB),
		tokens:       cfg.Tokens,
		bcryptCost:   cost,
		header:       cfg.Header,
		sync:         cfg.Sync,
		retryTimeout: retry,
		logins:       newLoginThrottle(cfg.Login),
		passwords:    &passwordChecker{cost: cost},
	}
}

// State returns the node's current auth state.
func (a *Authorizer) State() (*State, error) { return a.cache.Current() }

// Invalidate tells the authorizer the stored auth state changed (an auth
// command or a snapshot was applied).
func (a *Authorizer) Invalidate() { a.cache.Invalidate() }

// Tokens returns the node's token issuer.
func (a *Authorizer) Tokens() *Tokens { return a.tokens }

// Fence is what a request's Raft command carries of its authorization, so
// that apply can refuse it if the check no longer holds (see raftcmd.Command).
type Fence struct {
	// User is the login the request was authorized for; empty when auth was
	// disabled at the check (the request then fails at apply, to be checked
	// again, if auth is enabled by then).
	User string
	// Revision is the auth revision the request was checked at; with a
	// login, the request fails at apply if the auth state changed since.
	Revision uint64
}

type fenceKey struct{}

// WithFence records in ctx how a request was authorized; the node copies it
// into the request's Raft command.
func WithFence(ctx context.Context, f Fence) context.Context {
	return context.WithValue(ctx, fenceKey{}, f)
}

// WithoutFence returns ctx without the fence of the request it carries:
// for the commands a server proposes on its own account (a transaction's
// commit, checked when the client's request began).
func WithoutFence(ctx context.Context) context.Context {
	return context.WithValue(ctx, fenceKey{}, nil)
}

// FenceFromContext returns the Fence recorded by WithFence; ok is false for
// a request that passed no check (the node's own commands).
func FenceFromContext(ctx context.Context) (f Fence, ok bool) {
	f, ok = ctx.Value(fenceKey{}).(Fence)
	return f, ok
}

// openMethods need no authentication even with auth enabled: getting a
// token, and what clients and tools call to find and probe members.
var openMethods = map[string]bool{
	"/etcdserverpb.Auth/Authenticate":  true,
	"/etcdserverpb.Auth/AuthStatus":    true,
	"/etcdserverpb.Cluster/MemberList": true,
	"/etcdserverpb.Maintenance/Status": true,
	"/grpc.health.v1.Health/Check":     true,
	"/grpc.health.v1.Health/Watch":     true,
	"/grpc.health.v1.Health/List":      true,
}

// identify returns the user a request comes from in state st: the user of
// its token, or else the CN of its verified TLS client certificate (as etcd).
// A simple token is invalid once its user's password changed or the user was
// deleted (etcd invalidates the user's tokens then).
func (a *Authorizer) identify(ctx context.Context, st *State) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if ts := md.Get(TokenMetadataKey); len(ts) > 0 && ts[0] != "" {
		user, password, ok := a.tokens.resolve(ts[0])
		if !ok {
			return "", rpctypes.ErrGRPCInvalidAuthToken
		}
		if a.tokens.Simple() {
			if u, ok := st.Users[user]; !ok || !bytes.Equal(u.Password, password) {
				return "", rpctypes.ErrGRPCInvalidAuthToken
			}
		}
		return user, nil
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			for _, chain := range ti.State.VerifiedChains {
				if len(chain) > 0 && chain[0].Subject.CommonName != "" {
					return chain[0].Subject.CommonName, nil
				}
			}
		}
	}
	return "", rpctypes.ErrGRPCUserEmpty
}

func stateError(err error) error {
	return status.Error(codes.Internal, fmt.Sprintf("read auth state: %v", err))
}

// Unary returns the interceptor that checks unary requests.
func (a *Authorizer) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if openMethods[info.FullMethod] {
			return handler(ctx, req)
		}
		var st *State
		var user string
		var resp any
		var staleSince time.Time
		for {
			var err error
			st, user, err = a.authorize(ctx, req)
			if err != nil {
				return nil, err
			}
			// Writes carry how they were checked: with a login, the user and
			// the auth revision; without (auth disabled), a mark that makes
			// them fail at apply if auth is enabled by then, so that one
			// checked just before an AuthEnable does not apply after it
			// unchecked. Only a request with a login is revision-fenced, as
			// in etcd: admin calls made while auth is disabled, each of
			// which moves the revision, do not clash.
			f := Fence{Revision: st.Revision}
			if st.Enabled {
				f.User = user
			}
			resp, err = handler(WithFence(ctx, f), req)
			if errors.Is(err, rpctypes.ErrGRPCAuthOldRevision) {
				// The auth state changed between the check and the apply,
				// which wrote nothing: check again against the new state
				// (and answer with its verdict) until the request goes
				// through, instead of making every client handle the race.
				if staleSince.IsZero() {
					staleSince = time.Now()
				}
				if werr := a.beforeRetry(ctx, st.Revision, staleSince); werr != nil {
					return nil, err
				}
				continue
			}
			if err != nil || !st.Enabled {
				return resp, err
			}
			break
		}
		if tr, ok := resp.(*pb.LeaseTimeToLiveResponse); ok && len(tr.Keys) > 0 {
			// As etcd (CVE-2023-32082): the keys attached to a lease are
			// shown only to a user who may read every one of them.
			now, err := a.cache.Current()
			if err != nil {
				return nil, stateError(err)
			}
			for _, k := range tr.Keys {
				if now.Enabled && !now.Allowed(user, k, nil, Read) {
					return nil, rpctypes.ErrGRPCPermissionDenied
				}
			}
		}
		if rr, ok := req.(*pb.RangeRequest); ok && !rr.Serializable {
			if err := a.recheckRead(user, rr, st.Revision); err != nil {
				return nil, err
			}
		}
		return resp, nil
	}
}

// errRetryTimeout ends the retries of a request refused as stale.
var errRetryTimeout = errors.New("retry timeout")

// beforeRetry decides whether a request checked at auth revision rev and
// refused at apply as stale, first at staleSince, is tried again, and
// makes sure its next check sees a newer auth state.
func (a *Authorizer) beforeRetry(ctx context.Context, rev uint64, staleSince time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if time.Since(staleSince) > a.retryTimeout {
		return errRetryTimeout
	}
	// The refusal came from this node's own apply, which invalidated the
	// cache before it answered: the state is normally newer already.
	if now, err := a.cache.Current(); err == nil && now.Revision > rev {
		return nil
	}
	if a.sync != nil {
		return a.sync(ctx)
	}
	return nil
}

// recheckRead checks a linearizable read, checked at auth revision rev
// before it waited for its ReadIndex, again against the auth state that is
// now at least as new as the read.
func (a *Authorizer) recheckRead(user string, req *pb.RangeRequest, rev uint64) error {
	now, err := a.cache.Current()
	if err != nil {
		return stateError(err)
	}
	if now.Enabled && now.Revision != rev {
		return a.Check(now, user, req)
	}
	return nil
}

// authorize identifies the user of a request and checks req (nil: only
// identifies), against the node's current auth state. A refusal is
// confirmed against the state after a Sync, so that a change committed
// anywhere before the request (auth disabled, a permission granted) is never
// missed because this node lags.
func (a *Authorizer) authorize(ctx context.Context, req any) (*State, string, error) {
	st, user, err := a.try(ctx, req, false)
	if err == nil || a.sync == nil {
		return st, user, err
	}
	if serr := a.sync(ctx); serr != nil {
		return nil, "", serr
	}
	return a.try(ctx, req, true)
}

// Identify returns the node's auth state and the user a request comes
// from, identified as the interceptors identify every call (its token,
// else the CN of its verified TLS client certificate); the user is empty
// while auth is disabled. Without credentials it fails with
// ErrGRPCUserEmpty, with a token that is not valid (expired, its user's
// password changed) with ErrGRPCInvalidAuthToken. Handlers outside gRPC
// (the web console's) use it to apply the same rules.
func (a *Authorizer) Identify(ctx context.Context) (*State, string, error) {
	return a.authorize(ctx, nil)
}

// errNeedSync is try's answer when a check needs a synced state; authorize
// then syncs and tries again, so it never reaches a client.
var errNeedSync = errors.New("auth check needs a synced state")

func (a *Authorizer) try(ctx context.Context, req any, synced bool) (*State, string, error) {
	st, err := a.cache.Current()
	if err != nil {
		return nil, "", stateError(err)
	}
	if !st.Enabled {
		return st, "", nil
	}
	user, err := a.identify(ctx, st)
	if err != nil {
		return nil, "", err
	}
	if req == nil {
		return st, user, nil
	}
	if _, ok := req.(*pb.LeaseLeasesRequest); ok && !synced && !st.IsRoot(user) && a.sync != nil {
		// The check reads the keys attached to every lease: read them as of
		// now, not as of this node's possibly lagging state.
		return nil, "", errNeedSync
	}
	if err := a.Check(st, user, req); err != nil {
		return nil, "", err
	}
	return st, user, nil
}

// Stream returns the interceptor that checks streams: each message the
// client sends is checked as it arrives; a watch creation on a range the
// user cannot read is refused with a canceled response, as etcd does.
func (a *Authorizer) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if openMethods[info.FullMethod] {
			return handler(srv, ss)
		}
		st, user, err := a.authorize(ss.Context(), nil)
		if err != nil {
			if info.FullMethod != watchMethod || !isIdentityError(err) {
				return err
			}
			// As etcd: a Watch stream without a (valid) user is opened,
			// and each watch it asks for is cancelled with the reason.
			return handler(srv, &checkedStream{ServerStream: ss, a: a})
		}
		// Checked also while auth is disabled: it may be enabled while the
		// stream is open, and what the client sends after must be checked.
		return handler(srv, &checkedStream{ServerStream: ss, a: a, user: user, identified: st.Enabled})
	}
}

type checkedStream struct {
	grpc.ServerStream
	a          *Authorizer
	user       string
	identified bool // user is known (false: opened while auth was disabled)

	sendMu sync.Mutex // the handler's sender and refusals share the stream
	// rangeReq is a linearizable RangeStream request checked at auth
	// revision rangeRev; guarded by sendMu.
	rangeReq *pb.RangeRequest
	rangeRev uint64
}

func (s *checkedStream) SendMsg(m any) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if _, ok := m.(*pb.RangeStreamResponse); ok && s.rangeReq != nil {
		if err := s.a.recheckRead(s.user, s.rangeReq, s.rangeRev); err != nil {
			return err
		}
	}
	return s.ServerStream.SendMsg(m)
}

func (s *checkedStream) RecvMsg(m any) error {
	for {
		if err := s.ServerStream.RecvMsg(m); err != nil {
			return err
		}
		st, err := s.a.cache.Current()
		if err != nil {
			return stateError(err)
		}
		if !st.Enabled {
			return nil
		}
		wr, ok := m.(*pb.WatchRequest)
		if !s.identified {
			user, err := s.a.identify(s.Context(), st)
			if err != nil && !ok {
				return err
			}
			if err != nil {
				// A watch stream without a user: refuse what it asks to
				// watch, with the reason, as etcd does.
				if wr.GetCreateRequest() == nil {
					return nil
				}
				if err := s.SendMsg(s.a.refusedWatch(err)); err != nil {
					return err
				}
				continue
			}
			s.user, s.identified = user, true
		}
		if !ok {
			if err := s.a.Check(st, s.user, m); err != nil {
				return err
			}
			if rr, ok := m.(*pb.RangeRequest); ok && !rr.Serializable {
				s.sendMu.Lock()
				s.rangeReq, s.rangeRev = rr, st.Revision
				s.sendMu.Unlock()
			}
			return nil
		}
		cr := wr.GetCreateRequest()
		if cr == nil || st.Allowed(s.user, cr.Key, cr.RangeEnd, Read) {
			return nil
		}
		if err := s.SendMsg(s.a.refusedWatch(rpctypes.ErrGRPCPermissionDenied)); err != nil {
			return err
		}
	}
}

// watchMethod is the Watch service's stream.
const watchMethod = "/etcdserverpb.Watch/Watch"

// isIdentityError reports whether err says who the caller is not: no
// user, or a token that names none.
func isIdentityError(err error) bool {
	return errors.Is(err, rpctypes.ErrGRPCUserEmpty) || errors.Is(err, rpctypes.ErrGRPCInvalidAuthToken)
}

// refusedWatch is the answer to a watch creation that auth refuses: created
// and cancelled at once, with the reason, as etcd answers it.
func (a *Authorizer) refusedWatch(reason error) *pb.WatchResponse {
	return &pb.WatchResponse{
		Header:       a.header(),
		WatchId:      -1, // clientv3.InvalidWatchID
		Created:      true,
		Canceled:     true,
		CancelReason: reason.Error(),
	}
}

// Check decides whether user may make request req in state st. Root may do
// everything; requests without a rule below are root-only.
func (a *Authorizer) Check(st *State, user string, req any) error {
	if _, ok := st.Users[user]; !ok {
		// A token that outlived its user (or a certificate CN that names no
		// user) authorizes nothing.
		return rpctypes.ErrGRPCPermissionDenied
	}
	if st.IsRoot(user) {
		return nil
	}
	switch r := req.(type) {
	case *pb.LeaseKeepAliveRequest:
		// Checked where the request enters (the leader, when it is
		// forwarded, trusts this node): as etcd, against this node's view
		// of the lease's keys.
		return allowedIf(leaseKeysWritable(a.cache.db, st, user, r.ID))
	case *pb.LeaseLeasesRequest:
		return allowedIf(allLeaseKeysReadable(a.cache.db, st, user))
	}
	if checkKeys(st, user, req) {
		return nil
	}
	return rpctypes.ErrGRPCPermissionDenied
}

// allowedIf turns the verdict of a check that reads storage into an error.
func allowedIf(ok bool, err error) error {
	switch {
	case err != nil:
		return stateError(err)
	case !ok:
		return rpctypes.ErrGRPCPermissionDenied
	}
	return nil
}

func readWrite(st *State, user string, key, end []byte) bool {
	return st.Allowed(user, key, end, Read) && st.Allowed(user, key, end, Write)
}

// checkKeys reports whether the key permissions of a non-root user allow
// req.
func checkKeys(st *State, user string, req any) bool {
	switch r := req.(type) {
	case *pb.RangeRequest:
		return st.Allowed(user, r.Key, r.RangeEnd, Read)
	case *pb.PutRequest:
		return checkPut(st, user, r)
	case *pb.DeleteRangeRequest:
		return checkDelete(st, user, r)
	case *pb.TxnRequest:
		return checkTxn(st, user, r)
	case *pb.LeaseGrantRequest, *pb.LeaseTimeToLiveRequest:
		return true // leases hold no data (a TimeToLive's keys are checked in its answer)
	case *pb.LeaseRevokeRequest:
		// Deleting the lease's keys needs write permission on all of
		// them: checked at apply against the keys attached then
		// (CheckLeaseUse), as is a put attaching a key to a lease.
		return true
	case *pb.AuthUserGetRequest:
		return r.Name == user
	case *pb.AuthUserChangePasswordRequest:
		return r.Name == user
	case *pb.AuthRoleGetRequest:
		u := st.Users[user]
		for _, ro := range u.Roles {
			if ro == r.Role {
				return true
			}
		}
		return false
	case *pb.WatchRequest:
		cr := r.GetCreateRequest()
		return cr == nil || st.Allowed(user, cr.Key, cr.RangeEnd, Read)

	// etcd's lock and election services: a name is a key prefix.
	case *v3lockpb.LockRequest:
		return readWrite(st, user, r.Name, keys.PrefixRangeEnd(r.Name))
	case *v3lockpb.UnlockRequest:
		return st.Allowed(user, r.Key, nil, Write)
	case *v3electionpb.CampaignRequest:
		return readWrite(st, user, r.Name, keys.PrefixRangeEnd(r.Name))
	case *v3electionpb.ProclaimRequest:
		return r.Leader != nil && readWrite(st, user, r.Leader.Key, nil)
	case *v3electionpb.ResignRequest:
		return r.Leader != nil && st.Allowed(user, r.Leader.Key, nil, Write)
	case *v3electionpb.LeaderRequest: // Leader and Observe
		return st.Allowed(user, r.Name, keys.PrefixRangeEnd(r.Name), Read)

	// Synod's groups service: group g is the prefix groupsPrefix+g+"/".
	case *synodpb.JoinRequest:
		p := []byte(groupsPrefix + r.Group + "/")
		return readWrite(st, user, p, keys.PrefixRangeEnd(p))
	case *synodpb.LeaveRequest:
		p := []byte(groupsPrefix + r.Group + "/")
		return readWrite(st, user, p, keys.PrefixRangeEnd(p))
	case *synodpb.ListRequest:
		p := []byte(groupsPrefix + r.Group + "/")
		return st.Allowed(user, p, keys.PrefixRangeEnd(p), Read)
	case *synodpb.GroupWatchRequest:
		p := []byte(groupsPrefix + r.Group + "/")
		return st.Allowed(user, p, keys.PrefixRangeEnd(p), Read)
	}
	if ok, handled := checkQueue(st, user, req); handled {
		return ok
	}
	return checkLimits(st, user, req)
}

// checkLimits decides the rate limiters' requests (package limit): limit
// n is the reserved prefix keys.LimitPrefix+n+"/" (its definition,
// permits and keys' state). Taking, refunding, acquiring and releasing
// need write permission on the whole prefix, reading a limit (get, stats,
// a peek) read permission; listing needs read on every limit's prefix.
// Defining and deleting limits is root's, as is any other request.
func checkLimits(st *State, user string, req any) bool {
	on := func(name string, perm Access) bool {
		p := limitPrefix(name)
		return st.Allowed(user, p, keys.PrefixRangeEnd(p), perm)
	}
	switch r := req.(type) {
	case *synodpb.TakeRequest:
		perm := Write
		if r.Peek {
			perm = Read
		}
		for _, it := range r.Items {
			if !on(it.Limit, perm) {
				return false
			}
		}
		return len(r.Items) > 0
	case *synodpb.RefundRequest:
		for _, it := range r.Items {
			if !on(it.Limit, Write) {
				return false
			}
		}
		return len(r.Items) > 0
	case *synodpb.AcquireRequest:
		return on(r.Limit, Write)
	case *synodpb.ReleaseRequest:
		return on(r.Limit, Write)
	case *synodpb.GetLimitRequest:
		return on(r.Name, Read)
	case *synodpb.LimitStatsRequest:
		return on(r.Name, Read)
	case *synodpb.ListLimitsRequest:
		return st.Allowed(user, keys.LimitPrefix, keys.PrefixRangeEnd(keys.LimitPrefix), Read)
	}
	return false
}

// limitPrefix is the reserved prefix of limit name.
func limitPrefix(name string) []byte {
	return append(append(append([]byte{}, keys.LimitPrefix...), name...), '/')
}

func checkPut(st *State, user string, r *pb.PutRequest) bool {
	if !st.Allowed(user, r.Key, nil, Write) {
		return false
	}
	return !r.PrevKv || st.Allowed(user, r.Key, nil, Read)
}

func checkDelete(st *State, user string, r *pb.DeleteRangeRequest) bool {
	if !st.Allowed(user, r.Key, r.RangeEnd, Write) {
		return false
	}
	return !r.PrevKv || st.Allowed(user, r.Key, r.RangeEnd, Read)
}

// checkTxn requires read permission on every compared key and the
// permissions of every operation of both branches (a txn touching one
// forbidden key fails whole, whichever branch would run).
func checkTxn(st *State, user string, r *pb.TxnRequest) bool {
	for _, c := range r.Compare {
		if !st.Allowed(user, c.Key, c.RangeEnd, Read) {
			return false
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			ok := false
			switch o := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				ok = o.RequestRange != nil && st.Allowed(user, o.RequestRange.Key, o.RequestRange.RangeEnd, Read)
			case *pb.RequestOp_RequestPut:
				ok = o.RequestPut != nil && checkPut(st, user, o.RequestPut)
			case *pb.RequestOp_RequestDeleteRange:
				ok = o.RequestDeleteRange != nil && checkDelete(st, user, o.RequestDeleteRange)
			case *pb.RequestOp_RequestTxn:
				ok = o.RequestTxn != nil && checkTxn(st, user, o.RequestTxn)
			}
			if !ok {
				return false
			}
		}
	}
	return true
}
