package auth

import (
	"bytes"
	"fmt"
	"slices"
	"sort"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/synod-io/synod/internal/keys"
)

// What a lease lets a user do depends on the keys attached to it, as in
// etcd: revoking a lease deletes its keys, so a user may revoke it, keep it
// alive, or attach another key to it only with write permission on every
// key already attached (otherwise one user could keep another's keys alive,
// or pin a key of their own to another user's lease and so block its
// revocation); a user may list the leases only with read permission on every
// attached key of every lease.
//
// The attached keys are read from the attachment index (package keys,
// LeaseAttachmentKey), which is sorted by key: the walk jumps over every run
// of keys one permission covers, so its cost grows with the permissions a
// lease's keys touch, not with the number of keys.

// coverage is the union of the key intervals a user's permissions allow
// for one access, sorted and disjoint.
type coverage []interval

// coverageOf returns what user may access with a in st.
func (st *State) coverageOf(user string, a Access) coverage {
	u, ok := st.Users[user]
	if !ok {
		return nil
	}
	var ivs []interval
	for _, r := range u.Roles {
		role, ok := st.Roles[r]
		if !ok {
			continue
		}
		for _, p := range role.KeyPermission {
			if !grants(p.PermType, a) {
				continue
			}
			iv := toInterval(p.Key, p.RangeEnd)
			if iv.end != nil && bytes.Compare(iv.start, iv.end) >= 0 {
				continue
			}
			ivs = append(ivs, iv)
		}
	}
	slices.SortFunc(ivs, func(x, y interval) int { return bytes.Compare(x.start, y.start) })
	var out coverage
	for _, iv := range ivs {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if last.end == nil {
				break // the last interval reaches the end of the keyspace
			}
			if bytes.Compare(iv.start, last.end) <= 0 {
				if iv.end == nil || bytes.Compare(iv.end, last.end) > 0 {
					last.end = iv.end
				}
				continue
			}
		}
		out = append(out, iv)
	}
	return out
}

// find returns the interval of c that holds key.
func (c coverage) find(key []byte) (interval, bool) {
	// The first interval starting after key; the one before may hold it.
	i := sort.Search(len(c), func(i int) bool { return bytes.Compare(c[i].start, key) > 0 })
	if i == 0 {
		return interval{}, false
	}
	iv := c[i-1]
	if iv.end != nil && bytes.Compare(key, iv.end) >= 0 {
		return interval{}, false
	}
	return iv, true
}

// attachmentsCovered reports whether c covers every key attached to a lease
// in the attachment keys of [lo, hi) (one lease's, or every lease's), and
// how many attached keys it looked at.
func attachmentsCovered(r pebble.Reader, lo, hi []byte, c coverage) (ok bool, looked int, err error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return false, 0, fmt.Errorf("read lease attachments: %w", err)
	}
	defer it.Close()
	n := len(keys.LeaseAttachmentPrefix(0)) // every lease's prefix has this length
	var seek []byte
	for valid := it.First(); valid; {
		looked++
		k := it.Key()
		if len(k) < n {
			return false, looked, fmt.Errorf("lease attachment key %q is too short", k)
		}
		iv, ok := c.find(k[n:])
		if !ok {
			return false, looked, nil
		}
		if iv.end == nil {
			// The rest of this lease's keys are covered: on to the next.
			seek = keys.PrefixEnd(k[:n])
		} else {
			seek = append(append(seek[:0], k[:n]...), iv.end...)
		}
		if seek == nil {
			break
		}
		valid = it.SeekGE(seek)
	}
	return true, looked, it.Error()
}

// leaseKeysWritable reports whether user may write every key attached to
// lease id in r (true for a lease without keys or that does not exist).
func leaseKeysWritable(r pebble.Reader, st *State, user string, id int64) (bool, error) {
	if st.IsRoot(user) {
		return true, nil
	}
	p := keys.LeaseAttachmentPrefix(id)
	ok, _, err := attachmentsCovered(r, p, keys.PrefixEnd(p), st.coverageOf(user, Write))
	return ok, err
}

// allLeaseKeysReadable reports whether user may read every key attached to
// any lease in r.
func allLeaseKeysReadable(r pebble.Reader, st *State, user string) (bool, error) {
	if st.IsRoot(user) {
		return true, nil
	}
	p := keys.LeaseAttachmentPrefix(0)
	base := p[:len(p)-8] // the prefix of every lease's attachments
	ok, _, err := attachmentsCovered(r, base, keys.PrefixEnd(base), st.coverageOf(user, Read))
	return ok, err
}

// CheckLeaseUse checks, at apply, what a request authorized for user does
// to leases: a put (also inside a txn, either branch, nested) that
// attaches a key to a lease needs write permission on every key already
// attached to it, and so does a revoke (which deletes them). st is the auth
// state the request applies in, r the store before it applies. It returns
// etcd's ErrGRPCPermissionDenied, or a storage error.
func CheckLeaseUse(r pebble.Reader, st *State, user string, req any) error {
	if !st.Enabled || st.IsRoot(user) {
		return nil
	}
	var ids []int64
	switch req := req.(type) {
	case *pb.PutRequest:
		ids = appendPutLease(ids, req)
	case *pb.TxnRequest:
		ids = appendTxnLeases(ids, req)
	case *pb.LeaseRevokeRequest:
		ids = append(ids, req.ID)
	}
	if len(ids) == 0 {
		return nil
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	c := st.coverageOf(user, Write)
	for _, id := range ids {
		p := keys.LeaseAttachmentPrefix(id)
		ok, _, err := attachmentsCovered(r, p, keys.PrefixEnd(p), c)
		if err != nil {
			return err
		}
		if !ok {
			return rpctypes.ErrGRPCPermissionDenied
		}
	}
	return nil
}

// UsesLease reports whether req is one CheckLeaseUse has something to check
// in: a revoke, or a put with a lease (also inside a txn).
func UsesLease(req any) bool {
	switch req := req.(type) {
	case *pb.PutRequest:
		return req.Lease != 0
	case *pb.TxnRequest:
		return len(appendTxnLeases(nil, req)) > 0
	case *pb.LeaseRevokeRequest:
		return true
	}
	return false
}

func appendPutLease(ids []int64, r *pb.PutRequest) []int64 {
	if r != nil && r.Lease != 0 {
		ids = append(ids, r.Lease)
	}
	return ids
}

func appendTxnLeases(ids []int64, r *pb.TxnRequest) []int64 {
	if r == nil {
		return ids
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			switch o := op.Request.(type) {
			case *pb.RequestOp_RequestPut:
				ids = appendPutLease(ids, o.RequestPut)
			case *pb.RequestOp_RequestTxn:
				ids = appendTxnLeases(ids, o.RequestTxn)
			}
		}
	}
	return ids
}
