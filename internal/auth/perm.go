package auth

import (
	"bytes"
	"slices"

	"go.etcd.io/etcd/api/v3/authpb"

	"github.com/synod-io/synod/internal/keys"
)

// Access is what a request does to keys.
type Access int

// Accesses.
const (
	Read Access = iota
	Write
)

// interval is the half-open key interval [start, end); end nil means
// unbounded.
type interval struct {
	start, end []byte
}

// toInterval turns etcd's (key, range_end) into an interval: an empty
// range_end is the single key, "\x00" everything from key on.
func toInterval(key, rangeEnd []byte) interval {
	switch {
	case len(rangeEnd) == 0:
		return interval{start: key, end: append(slices.Clip(key), 0)}
	case len(rangeEnd) == 1 && rangeEnd[0] == 0:
		return interval{start: key}
	}
	return interval{start: key, end: rangeEnd}
}

// grants reports whether a permission of type t allows access a.
func grants(t authpb.Permission_Type, a Access) bool {
	switch t {
	case authpb.Permission_READWRITE:
		return true
	case authpb.Permission_READ:
		return a == Read
	case authpb.Permission_WRITE:
		return a == Write
	}
	return false
}

// Covered reports whether the union of perms allowing access a covers every
// key of (key, rangeEnd), in etcd's encoding of single keys, ranges and
// "from key" (rangeEnd "\x00"). An empty request interval (rangeEnd <= key)
// holds no key and is refused like etcd refuses it: it needs no data but
// would otherwise let any user probe the store.
func Covered(perms []*authpb.Permission, key, rangeEnd []byte, a Access) bool {
	want := toInterval(key, rangeEnd)
	if want.end != nil && bytes.Compare(want.start, want.end) >= 0 {
		return false
	}
	var ivs []interval
	for _, p := range perms {
		if !grants(p.PermType, a) {
			continue
		}
		iv := toInterval(p.Key, p.RangeEnd)
		if iv.end != nil && bytes.Compare(iv.start, iv.end) >= 0 {
			continue
		}
		ivs = append(ivs, iv)
	}
	slices.SortFunc(ivs, func(x, y interval) int { return bytes.Compare(x.start, y.start) })
	// Walk the sorted permissions extending the covered prefix of want.
	cur := want.start
	for _, iv := range ivs {
		if bytes.Compare(iv.start, cur) > 0 {
			break // a gap before iv: cur is not covered
		}
		if iv.end == nil {
			return true
		}
		if bytes.Compare(iv.end, cur) > 0 {
			cur = iv.end
		}
		if want.end != nil && bytes.Compare(cur, want.end) >= 0 {
			return true
		}
	}
	return false
}

// Interval is a half-open key interval [Start, End); a nil End is
// unbounded.
type Interval struct {
	Start, End []byte
}

// Coverage returns the key intervals user may access with a in st, sorted
// and disjoint: the union of the permissions of the user's roles. Root's
// permissions are not in its roles: check IsRoot first.
func (st *State) Coverage(user string, a Access) []Interval {
	c := st.coverageOf(user, a)
	out := make([]Interval, len(c))
	for i, iv := range c {
		out[i] = Interval{Start: iv.start, End: iv.end}
	}
	return out
}

// Allowed reports whether user may access (key, rangeEnd) in state st:
// root may do everything; others need their roles' permissions to cover the
// whole interval. Of the keys reserved for Synod's services
// (keys.ReservedPrefix), only permissions granted on reserved keys
// themselves cover any: a role given every key does not reach the queues'
// jobs, a role given $'\x01synod/limit/api/' uses limit api.
func (st *State) Allowed(user string, key, rangeEnd []byte, a Access) bool {
	u, ok := st.Users[user]
	if !ok {
		return false
	}
	var perms []*authpb.Permission
	for _, r := range u.Roles {
		if r == RootRole {
			return true
		}
		if role, ok := st.Roles[r]; ok {
			perms = append(perms, role.KeyPermission...)
		}
	}
	if keys.IntersectsReserved(key, rangeEnd) {
		explicit := perms[:0:0]
		for _, p := range perms {
			if bytes.HasPrefix(p.Key, keys.ReservedPrefix) {
				explicit = append(explicit, p)
			}
		}
		perms = explicit
	}
	return Covered(perms, key, rangeEnd, a)
}
