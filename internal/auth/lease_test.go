package auth

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/synod-io/synod/internal/keys"
)

func attach(t *testing.T, db *pebble.DB, id int64, ks ...string) {
	t.Helper()
	for _, k := range ks {
		if err := db.Set(keys.LeaseAttachmentKey(id, []byte(k)), nil, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLeaseKeyWalkMatchesPerKeyChecks compares the walk over a lease's
// attached keys, which jumps over every run of keys one permission covers,
// with checking every key on its own, for random permissions and keys.
func TestLeaseKeyWalkMatchesPerKeyChecks(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	alphabet := []byte{'a', 'b', 'c', 0, 0xff}
	randKey := func() []byte {
		k := make([]byte, 1+rng.IntN(3))
		for i := range k {
			k[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return k
	}
	for round := range 300 {
		db := openMem(t)
		mustApply(t, db, &pb.AuthUserAddRequest{Name: "u", HashedPassword: "h"})
		mustApply(t, db, &pb.AuthRoleAddRequest{Name: "r"})
		mustApply(t, db, &pb.AuthUserGrantRoleRequest{User: "u", Role: "r"})
		for range rng.IntN(5) {
			p := &authpb.Permission{PermType: authpb.Permission_Type(rng.IntN(3)), Key: randKey()}
			switch rng.IntN(3) {
			case 1:
				p.RangeEnd = randKey()
			case 2:
				p.RangeEnd = []byte{0}
			}
			mustApply(t, db, &pb.AuthRoleGrantPermissionRequest{Name: "r", Perm: p})
		}
		st, err := Load(db)
		if err != nil {
			t.Fatal(err)
		}
		leases := map[int64][]string{}
		for id := int64(1); id <= 3; id++ {
			for range rng.IntN(6) {
				k := string(randKey())
				leases[id] = append(leases[id], k)
				attach(t, db, id, k)
			}
		}
		allRead := true
		for id := int64(1); id <= 4; id++ {
			want := true
			for _, k := range leases[id] {
				want = want && st.Allowed("u", []byte(k), nil, Write)
				allRead = allRead && st.Allowed("u", []byte(k), nil, Read)
			}
			got, err := leaseKeysWritable(db, st, "u", id)
			if err != nil || got != want {
				t.Fatalf("round %d: lease %d with keys %q, permissions %v: got writable %v (%v), want %v",
					round, id, leases[id], st.Roles["r"].KeyPermission, got, err, want)
			}
		}
		got, err := allLeaseKeysReadable(db, st, "u")
		if err != nil || got != allRead {
			t.Fatalf("round %d: leases %v, permissions %v: got all readable %v (%v), want %v",
				round, leases, st.Roles["r"].KeyPermission, got, err, allRead)
		}
	}
}

// TestLeaseKeyWalkSkipsCoveredRuns checks the cost: a lease holding many
// keys under one permitted prefix is judged in a few seeks.
func TestLeaseKeyWalkSkipsCoveredRuns(t *testing.T) {
	db := authDB(t, true) // alice may read and write "a"
	mustApply(t, db, &pb.AuthRoleGrantPermissionRequest{Name: "a", Perm: &authpb.Permission{
		PermType: authpb.Permission_WRITE, Key: []byte("app/"), RangeEnd: []byte("app0")}})
	st, err := Load(db)
	if err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	for i := range 20000 {
		if err := b.Set(keys.LeaseAttachmentKey(9, fmt.Appendf(nil, "app/%06d", i)), nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}
	attach(t, db, 9, "a")
	p := keys.LeaseAttachmentPrefix(9)
	ok, looked, err := attachmentsCovered(db, p, keys.PrefixEnd(p), st.coverageOf("alice", Write))
	if err != nil || !ok {
		t.Fatalf("alice writes a lease holding a and 20,000 keys under app/: got %v, %v, want true", ok, err)
	}
	if looked != 2 {
		t.Fatalf("keys looked at to judge a lease with 20,001 keys under two permissions: got %d, want 2", looked)
	}
	attach(t, db, 9, "app0")
	if ok, err := leaseKeysWritable(db, st, "alice", 9); err != nil || ok {
		t.Fatalf("alice writes a lease also holding app0: got %v, %v, want false", ok, err)
	}
}

func TestCheckLeaseUse(t *testing.T) {
	db := authDB(t, true) // alice may read and write "a"
	attach(t, db, 1, "a")
	attach(t, db, 2, "a", "secret")
	st, err := Load(db)
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string, lease int64) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Lease: lease}}}
	}
	denied := rpctypes.ErrGRPCPermissionDenied
	for _, c := range []struct {
		what string
		user string
		req  any
		want error
	}{
		{"put without a lease", "alice", &pb.PutRequest{Key: []byte("a")}, nil},
		{"put on a lease of writable keys", "alice", &pb.PutRequest{Key: []byte("a"), Lease: 1}, nil},
		{"put on a lease holding secret", "alice", &pb.PutRequest{Key: []byte("a"), Lease: 2}, denied},
		{"put on a lease that does not exist", "alice", &pb.PutRequest{Key: []byte("a"), Lease: 3}, nil},
		{"root put on a lease holding secret", "root", &pb.PutRequest{Key: []byte("a"), Lease: 2}, nil},
		{"txn put on it in the failure branch", "alice", &pb.TxnRequest{Success: []*pb.RequestOp{put("a", 1)}, Failure: []*pb.RequestOp{put("a", 2)}}, denied},
		{"txn put on it nested", "alice", &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Failure: []*pb.RequestOp{put("a", 2)}}}}}}, denied},
		{"txn put on writable leases", "alice", &pb.TxnRequest{Success: []*pb.RequestOp{put("a", 1), put("a", 1)}}, nil},
		{"revoke a lease of writable keys", "alice", &pb.LeaseRevokeRequest{ID: 1}, nil},
		{"revoke a lease holding secret", "alice", &pb.LeaseRevokeRequest{ID: 2}, denied},
		{"delete (no lease)", "alice", &pb.DeleteRangeRequest{Key: []byte("a")}, nil},
	} {
		if got := UsesLease(c.req); got != (c.what != "put without a lease" && c.what != "delete (no lease)") {
			t.Errorf("%s: UsesLease got %v", c.what, got)
		}
		if err := CheckLeaseUse(db, st, c.user, c.req); !errors.Is(err, c.want) {
			t.Errorf("%s as %s: got error %v, want %v", c.what, c.user, err, c.want)
		}
	}
}
