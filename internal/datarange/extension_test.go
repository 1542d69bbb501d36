package datarange

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/lease"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangesm"
)

// tally is a toy extension: its command puts the key its payload names,
// through the KV applier, and refuses an empty payload; it records the
// leases revoked and counts its loads and commits.
type tally struct {
	loads, commits int
	revoked        []int64
}

func (x *tally) Name() string             { return "tally" }
func (x *tally) Kinds() []raftcmd.Kind    { return []raftcmd.Kind{raftcmd.KindQueueFirst} }
func (x *tally) Load(pebble.Reader) error { x.loads++; return nil }
func (x *tally) Committed()               { x.commits++ }
func (x *tally) LeaseRevoked(env *Env, id int64) error {
	x.revoked = append(x.revoked, id)
	env.Effects.Extensions = append(env.Effects.Extensions, fmt.Sprintf("revoked %x", id))
	return nil
}
func (x *tally) Apply(env *Env, cmd raftcmd.Command) (Result, error) {
	if len(cmd.Payload) == 0 {
		return Result{Err: status.Error(codes.InvalidArgument, "tally: empty key")}, nil
	}
	resp, err := env.KV.Put(&etcdpb.PutRequest{Key: cmd.Payload, Value: []byte("x")})
	if err != nil {
		return Result{}, err
	}
	env.Effects.Extensions = append(env.Effects.Extensions, fmt.Sprintf("put %s at %d", cmd.Payload, env.Index))
	return Result{Resp: resp}, nil
}

// applyBatch applies cmds in one batch as a replica would, and commits it.
func applyBatch(t *testing.T, db *pebble.DB, m *Machine, st *rangesm.AppliedState, index uint64, cmds ...raftcmd.Command) ([]Result, rangesm.Effects) {
	t.Helper()
	var out rangesm.Effects
	b := db.NewIndexedBatch()
	defer b.Close()
	ba := m.Begin(b, st, &out)
	defer ba.Close()
	var res []Result
	for i, c := range cmds {
		r, err := ba.Apply(c, index+uint64(i), 2)
		if err != nil {
			t.Fatalf("apply %s: %v", c.Kind, err)
		}
		res = append(res, r)
	}
	if err := ba.Finish(); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if err := ba.Committed(); err != nil {
		t.Fatal(err)
	}
	return res, out
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExtensionsApplyTheirKinds(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	x := &tally{}
	m, err := New(Config{RangeID: keys.FirstDataRangeID, NodeID: 1, DB: db, Extensions: []Extension{x}})
	if err != nil {
		t.Fatal(err)
	}
	st := rangesm.AppliedState{KV: kv.Meta{Revision: 1}}
	if err := m.Load(db, &st); err != nil {
		t.Fatal(err)
	}
	if x.loads != 1 {
		t.Fatalf("loads: got %d, want 1", x.loads)
	}

	// A KV put, the extension's command, and one it refuses.
	cmd := func(kind raftcmd.Kind, payload []byte) raftcmd.Command {
		return raftcmd.Command{RangeID: 2, Proposer: 1, RequestID: 1, Kind: kind, Payload: payload}
	}
	res, out := applyBatch(t, db, m, &st, 11,
		cmd(raftcmd.KindPut, mustMarshal(t, &etcdpb.PutRequest{Key: []byte("a"), Value: []byte("1")})),
		cmd(raftcmd.KindQueueFirst, []byte("b")),
		cmd(raftcmd.KindQueueFirst, nil))
	if res[1].Err != nil || res[2].Err == nil {
		t.Fatalf("results: got %v and %v, want the second applied and the third refused", res[1].Err, res[2].Err)
	}
	if st.KV.Revision != 3 {
		t.Fatalf("revision: got %d, want 3 (the refused command takes none)", st.KV.Revision)
	}
	if len(out.Events) != 2 || string(out.Events[1].KV.Key) != "b" {
		t.Fatalf("events: got %v, want puts of a and b", out.Events)
	}
	if want := []any{"put b at 12"}; fmt.Sprint(out.Extensions) != fmt.Sprint(want) {
		t.Fatalf("extension effects: got %v, want %v", out.Extensions, want)
	}
	if got := Index(m.Published()).Revision(); got != 3 {
		t.Fatalf("index revision: got %d, want 3", got)
	}
	if x.commits != 1 {
		t.Fatalf("commits: got %d, want 1", x.commits)
	}

	// A lease revocation tells the extension, in the same batch.
	grant := cmd(raftcmd.KindLeaseGrant, mustMarshal(t, &etcdpb.LeaseGrantRequest{ID: 7, TTL: 10}))
	revoke := cmd(raftcmd.KindLeaseRevoke, mustMarshal(t, &etcdpb.LeaseRevokeRequest{ID: 7}))
	res, out = applyBatch(t, db, m, &st, 14, grant, revoke)
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("lease command: %v", r.Err)
		}
	}
	if fmt.Sprint(x.revoked) != "[7]" || fmt.Sprint(out.Extensions) != "[revoked 7]" {
		t.Fatalf("revocations seen: got %v (effects %v), want [7]", x.revoked, out.Extensions)
	}
	if ok, err := (lease.Table{RW: db}).Exists(7); err != nil || ok {
		t.Fatalf("lease 7 after its revocation: exists %v (%v)", ok, err)
	}
}

func TestExtensionsMayNotShareKinds(t *testing.T) {
	_, err := New(Config{Extensions: []Extension{&tally{}, &tally{}}})
	if err == nil {
		t.Fatal("two extensions of one kind: got no error")
	}
	if _, err := New(Config{Extensions: []Extension{&lowKind{}}}); err == nil {
		t.Fatal("an extension claiming a KV command kind: got no error")
	}
}

type lowKind struct{ tally }

func (*lowKind) Kinds() []raftcmd.Kind { return []raftcmd.Kind{raftcmd.KindPut} }

// TestEnvHolds checks which etcd key ranges lie in a range's span.
func TestEnvHolds(t *testing.T) {
	whole := &Env{}
	part := &Env{Start: []byte("b"), End: []byte("m")}
	for _, tc := range []struct {
		env      *Env
		key, end string
		want     bool
	}{
		{whole, "a", "", true},
		{whole, "a", "\x00", true},
		{part, "b", "", true},
		{part, "a", "", false},
		{part, "l\xff", "", true},
		{part, "m", "", false},
		{part, "c", "m", true},
		{part, "c", "n", false},
		{part, "c", "\x00", false},
		{&Env{Start: []byte("b")}, "c", "\x00", true},
	} {
		if got := tc.env.Holds([]byte(tc.key), []byte(tc.end)); got != tc.want {
			t.Errorf("span [%q, %q) holds [%q, %q): got %v, want %v", tc.env.Start, tc.env.End, tc.key, tc.end, got, tc.want)
		}
	}
}
