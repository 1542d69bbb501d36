package auth

import (
	"fmt"
	"sort"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The auth state lives in the system range. Data ranges check the commands
// they apply against a copy of it (the revision fence, lease permissions),
// handed to them by the system range: EncodeMirror is that copy, without the
// password hashes, which no check at apply needs.
const (
	mirrorRevision protowire.Number = 1
	mirrorEnabled  protowire.Number = 2
	mirrorUser     protowire.Number = 3 // authpb.User, password cleared
	mirrorRole     protowire.Number = 4 // authpb.Role
)

// EncodeMirror encodes the copy of st that data ranges check against:
// deterministic (users and roles in name order), without passwords.
func EncodeMirror(st *State) ([]byte, error) {
	var b []byte
	b = protowire.AppendTag(b, mirrorRevision, protowire.VarintType)
	b = protowire.AppendVarint(b, st.Revision)
	if st.Enabled {
		b = protowire.AppendTag(b, mirrorEnabled, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	opts := proto.MarshalOptions{Deterministic: true}
	for _, name := range sortedKeys(st.Users) {
		u := proto.Clone(st.Users[name]).(*authpb.User)
		u.Password, u.Options = nil, nil
		v, err := opts.Marshal(u)
		if err != nil {
			return nil, fmt.Errorf("encode user %q: %w", name, err)
		}
		b = protowire.AppendTag(b, mirrorUser, protowire.BytesType)
		b = protowire.AppendBytes(b, v)
	}
	for _, name := range sortedKeys(st.Roles) {
		v, err := opts.Marshal(st.Roles[name])
		if err != nil {
			return nil, fmt.Errorf("encode role %q: %w", name, err)
		}
		b = protowire.AppendTag(b, mirrorRole, protowire.BytesType)
		b = protowire.AppendBytes(b, v)
	}
	return b, nil
}

// DecodeMirror decodes a copy made by EncodeMirror. An empty one is the
// state of a cluster that never used auth.
func DecodeMirror(data []byte) (*State, error) {
	st := &State{Users: map[string]*authpb.User{}, Roles: map[string]*authpb.Role{}}
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return nil, fmt.Errorf("decode auth mirror: %w", protowire.ParseError(n))
		}
		data = data[n:]
		switch {
		case typ == protowire.VarintType && (num == mirrorRevision || num == mirrorEnabled):
			v, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return nil, fmt.Errorf("decode auth mirror: %w", protowire.ParseError(n))
			}
			data = data[n:]
			if num == mirrorRevision {
				st.Revision = v
			} else {
				st.Enabled = v != 0
			}
		case typ == protowire.BytesType && (num == mirrorUser || num == mirrorRole):
			v, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return nil, fmt.Errorf("decode auth mirror: %w", protowire.ParseError(n))
			}
			data = data[n:]
			if num == mirrorUser {
				u := &authpb.User{}
				if err := proto.Unmarshal(v, u); err != nil {
					return nil, fmt.Errorf("decode auth mirror user: %w", err)
				}
				st.Users[string(u.Name)] = u
			} else {
				r := &authpb.Role{}
				if err := proto.Unmarshal(v, r); err != nil {
					return nil, fmt.Errorf("decode auth mirror role: %w", err)
				}
				st.Roles[string(r.Name)] = r
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, data)
			if n < 0 {
				return nil, fmt.Errorf("decode auth mirror: %w", protowire.ParseError(n))
			}
			data = data[n:]
		}
	}
	return st, nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// CheckFence decides at apply time whether a command may apply in the auth state
// st, the state of the range applying it, given how the command was checked
// where it entered: at auth revision rev for user (rev 0: no login), or,
// with noLogin, while auth was disabled. It returns the command's refusal,
// or nil.
//
// A request with a login was checked at rev: if the auth state moved since,
// the check may no longer hold (etcd's revision fence); where the verdict in
// the current state is plain (root, auth management), it decides, as etcd
// does, so that concurrent admin calls, each moving the revision, do not
// clash (Recheck). One checked while auth was disabled must be checked again
// if auth is enabled now (etcd refuses it then).
func CheckFence(st *State, rev uint64, user string, noLogin bool, req any) error {
	if noLogin && st.Enabled {
		return rpctypes.ErrGRPCAuthOldRevision
	}
	if rev == 0 || rev >= st.Revision {
		return nil
	}
	if user == "" {
		return rpctypes.ErrGRPCAuthOldRevision // from before users were recorded
	}
	return Recheck(st, user, req)
}
