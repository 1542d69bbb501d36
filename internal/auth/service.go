package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/synod-io/synod/internal/raftcmd"
)

// Backend is what the Auth service needs from the node.
type Backend interface {
	// Header returns a response header (cluster, member, term and the KV
	// revision this node has applied).
	Header() *pb.ResponseHeader
	// Propose replicates a command and returns its response.
	Propose(ctx context.Context, kind raftcmd.Kind, req proto.Message) (any, error)
	// Linearize waits until the node applied everything committed before
	// the call.
	Linearize(ctx context.Context) error
}

// Service implements etcd's Auth service. Access to it is checked by the
// Authorizer's interceptors (admin calls need root).
type Service struct {
	pb.UnimplementedAuthServer
	b  Backend
	az *Authorizer
}

// NewService returns the Auth service of a node.
func NewService(b Backend, az *Authorizer) *Service { return &Service{b: b, az: az} }

// header is the header of a response: as etcd's, it carries the store's
// KV revision, not the auth revision (AuthStatus reports that one).
func (s *Service) header() *pb.ResponseHeader { return s.b.Header() }

// propose replicates an auth command and sets the response header.
func propose[R interface{ proto.Message }](ctx context.Context, s *Service, kind raftcmd.Kind, req proto.Message) (R, error) {
	var zero R
	out, err := s.b.Propose(ctx, kind, req)
	if err != nil {
		return zero, err
	}
	resp, ok := out.(R)
	if !ok {
		return zero, fmt.Errorf("%s returned %T", kind, out)
	}
	setHeader(resp, s.header())
	return resp, nil
}

// setHeader sets the Header field every Auth response has.
func setHeader(m proto.Message, h *pb.ResponseHeader) {
	fd := m.ProtoReflect().Descriptor().Fields().ByName("header")
	if fd == nil {
		return
	}
	m.ProtoReflect().Set(fd, protoreflect.ValueOfMessage(h.ProtoReflect()))
}

// current returns the node's auth state after a linearizable wait.
func (s *Service) current(ctx context.Context) (*State, error) {
	if err := s.b.Linearize(ctx); err != nil {
		return nil, err
	}
	return s.az.cache.Current()
}

func (s *Service) hash(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), s.az.bcryptCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// AuthEnable implements pb.AuthServer.
func (s *Service) AuthEnable(ctx context.Context, req *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	return propose[*pb.AuthEnableResponse](ctx, s, raftcmd.KindAuthEnable, req)
}

// AuthDisable implements pb.AuthServer.
func (s *Service) AuthDisable(ctx context.Context, req *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	return propose[*pb.AuthDisableResponse](ctx, s, raftcmd.KindAuthDisable, req)
}

// AuthStatus implements pb.AuthServer.
func (s *Service) AuthStatus(ctx context.Context, _ *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	st, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.AuthStatusResponse{Header: s.header(), Enabled: st.Enabled, AuthRevision: st.Revision}, nil
}

// Authenticate implements pb.AuthServer: it checks the password against the
// linearizable auth state and issues a token. A simple token is assigned
// through Raft so that every node accepts it; a JWT is signed locally.
// Failed attempts are throttled per user name and client address (see
// LoginConfig), and every failure costs one bcrypt comparison.
func (s *Service) Authenticate(ctx context.Context, req *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	done, err := s.az.logins.admit(req.Name, clientAddress(ctx))
	if err != nil {
		return nil, err
	}
	outcome := loginAborted
	defer func() { done(outcome) }()
	st, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	if !st.Enabled {
		return nil, rpctypes.ErrGRPCAuthNotEnabled
	}
	u := st.Users[req.Name]
	if !s.az.passwords.check(u, req.Password) {
		outcome = loginFailed
		return nil, rpctypes.ErrGRPCAuthFailed
	}
	outcome = loginSucceeded
	if !s.az.tokens.Simple() {
		tok, err := s.az.tokens.SignJWT(req.Name, st.Revision)
		if err != nil {
			return nil, err
		}
		return &pb.AuthenticateResponse{Header: s.header(), Token: tok}, nil
	}
	var staleSince time.Time
	for {
		tok, err := s.az.tokens.NewSimpleToken()
		if err != nil {
			return nil, err
		}
		// The password checked above must still be the user's when the
		// token is assigned: the command is fenced at the revision it was
		// checked at.
		fctx := WithFence(ctx, Fence{User: req.Name, Revision: st.Revision})
		resp, err := propose[*pb.AuthenticateResponse](fctx, s, raftcmd.KindAuthenticate,
			&pb.InternalAuthenticateRequest{Name: req.Name, SimpleToken: tok})
		if !errors.Is(err, rpctypes.ErrGRPCAuthOldRevision) {
			return resp, err
		}
		// Another auth change applied first: check again against the new
		// state, comparing the password again only if its hash changed.
		if staleSince.IsZero() {
			staleSince = time.Now()
		}
		if s.az.beforeRetry(ctx, st.Revision, staleSince) != nil {
			return nil, err
		}
		now, cerr := s.current(ctx)
		if cerr != nil {
			return nil, cerr
		}
		if !now.Enabled {
			return nil, rpctypes.ErrGRPCAuthNotEnabled
		}
		nu := now.Users[req.Name]
		if nu == nil || !bytes.Equal(nu.Password, u.Password) || !proto.Equal(nu.Options, u.Options) {
			if !s.az.passwords.check(nu, req.Password) {
				outcome = loginFailed
				return nil, rpctypes.ErrGRPCAuthFailed
			}
		}
		st, u = now, nu
	}
}

// UserAdd implements pb.AuthServer. The password is hashed here, before it
// is proposed: bcrypt is not deterministic, and no password enters the log.
func (s *Service) UserAdd(ctx context.Context, req *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	if req.Name == "" {
		return nil, rpctypes.ErrGRPCUserEmpty
	}
	r := &pb.AuthUserAddRequest{Name: req.Name, Options: req.Options, HashedPassword: req.HashedPassword}
	if (req.Options == nil || !req.Options.NoPassword) && r.HashedPassword == "" {
		h, err := s.hash(req.Password)
		if err != nil {
			return nil, err
		}
		r.HashedPassword = h
	}
	return propose[*pb.AuthUserAddResponse](ctx, s, raftcmd.KindUserAdd, r)
}

// UserDelete implements pb.AuthServer.
func (s *Service) UserDelete(ctx context.Context, req *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	return propose[*pb.AuthUserDeleteResponse](ctx, s, raftcmd.KindUserDelete, req)
}

// UserChangePassword implements pb.AuthServer.
func (s *Service) UserChangePassword(ctx context.Context, req *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	r := &pb.AuthUserChangePasswordRequest{Name: req.Name, HashedPassword: req.HashedPassword}
	if r.HashedPassword == "" {
		h, err := s.hash(req.Password)
		if err != nil {
			return nil, err
		}
		r.HashedPassword = h
	}
	return propose[*pb.AuthUserChangePasswordResponse](ctx, s, raftcmd.KindUserChangePassword, r)
}

// UserGrantRole implements pb.AuthServer.
func (s *Service) UserGrantRole(ctx context.Context, req *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	return propose[*pb.AuthUserGrantRoleResponse](ctx, s, raftcmd.KindUserGrantRole, req)
}

// UserRevokeRole implements pb.AuthServer.
func (s *Service) UserRevokeRole(ctx context.Context, req *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	return propose[*pb.AuthUserRevokeRoleResponse](ctx, s, raftcmd.KindUserRevokeRole, req)
}

// UserGet implements pb.AuthServer.
func (s *Service) UserGet(ctx context.Context, req *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	st, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	u, ok := st.Users[req.Name]
	if !ok {
		return nil, rpctypes.ErrGRPCUserNotFound
	}
	return &pb.AuthUserGetResponse{Header: s.header(), Roles: slices.Clone(u.Roles)}, nil
}

// UserList implements pb.AuthServer.
func (s *Service) UserList(ctx context.Context, _ *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	st, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.AuthUserListResponse{Header: s.header()}
	for n := range st.Users {
		resp.Users = append(resp.Users, n)
	}
	slices.Sort(resp.Users)
	return resp, nil
}

// RoleAdd implements pb.AuthServer.
func (s *Service) RoleAdd(ctx context.Context, req *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	return propose[*pb.AuthRoleAddResponse](ctx, s, raftcmd.KindRoleAdd, req)
}

// RoleDelete implements pb.AuthServer.
func (s *Service) RoleDelete(ctx context.Context, req *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	return propose[*pb.AuthRoleDeleteResponse](ctx, s, raftcmd.KindRoleDelete, req)
}

// RoleGrantPermission implements pb.AuthServer.
func (s *Service) RoleGrantPermission(ctx context.Context, req *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	return propose[*pb.AuthRoleGrantPermissionResponse](ctx, s, raftcmd.KindRoleGrantPermission, req)
}

// RoleRevokePermission implements pb.AuthServer.
func (s *Service) RoleRevokePermission(ctx context.Context, req *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	return propose[*pb.AuthRoleRevokePermissionResponse](ctx, s, raftcmd.KindRoleRevokePermission, req)
}

// RoleGet implements pb.AuthServer.
func (s *Service) RoleGet(ctx context.Context, req *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	st, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.AuthRoleGetResponse{Header: s.header()}
	if req.Role == RootRole {
		// The root role exists implicitly and may do everything.
		if r, ok := st.Roles[RootRole]; ok {
			resp.Perm = clonePerms(r.KeyPermission)
		}
		return resp, nil
	}
	r, ok := st.Roles[req.Role]
	if !ok {
		return nil, rpctypes.ErrGRPCRoleNotFound
	}
	resp.Perm = clonePerms(r.KeyPermission)
	return resp, nil
}

func clonePerms(ps []*authpb.Permission) []*authpb.Permission {
	out := make([]*authpb.Permission, len(ps))
	for i, p := range ps {
		out[i] = proto.Clone(p).(*authpb.Permission)
	}
	return out
}

// RoleList implements pb.AuthServer.
func (s *Service) RoleList(ctx context.Context, _ *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	st, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.AuthRoleListResponse{Header: s.header()}
	for n := range st.Roles {
		resp.Roles = append(resp.Roles, n)
	}
	slices.Sort(resp.Roles)
	return resp, nil
}
