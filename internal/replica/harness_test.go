package replica

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/rangesm"
	"github.com/synod-io/synod/internal/systemrange"
)

const testRange keys.RangeID = keys.FirstDataRangeID

// network is a deterministic, single-goroutine cluster of replicas of one
// range. Messages wait in a queue until deliver is called; snapshots are
// streamed synchronously.
type network struct {
	t        *testing.T
	ids      []uint64
	fs       map[uint64]*vfs.MemFS
	dbs      map[uint64]*pebble.DB
	replicas map[uint64]*Replica
	cfg      Config

	queue     []*pb.Message
	snapshots []pendingSnap
	// cut[a][b] drops messages from a to b.
	cut     map[uint64]map[uint64]bool
	nextReq uint64
	applied map[uint64][]ApplyOutput
}

type pendingSnap struct {
	from uint64
	msg  *pb.Message
	data *IncomingSnapshot
}

func newNetwork(t *testing.T, n int, cfg Config) *network {
	t.Helper()
	nw := &network{
		t: t, cfg: cfg,
		fs: map[uint64]*vfs.MemFS{}, dbs: map[uint64]*pebble.DB{}, replicas: map[uint64]*Replica{},
		cut: map[uint64]map[uint64]bool{}, applied: map[uint64][]ApplyOutput{},
	}
	for i := 1; i <= n; i++ {
		nw.ids = append(nw.ids, uint64(i))
	}
	for _, id := range nw.ids {
		nw.fs[id] = vfs.NewCrashableMem()
		db := nw.openDB(id)
		b := db.NewBatch()
		if err := Bootstrap(b, testRange, nw.ids); err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(pebble.Sync); err != nil {
			t.Fatal(err)
		}
		b.Close()
		nw.start(id, db)
	}
	t.Cleanup(nw.close)
	return nw
}

func (nw *network) openDB(id uint64) *pebble.DB {
	db, err := pebble.Open("/data", &pebble.Options{FS: nw.fs[id], Logger: quietLogger{}})
	if err != nil {
		nw.t.Fatalf("open pebble of %d: %v", id, err)
	}
	return db
}

func (nw *network) start(id uint64, db *pebble.DB) {
	cfg := nw.cfg
	cfg.RangeID, cfg.ID, cfg.DB = testRange, id, db
	cfg.StateMachine = newMachine(nw.t, id, db)
	r, err := New(cfg)
	if err != nil {
		nw.t.Fatalf("start replica %d: %v", id, err)
	}
	nw.dbs[id], nw.replicas[id] = db, r
}

// stop shuts a replica down cleanly.
func (nw *network) stop(id uint64) {
	r := nw.replicas[id]
	if r == nil {
		return
	}
	r.Stop()
	if err := nw.dbs[id].Close(); err != nil {
		nw.t.Fatalf("close pebble of %d: %v", id, err)
	}
	delete(nw.replicas, id)
	delete(nw.dbs, id)
}

// crash stops a replica keeping only what it had synced.
func (nw *network) crash(id uint64) {
	crashed := nw.fs[id].CrashClone(vfs.CrashCloneCfg{})
	nw.stop(id)
	nw.fs[id] = crashed
	nw.dropMessagesTo(id)
}

func (nw *network) restart(id uint64) {
	nw.start(id, nw.openDB(id))
}

func (nw *network) close() {
	for _, id := range nw.ids {
		nw.stop(id)
	}
	for _, s := range nw.snapshots {
		s.data.Close()
	}
}

func (nw *network) dropMessagesTo(id uint64) {
	kept := nw.queue[:0]
	for _, m := range nw.queue {
		if m.GetTo() != id {
			kept = append(kept, m)
		}
	}
	nw.queue = kept
}

// isolate cuts id off from every other replica, or reconnects it.
func (nw *network) isolate(id uint64, isolated bool) {
	for _, other := range nw.ids {
		if other == id {
			continue
		}
		for _, pair := range [][2]uint64{{id, other}, {other, id}} {
			if nw.cut[pair[0]] == nil {
				nw.cut[pair[0]] = map[uint64]bool{}
			}
			nw.cut[pair[0]][pair[1]] = isolated
		}
	}
}

// sender implements Sender for one replica.
type sender struct {
	nw   *network
	from uint64
}

func (s sender) Send(_ keys.RangeID, msgs []*pb.Message) {
	for _, m := range msgs {
		if s.nw.cut[s.from][m.GetTo()] {
			continue
		}
		s.nw.queue = append(s.nw.queue, m)
	}
}

func (s sender) SendSnapshot(m *pb.Message, snap *OutgoingSnapshot) {
	nw := s.nw
	defer snap.Close()
	to := m.GetTo()
	db, ok := nw.dbs[to]
	if !ok || nw.cut[s.from][to] {
		nw.replicas[s.from].ReportSnapshot(to, false)
		return
	}
	in := NewIncomingSnapshot(db, testRange)
	err := snap.Iterate(64, func(kvs []KeyValue) error { // tiny chunks: many frames
		for _, kv := range kvs {
			if err := in.Add(kv.Key, kv.Value); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		in.Close()
		nw.t.Fatalf("stream snapshot: %v", err)
	}
	nw.snapshots = append(nw.snapshots, pendingSnap{from: s.from, msg: m, data: in})
}

// ready runs HandleReady on every replica until none has work left, and
// returns whether anything happened.
func (nw *network) ready() bool {
	progress := false
	for _, id := range nw.ids {
		r := nw.replicas[id]
		for r != nil && r.HasReady() {
			out, err := r.HandleReady(sender{nw, id})
			if err != nil {
				nw.t.Fatalf("replica %d: %v", id, err)
			}
			out.Complete()
			nw.applied[id] = append(nw.applied[id], out)
			progress = true
		}
	}
	return progress
}

// deliver hands every queued message to its recipient.
func (nw *network) deliver() bool {
	q, snaps := nw.queue, nw.snapshots
	nw.queue, nw.snapshots = nil, nil
	for _, m := range q {
		if r := nw.replicas[m.GetTo()]; r != nil {
			if err := r.Step(m); err != nil {
				nw.t.Fatalf("step %s on %d: %v", m.GetType(), m.GetTo(), err)
			}
		}
	}
	for _, s := range snaps {
		r := nw.replicas[s.msg.GetTo()]
		if r == nil {
			s.data.Close()
			continue
		}
		if err := r.StepSnapshot(s.msg, s.data); err != nil {
			nw.t.Fatalf("step snapshot: %v", err)
		}
		nw.replicas[s.from].ReportSnapshot(s.msg.GetTo(), true)
	}
	return len(q) > 0 || len(snaps) > 0
}

// stabilize exchanges messages until the network is quiet.
func (nw *network) stabilize() {
	for i := 0; i < 10000; i++ {
		r, d := nw.ready(), nw.deliver()
		if !r && !d {
			return
		}
	}
	nw.t.Fatalf("network did not stabilize")
}

// tick ticks every running replica n times, stabilizing after each tick.
func (nw *network) tick(n int) {
	for i := 0; i < n; i++ {
		for _, id := range nw.ids {
			if r := nw.replicas[id]; r != nil {
				r.Tick()
			}
		}
		nw.stabilize()
	}
}

func (nw *network) leader() uint64 {
	for _, id := range nw.ids {
		if r := nw.replicas[id]; r != nil && r.Published().Lead == id {
			return id
		}
	}
	return 0
}

func (nw *network) elect(id uint64) {
	nw.t.Helper()
	if err := nw.replicas[id].Campaign(); err != nil {
		nw.t.Fatal(err)
	}
	nw.stabilize()
	if got := nw.leader(); got != id {
		nw.t.Fatalf("leader: got %d, want %d", got, id)
	}
}

// propose submits a command on replica id and returns its proposal.
func (nw *network) propose(id uint64, kind raftcmd.Kind, req proto.Message) *Proposal {
	nw.t.Helper()
	payload, err := proto.Marshal(req)
	if err != nil {
		nw.t.Fatal(err)
	}
	nw.nextReq++
	cmd := raftcmd.Command{RangeID: testRange, Proposer: id, RequestID: nw.nextReq, Kind: kind, Payload: payload}
	p := NewProposal(nw.nextReq, cmd.Encode(nil))
	nw.replicas[id].Propose(p)
	return p
}

func (nw *network) put(id uint64, key, value string) *Proposal {
	return nw.propose(id, raftcmd.KindPut, &etcdpb.PutRequest{Key: []byte(key), Value: []byte(value)})
}

// putKeys puts key(0) to key(n-1) through replica id, one at a time, each
// applied everywhere before the next.
func (nw *network) putKeys(id uint64, n int) {
	for i := 0; i < n; i++ {
		nw.put(id, key(i), "v")
		nw.stabilize()
	}
}

// result returns a completed proposal's result, failing if it has none.
func result(t *testing.T, p *Proposal) Result {
	t.Helper()
	select {
	case res := <-p.Done():
		return res
	default:
		t.Fatalf("proposal %d not completed", p.RequestID)
		return Result{}
	}
}

// readDone reports whether rd has completed, failing the test if it
// completed with an error.
func readDone(t *testing.T, rd *Read) bool {
	t.Helper()
	select {
	case err := <-rd.Done():
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return true
	default:
		return false
	}
}

// get reads key on replica id's local state, through the replica's view
// and index of live keys, and checks that a read of the store alone agrees.
func (nw *network) get(id uint64, key string) (string, bool) {
	nw.t.Helper()
	db := nw.dbs[id]
	st, err := LoadAppliedState(db, testRange)
	if err != nil {
		nw.t.Fatal(err)
	}
	req := &etcdpb.RangeRequest{Key: []byte(key)}
	want, err := kv.Range(db, nil, st.KV, req)
	if err != nil {
		nw.t.Fatalf("get %q on %d: %v", key, id, err)
	}
	v := nw.replicas[id].View()
	defer v.Close()
	if datarange.Index(v.Derived()) == nil || datarange.Index(v.Derived()).Revision() != st.KV.Revision {
		nw.t.Fatalf("replica %d: view without an index at revision %d", id, st.KV.Revision)
	}
	resp, err := kv.Range(v, datarange.Index(v.Derived()), v.Pub.KV, req)
	if err != nil || !proto.Equal(resp, want) {
		nw.t.Fatalf("replica %d: get %q through the index: got %v, %v, want %v", id, key, resp, err, want)
	}
	if len(resp.Kvs) == 0 {
		return "", false
	}
	return string(resp.Kvs[0].Value), true
}

func (nw *network) mustGet(id uint64, key, want string) {
	nw.t.Helper()
	got, ok := nw.get(id, key)
	if !ok || got != want {
		nw.t.Fatalf("replica %d: get %q: got %q (found %v), want %q", id, key, got, ok, want)
	}
}

func key(i int) string { return fmt.Sprintf("k%04d", i) }

// quietLogger keeps Pebble's informational messages out of test output.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// addUninitialized starts a replica with no state, as on a joining node.
func (nw *network) addUninitialized(id uint64) {
	nw.ids = append(nw.ids, id)
	nw.fs[id] = vfs.NewCrashableMem()
	cfg := nw.cfg
	cfg.Uninitialized = true
	cfg.RangeID, cfg.ID, cfg.DB = testRange, id, nw.openDB(id)
	cfg.StateMachine = newMachine(nw.t, id, cfg.DB)
	r, err := New(cfg)
	if err != nil {
		nw.t.Fatalf("start uninitialized replica %d: %v", id, err)
	}
	nw.dbs[id], nw.replicas[id] = cfg.DB, r
}

// confChange proposes a single configuration change on replica via, with a
// member record in its context, and returns the proposal.
func (nw *network) confChange(via uint64, typ pb.ConfChangeType, id uint64) *Proposal {
	nw.t.Helper()
	nw.nextReq++
	rec := cluster.Member{ID: id, Name: fmt.Sprintf("r%d", id)}
	cmd := raftcmd.Command{RangeID: testRange, Proposer: via, RequestID: nw.nextReq, Kind: raftcmd.KindMemberChange, Payload: rec.Encode()}
	cc := &pb.ConfChangeV2{
		Changes: []*pb.ConfChangeSingle{{Type: typ.Enum(), NodeId: proto.Uint64(id)}},
		Context: cmd.Encode(nil),
	}
	p := NewProposal(nw.nextReq, nil)
	nw.replicas[via].ProposeConfChange(p, cc)
	return p
}

// newMachine returns the state machine of a test replica (testMachine).
func newMachine(t testing.TB, id uint64, db *pebble.DB) *testMachine {
	t.Helper()
	m, err := datarange.New(datarange.Config{RangeID: testRange, NodeID: id, DB: db})
	if err != nil {
		t.Fatal(err)
	}
	return &testMachine{sys: systemrange.New(systemrange.Config{}), data: m}
}

// testMachine applies, on the one range of a test network, the commands of
// both the system range and a data range, as the replica tests mix them
// (member records, auth, KV). After an auth or alarm command it hands the
// data range's machine the new system state in the same batch, as the
// system range hands the data ranges every change.
type testMachine struct {
	sys  *systemrange.Machine
	data *datarange.Machine
}

func (m *testMachine) Load(r pebble.Reader, st *AppliedState) error {
	if err := m.sys.Load(r, st); err != nil {
		return err
	}
	return m.data.Load(r, st)
}

func (m *testMachine) Published() any { return m.data.Published() }

func (m *testMachine) Begin(b *pebble.Batch, st *AppliedState, out *rangesm.Effects) rangesm.BatchApplier {
	return &testBatch{b: b, sys: m.sys.Begin(b, st, out), data: m.data.Begin(b, st, out)}
}

type testBatch struct {
	b         *pebble.Batch
	sys, data rangesm.BatchApplier
}

func (t *testBatch) Apply(cmd raftcmd.Command, index, term uint64) (Result, error) {
	if !cmd.Kind.System() {
		return t.data.Apply(cmd, index, term)
	}
	res, err := t.sys.Apply(cmd, index, term)
	if err != nil || res.Err != nil || cmd.Kind == raftcmd.KindAuthenticate {
		return res, err
	}
	as, err := auth.Load(t.b)
	if err != nil {
		return Result{}, err
	}
	mirror, err := auth.EncodeMirror(as)
	if err != nil {
		return Result{}, err
	}
	noSpace, err := cluster.NoSpace(t.b)
	if err != nil {
		return Result{}, err
	}
	ss := raftcmd.SystemState{Index: index, AuthMirror: mirror, NoSpace: noSpace}
	hand := raftcmd.Command{RangeID: cmd.RangeID, Kind: raftcmd.KindSystemState, Payload: raftcmd.EncodeSystemState(ss)}
	if r, err := t.data.Apply(hand, index, term); err != nil || r.Err != nil {
		return Result{}, fmt.Errorf("hand the data machine the system state: %v %v", err, r.Err)
	}
	return res, nil
}

func (t *testBatch) ConfChange(cc *pb.ConfChangeV2, cmd raftcmd.Command) error {
	return t.sys.ConfChange(cc, cmd)
}

func (t *testBatch) Finish() error {
	if err := t.sys.Finish(); err != nil {
		return err
	}
	return t.data.Finish()
}

func (t *testBatch) Committed() error {
	if err := t.sys.Committed(); err != nil {
		return err
	}
	return t.data.Committed()
}

func (t *testBatch) Close() {
	t.sys.Close()
	t.data.Close()
}
