package auth

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/raftcmd"
)

// Batch is what applying an auth command needs: reads that see the batch's
// own writes, and writes.
type Batch interface {
	pebble.Reader
	pebble.Writer
}

// Token is a simple token assigned by an applied Authenticate command; every
// node registers it.
type Token struct {
	User  string
	Token string
	// Password is the user's password hash when the token was assigned: a
	// token stops working when the password changes or the user is deleted
	// (and perhaps added again), as etcd invalidates a user's tokens then.
	Password []byte
}

// IsCommand reports whether req is the request of an auth command.
func IsCommand(req any) bool {
	switch req.(type) {
	case *pb.AuthEnableRequest, *pb.AuthDisableRequest, *pb.InternalAuthenticateRequest,
		*pb.AuthUserAddRequest, *pb.AuthUserDeleteRequest, *pb.AuthUserChangePasswordRequest,
		*pb.AuthUserGrantRoleRequest, *pb.AuthUserRevokeRoleRequest,
		*pb.AuthRoleAddRequest, *pb.AuthRoleDeleteRequest,
		*pb.AuthRoleGrantPermissionRequest, *pb.AuthRoleRevokePermissionRequest:
		return true
	}
	return false
}

// Apply applies one auth command to b. It is deterministic: the same state
// and request give the same writes and result on every replica. Errors that
// carry a gRPC status are the command's result (b is then untouched); others
// are storage failures. A command that changes the state bumps the auth
// revision. tok is set by a successful Authenticate.
func Apply(b Batch, req any) (resp any, tok *Token, err error) {
	st, err := Load(b)
	if err != nil {
		return nil, nil, err
	}
	a := applier{b: b, st: st}
	switch r := req.(type) {
	case *pb.AuthEnableRequest:
		resp, err = a.enable()
	case *pb.AuthDisableRequest:
		resp, err = a.disable()
	case *pb.InternalAuthenticateRequest:
		u, ok := st.Users[r.Name]
		if !ok || !st.Enabled {
			return nil, nil, rpctypes.ErrGRPCAuthFailed
		}
		return &pb.AuthenticateResponse{Token: r.SimpleToken},
			&Token{User: r.Name, Token: r.SimpleToken, Password: slices.Clone(u.Password)}, nil
	case *pb.AuthUserAddRequest:
		resp, err = a.userAdd(r)
	case *pb.AuthUserDeleteRequest:
		resp, err = a.userDelete(r)
	case *pb.AuthUserChangePasswordRequest:
		resp, err = a.userChangePassword(r)
	case *pb.AuthUserGrantRoleRequest:
		resp, err = a.userGrantRole(r)
	case *pb.AuthUserRevokeRoleRequest:
		resp, err = a.userRevokeRole(r)
	case *pb.AuthRoleAddRequest:
		resp, err = a.roleAdd(r)
	case *pb.AuthRoleDeleteRequest:
		resp, err = a.roleDelete(r)
	case *pb.AuthRoleGrantPermissionRequest:
		resp, err = a.roleGrantPermission(r)
	case *pb.AuthRoleRevokePermissionRequest:
		resp, err = a.roleRevokePermission(r)
	default:
		return nil, nil, fmt.Errorf("not an auth command: %T", req)
	}
	if err != nil {
		return nil, nil, err
	}
	return resp, nil, nil
}

type applier struct {
	b  Batch
	st *State
}

// bump increments the auth revision; every change calls it once, after its
// validation passed (so a refused command leaves no write).
func (a applier) bump() error {
	v := binary.BigEndian.AppendUint64(nil, a.st.Revision+1)
	if err := a.b.Set(keys.AuthRevisionKey(), v, nil); err != nil {
		return fmt.Errorf("write auth revision: %w", err)
	}
	return nil
}

func (a applier) putUser(u *authpb.User) error {
	v, err := proto.Marshal(u)
	if err != nil {
		return fmt.Errorf("encode user: %w", err)
	}
	if err := a.b.Set(keys.AuthUserKey(string(u.Name)), v, nil); err != nil {
		return fmt.Errorf("write user: %w", err)
	}
	return nil
}

func (a applier) putRole(r *authpb.Role) error {
	v, err := proto.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode role: %w", err)
	}
	if err := a.b.Set(keys.AuthRoleKey(string(r.Name)), v, nil); err != nil {
		return fmt.Errorf("write role: %w", err)
	}
	return nil
}

func (a applier) setEnabled(on bool) error {
	v := []byte{0}
	if on {
		v[0] = 1
	}
	if err := a.b.Set(keys.AuthEnabledKey(), v, nil); err != nil {
		return fmt.Errorf("write auth enabled flag: %w", err)
	}
	return a.bump()
}

func (a applier) enable() (any, error) {
	if a.st.Enabled {
		return &pb.AuthEnableResponse{}, nil
	}
	root, ok := a.st.Users[RootUser]
	if !ok {
		return nil, rpctypes.ErrGRPCRootUserNotExist
	}
	if !slices.Contains(root.Roles, RootRole) {
		return nil, rpctypes.ErrGRPCRootRoleNotExist
	}
	return &pb.AuthEnableResponse{}, a.setEnabled(true)
}

func (a applier) disable() (any, error) {
	if !a.st.Enabled {
		return &pb.AuthDisableResponse{}, nil
	}
	return &pb.AuthDisableResponse{}, a.setEnabled(false)
}

// user returns a copy of a user that may be modified.
func (a applier) user(name string) (*authpb.User, error) {
	u, ok := a.st.Users[name]
	if !ok {
		return nil, rpctypes.ErrGRPCUserNotFound
	}
	return proto.Clone(u).(*authpb.User), nil
}

func (a applier) role(name string) (*authpb.Role, error) {
	r, ok := a.st.Roles[name]
	if !ok {
		return nil, rpctypes.ErrGRPCRoleNotFound
	}
	return proto.Clone(r).(*authpb.Role), nil
}

func (a applier) userAdd(r *pb.AuthUserAddRequest) (any, error) {
	if r.Name == "" {
		return nil, rpctypes.ErrGRPCUserEmpty
	}
	if _, ok := a.st.Users[r.Name]; ok {
		return nil, rpctypes.ErrGRPCUserAlreadyExist
	}
	u := &authpb.User{Name: []byte(r.Name), Options: r.Options}
	if r.Options == nil || !r.Options.NoPassword {
		u.Password = []byte(r.HashedPassword)
	}
	if err := a.putUser(u); err != nil {
		return nil, err
	}
	return &pb.AuthUserAddResponse{}, a.bump()
}

func (a applier) userDelete(r *pb.AuthUserDeleteRequest) (any, error) {
	if a.st.Enabled && r.Name == RootUser {
		return nil, rpctypes.ErrGRPCInvalidAuthMgmt
	}
	if _, err := a.user(r.Name); err != nil {
		return nil, err
	}
	if err := a.b.Delete(keys.AuthUserKey(r.Name), nil); err != nil {
		return nil, fmt.Errorf("delete user: %w", err)
	}
	return &pb.AuthUserDeleteResponse{}, a.bump()
}

func (a applier) userChangePassword(r *pb.AuthUserChangePasswordRequest) (any, error) {
	u, err := a.user(r.Name)
	if err != nil {
		return nil, err
	}
	u.Password = []byte(r.HashedPassword)
	if err := a.putUser(u); err != nil {
		return nil, err
	}
	return &pb.AuthUserChangePasswordResponse{}, a.bump()
}

func (a applier) userGrantRole(r *pb.AuthUserGrantRoleRequest) (any, error) {
	u, err := a.user(r.User)
	if err != nil {
		return nil, err
	}
	if r.Role != RootRole {
		if _, err := a.role(r.Role); err != nil {
			return nil, err
		}
	}
	if slices.Contains(u.Roles, r.Role) {
		return &pb.AuthUserGrantRoleResponse{}, nil
	}
	u.Roles = append(u.Roles, r.Role)
	slices.Sort(u.Roles)
	if err := a.putUser(u); err != nil {
		return nil, err
	}
	return &pb.AuthUserGrantRoleResponse{}, a.bump()
}

func (a applier) userRevokeRole(r *pb.AuthUserRevokeRoleRequest) (any, error) {
	if a.st.Enabled && r.Name == RootUser && r.Role == RootRole {
		return nil, rpctypes.ErrGRPCInvalidAuthMgmt
	}
	u, err := a.user(r.Name)
	if err != nil {
		return nil, err
	}
	i := slices.Index(u.Roles, r.Role)
	if i < 0 {
		return nil, rpctypes.ErrGRPCRoleNotGranted
	}
	u.Roles = slices.Delete(u.Roles, i, i+1)
	if err := a.putUser(u); err != nil {
		return nil, err
	}
	return &pb.AuthUserRevokeRoleResponse{}, a.bump()
}

func (a applier) roleAdd(r *pb.AuthRoleAddRequest) (any, error) {
	if r.Name == "" {
		return nil, rpctypes.ErrGRPCRoleEmpty
	}
	if _, ok := a.st.Roles[r.Name]; ok {
		return nil, rpctypes.ErrGRPCRoleAlreadyExist
	}
	if err := a.putRole(&authpb.Role{Name: []byte(r.Name)}); err != nil {
		return nil, err
	}
	return &pb.AuthRoleAddResponse{}, a.bump()
}

// roleDelete removes a role and takes it from every user that has it.
func (a applier) roleDelete(r *pb.AuthRoleDeleteRequest) (any, error) {
	if a.st.Enabled && r.Role == RootRole {
		return nil, rpctypes.ErrGRPCInvalidAuthMgmt
	}
	if _, err := a.role(r.Role); err != nil {
		return nil, err
	}
	if err := a.b.Delete(keys.AuthRoleKey(r.Role), nil); err != nil {
		return nil, fmt.Errorf("delete role: %w", err)
	}
	names := make([]string, 0, len(a.st.Users))
	for n := range a.st.Users {
		names = append(names, n)
	}
	slices.Sort(names) // deterministic write order
	for _, n := range names {
		u := a.st.Users[n]
		i := slices.Index(u.Roles, r.Role)
		if i < 0 {
			continue
		}
		u = proto.Clone(u).(*authpb.User)
		u.Roles = slices.Delete(u.Roles, i, i+1)
		if err := a.putUser(u); err != nil {
			return nil, err
		}
	}
	return &pb.AuthRoleDeleteResponse{}, a.bump()
}

func samePermKey(p *authpb.Permission, key, rangeEnd []byte) bool {
	return bytes.Equal(p.Key, key) && bytes.Equal(p.RangeEnd, rangeEnd)
}

func (a applier) roleGrantPermission(r *pb.AuthRoleGrantPermissionRequest) (any, error) {
	if r.Perm == nil {
		return nil, rpctypes.ErrGRPCPermissionNotGiven
	}
	switch r.Perm.PermType {
	case authpb.Permission_READ, authpb.Permission_WRITE, authpb.Permission_READWRITE:
	default:
		return nil, rpctypes.ErrGRPCPermissionNotGiven
	}
	role, err := a.role(r.Name)
	if err != nil {
		return nil, err
	}
	perm := &authpb.Permission{PermType: r.Perm.PermType, Key: r.Perm.Key, RangeEnd: r.Perm.RangeEnd}
	if i := slices.IndexFunc(role.KeyPermission, func(p *authpb.Permission) bool {
		return samePermKey(p, perm.Key, perm.RangeEnd)
	}); i >= 0 {
		role.KeyPermission[i] = perm
	} else {
		role.KeyPermission = append(role.KeyPermission, perm)
		slices.SortFunc(role.KeyPermission, func(x, y *authpb.Permission) int {
			if c := bytes.Compare(x.Key, y.Key); c != 0 {
				return c
			}
			return bytes.Compare(x.RangeEnd, y.RangeEnd)
		})
	}
	if err := a.putRole(role); err != nil {
		return nil, err
	}
	return &pb.AuthRoleGrantPermissionResponse{}, a.bump()
}

func (a applier) roleRevokePermission(r *pb.AuthRoleRevokePermissionRequest) (any, error) {
	role, err := a.role(r.Role)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(role.KeyPermission, func(p *authpb.Permission) bool {
		return samePermKey(p, r.Key, r.RangeEnd)
	})
	if i < 0 {
		return nil, rpctypes.ErrGRPCPermissionNotGranted
	}
	role.KeyPermission = slices.Delete(role.KeyPermission, i, i+1)
	if err := a.putRole(role); err != nil {
		return nil, err
	}
	return &pb.AuthRoleRevokePermissionResponse{}, a.bump()
}

// Recheck decides at apply what becomes of a request with a login that was
// checked at an auth revision that has moved since (st is the state it
// applies in): nil lets it apply, ErrGRPCAuthOldRevision sends it back to
// be checked again, another error refuses it. As etcd, a request is not
// refused for the revision alone where the verdict is plain from st:
// everything is permitted with auth disabled or to root, and auth
// management needs root (or, for a password change, to be that user), so
// that concurrent admin calls, each of which moves the revision, do not
// clash. An Authenticate goes back (the password it was checked with may
// have changed), as does any other request (its keys' permissions may have).
func Recheck(st *State, user string, req any) error {
	if _, ok := req.(*pb.InternalAuthenticateRequest); ok {
		return rpctypes.ErrGRPCAuthOldRevision
	}
	if !st.Enabled || st.IsRoot(user) {
		return nil
	}
	if !IsCommand(req) {
		return rpctypes.ErrGRPCAuthOldRevision
	}
	if _, exists := st.Users[user]; !exists {
		return rpctypes.ErrGRPCUserNotFound
	}
	if r, ok := req.(*pb.AuthUserChangePasswordRequest); ok && r.Name == user {
		return nil
	}
	return rpctypes.ErrGRPCPermissionDenied
}

// RequestOf returns an empty request of an auth command kind, to decode a
// command's payload into, and false for other kinds.
func RequestOf(kind raftcmd.Kind) (proto.Message, bool) {
	switch kind {
	case raftcmd.KindAuthEnable:
		return &pb.AuthEnableRequest{}, true
	case raftcmd.KindAuthDisable:
		return &pb.AuthDisableRequest{}, true
	case raftcmd.KindAuthenticate:
		return &pb.InternalAuthenticateRequest{}, true
	case raftcmd.KindUserAdd:
		return &pb.AuthUserAddRequest{}, true
	case raftcmd.KindUserDelete:
		return &pb.AuthUserDeleteRequest{}, true
	case raftcmd.KindUserChangePassword:
		return &pb.AuthUserChangePasswordRequest{}, true
	case raftcmd.KindUserGrantRole:
		return &pb.AuthUserGrantRoleRequest{}, true
	case raftcmd.KindUserRevokeRole:
		return &pb.AuthUserRevokeRoleRequest{}, true
	case raftcmd.KindRoleAdd:
		return &pb.AuthRoleAddRequest{}, true
	case raftcmd.KindRoleDelete:
		return &pb.AuthRoleDeleteRequest{}, true
	case raftcmd.KindRoleGrantPermission:
		return &pb.AuthRoleGrantPermissionRequest{}, true
	case raftcmd.KindRoleRevokePermission:
		return &pb.AuthRoleRevokePermissionRequest{}, true
	}
	return nil, false
}
