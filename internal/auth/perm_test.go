package auth

import (
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
)

func perm(t authpb.Permission_Type, key, end string) *authpb.Permission {
	p := &authpb.Permission{PermType: t, Key: []byte(key)}
	if end != "" {
		p.RangeEnd = []byte(end)
	}
	return p
}

func TestCovered(t *testing.T) {
	R, W, RW := authpb.Permission_READ, authpb.Permission_WRITE, authpb.Permission_READWRITE
	for _, tc := range []struct {
		name      string
		perms     []*authpb.Permission
		key, end  string
		access    Access
		wantAllow bool
	}{
		{"single key read", []*authpb.Permission{perm(R, "k", "")}, "k", "", Read, true},
		{"single key other key", []*authpb.Permission{perm(R, "k", "")}, "k2", "", Read, false},
		{"single key does not cover its prefix", []*authpb.Permission{perm(R, "k", "")}, "k", "l", Read, false},
		{"read does not grant write", []*authpb.Permission{perm(R, "k", "")}, "k", "", Write, false},
		{"write does not grant read", []*authpb.Permission{perm(W, "k", "")}, "k", "", Read, false},
		{"readwrite grants both (read)", []*authpb.Permission{perm(RW, "k", "")}, "k", "", Read, true},
		{"readwrite grants both (write)", []*authpb.Permission{perm(RW, "k", "")}, "k", "", Write, true},
		{"range covers key inside", []*authpb.Permission{perm(R, "a", "c")}, "b", "", Read, true},
		{"range end is exclusive", []*authpb.Permission{perm(R, "a", "c")}, "c", "", Read, false},
		{"range covers sub-range", []*authpb.Permission{perm(R, "a", "c")}, "a", "bz", Read, true},
		{"range does not cover wider range", []*authpb.Permission{perm(R, "a", "c")}, "a", "d", Read, false},
		{"prefix covers prefix", []*authpb.Permission{perm(R, "p/", "p0")}, "p/", "p0", Read, true},
		{"prefix covers key under it", []*authpb.Permission{perm(R, "p/", "p0")}, "p/x/y", "", Read, true},
		{"prefix does not cover shorter prefix", []*authpb.Permission{perm(R, "p/", "p0")}, "p", "q", Read, false},
		{"adjacent ranges merge", []*authpb.Permission{perm(R, "a", "b"), perm(R, "b", "c")}, "a", "c", Read, true},
		{"gap between ranges", []*authpb.Permission{perm(R, "a", "b"), perm(R, "bb", "c")}, "a", "c", Read, false},
		{"single key and range merge", []*authpb.Permission{perm(R, "a", ""), perm(R, "a\x00", "c")}, "a", "c", Read, true},
		{"mixed types merge for read", []*authpb.Permission{perm(R, "a", "b"), perm(RW, "b", "c")}, "a", "c", Read, true},
		{"write-only part breaks read", []*authpb.Permission{perm(R, "a", "b"), perm(W, "b", "c")}, "a", "c", Read, false},
		{"from-key perm covers from-key request", []*authpb.Permission{perm(R, "a", "\x00")}, "b", "\x00", Read, true},
		{"bounded perm never covers from-key", []*authpb.Permission{perm(R, "a", "zzzz")}, "b", "\x00", Read, false},
		{"all keys", []*authpb.Permission{perm(RW, "\x00", "\x00")}, "anything", "", Write, true},
		{"empty request range refused", []*authpb.Permission{perm(R, "a", "z")}, "c", "b", Read, false},
		{"no permissions", nil, "k", "", Read, false},
		{"empty key covered by from-empty", []*authpb.Permission{perm(R, "", "\x00")}, "", "\x00", Read, true},
		{"unsorted permissions", []*authpb.Permission{perm(R, "m", "z"), perm(R, "a", "m")}, "b", "y", Read, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var end []byte
			if tc.end != "" {
				end = []byte(tc.end)
			}
			if got := Covered(tc.perms, []byte(tc.key), end, tc.access); got != tc.wantAllow {
				t.Fatalf("Covered(%v, %q, %q): got %v, want %v", tc.perms, tc.key, tc.end, got, tc.wantAllow)
			}
		})
	}
}

func TestAllowedRootAndRoles(t *testing.T) {
	st := &State{
		Enabled: true,
		Users: map[string]*authpb.User{
			"root":  {Name: []byte("root"), Roles: []string{RootRole}},
			"alice": {Name: []byte("alice"), Roles: []string{"r1", "missing"}},
		},
		Roles: map[string]*authpb.Role{"r1": {Name: []byte("r1"), KeyPermission: []*authpb.Permission{perm(authpb.Permission_READ, "a", "b")}}},
	}
	if !st.Allowed("root", []byte("x"), []byte("\x00"), Write) {
		t.Fatal("root write everything: got denied, want allowed")
	}
	if !st.Allowed("alice", []byte("a1"), nil, Read) {
		t.Fatal("alice read a1: got denied, want allowed")
	}
	if st.Allowed("alice", []byte("a1"), nil, Write) {
		t.Fatal("alice write a1: got allowed, want denied")
	}
	if st.Allowed("bob", []byte("a1"), nil, Read) {
		t.Fatal("unknown user read: got allowed, want denied")
	}
}

// TestReservedKeysNeedRoot checks that the keys reserved for Synod's
// services are covered by root, and by permissions granted on reserved
// keys themselves, never by a broader one (every key).
func TestReservedKeysNeedRoot(t *testing.T) {
	st := &State{
		Enabled: true,
		Users: map[string]*authpb.User{
			"root":  {Name: []byte("root"), Roles: []string{RootRole}},
			"alice": {Name: []byte("alice"), Roles: []string{"all"}},
			"bob":   {Name: []byte("bob"), Roles: []string{"all", "api"}},
		},
		Roles: map[string]*authpb.Role{
			"all": {Name: []byte("all"), KeyPermission: []*authpb.Permission{perm(authpb.Permission_READWRITE, "\x00", "\x00")}},
			"api": {Name: []byte("api"), KeyPermission: []*authpb.Permission{perm(authpb.Permission_READWRITE, "\x01synod/limit/api/", "\x01synod/limit/api0")}},
		},
	}
	if !st.Allowed("bob", []byte("\x01synod/limit/api/"), []byte("\x01synod/limit/api0"), Write) {
		t.Fatal("bob, granted limit api's reserved prefix, write to it: got denied, want allowed")
	}
	if st.Allowed("bob", []byte("\x01synod/limit/"), []byte("\x01synod/limit0"), Read) {
		t.Fatal("bob read every limit: got allowed, want denied (granted limit api only)")
	}
	if !st.Allowed("alice", []byte("a"), []byte("\x00"), Read) {
		t.Fatal("alice read from a: got denied, want allowed")
	}
	for _, r := range [][2]string{{"\x01synod/queue/q/job/1", ""}, {"\x00", "\x00"}} {
		if st.Allowed("alice", []byte(r[0]), []byte(r[1]), Read) {
			t.Fatalf("alice read %q-%q: got allowed, want denied (reserved keys)", r[0], r[1])
		}
		if !st.Allowed("root", []byte(r[0]), []byte(r[1]), Read) {
			t.Fatalf("root read %q-%q: got denied, want allowed", r[0], r[1])
		}
	}
}
