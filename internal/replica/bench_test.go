package replica

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/storage"
)

// The benchmarks drive a single-node replica on the production Pebble
// options (storage.Open): on an in-memory filesystem to measure the CPU of
// the replica loop, or on the test's temporary directory to include fsync.

// nullSender drops messages: a single-node range sends none that matter.
type nullSender struct{}

func (nullSender) Send(keys.RangeID, []*pb.Message)                {}
func (nullSender) SendSnapshot(_ *pb.Message, s *OutgoingSnapshot) { s.Close() }

// benchReplica is a single-node replica that has elected itself.
type benchReplica struct {
	b     testing.TB
	db    *pebble.DB
	r     *Replica
	reqID uint64
}

func newBenchReplica(b testing.TB, onDisk bool) *benchReplica {
	b.Helper()
	opts := storage.Options{Dir: "/data", FS: vfs.NewMem()}
	if onDisk {
		opts = storage.Options{Dir: b.TempDir()}
	}
	db, err := storage.Open(opts)
	if err != nil {
		b.Fatal(err)
	}
	batch := db.NewBatch()
	if err := Bootstrap(batch, testRange, []uint64{1}); err != nil {
		b.Fatal(err)
	}
	if err := batch.Commit(pebble.Sync); err != nil {
		b.Fatal(err)
	}
	_ = batch.Close()
	r, err := New(Config{RangeID: testRange, ID: 1, DB: db, StateMachine: newMachine(b, 1, db)})
	if err != nil {
		b.Fatal(err)
	}
	br := &benchReplica{b: b, db: db, r: r}
	b.Cleanup(func() {
		r.Stop()
		if err := db.Close(); err != nil {
			b.Errorf("close pebble: %v", err)
		}
	})
	if err := r.Campaign(); err != nil {
		b.Fatal(err)
	}
	br.drain()
	if r.Published().Lead != 1 {
		b.Fatal("single node did not elect itself")
	}
	return br
}

// drain runs HandleReady until the replica has no work left.
func (br *benchReplica) drain() {
	for br.r.HasReady() {
		out, err := br.r.HandleReady(nullSender{})
		if err != nil {
			br.b.Fatal(err)
		}
		out.Complete()
	}
}

// propose encodes a request as the server does and proposes it.
func (br *benchReplica) propose(kind raftcmd.Kind, req proto.Message) *Proposal {
	payload, err := proto.Marshal(req)
	if err != nil {
		br.b.Fatal(err)
	}
	br.reqID++
	cmd := raftcmd.Command{RangeID: testRange, Proposer: 1, RequestID: br.reqID, Kind: kind, Payload: payload}
	p := NewProposal(br.reqID, cmd.Encode(nil))
	br.r.Propose(p)
	return p
}

// reportCacheHits reports the block cache hit rate since before as a metric.
func (br *benchReplica) reportCacheHits(b *testing.B, before pebble.CacheMetrics) {
	after := br.db.Metrics().BlockCache
	if n := (after.Hits - before.Hits) + (after.Misses - before.Misses); n > 0 {
		b.ReportMetric(100*float64(after.Hits-before.Hits)/float64(n), "%cache-hits")
	}
}

func wait(b testing.TB, p *Proposal) {
	select {
	case res := <-p.Done():
		if res.Err != nil {
			b.Fatalf("proposal %d: %v", p.RequestID, res.Err)
		}
	default:
		b.Fatalf("proposal %d not completed after the replica went idle", p.RequestID)
	}
}

// scattered returns a distinct key for every i, in an order unrelated to i,
// so that new keys land between existing ones as random keys do.
func scattered(prefix string, i int) []byte {
	return fmt.Appendf([]byte(prefix), "%016x", uint64(i)*0x9e3779b97f4a7c15)
}

// benchValue is the 256-byte value of the bench command's put workloads.
var benchValue = make([]byte, 256)

// bigValue is the value of put32k, the bench command's bulk load of 32 KiB
// values.
var bigValue = make([]byte, 32<<10)

// BenchmarkApply proposes N commands, then runs HandleReady until they are
// all applied: one iteration is one such round (with a single node, one
// Ready persists the entries and the next applies them). ns/proposal is the
// cost of a proposal from encoding to completion. Every put writes a new key,
// scattered among the existing ones, so a long run (-benchtime 3000x) grows
// the store past its memtables and the read each put does first goes through
// SSTables and the block cache.
func BenchmarkApply(b *testing.B) {
	for _, bc := range []struct {
		kind   string
		n      int
		onDisk bool
	}{
		{"put", 1, false}, {"put", 16, false}, {"put", 128, false},
		{"txn4", 1, false}, {"txn4", 128, false},
		{"put", 1, true}, {"put", 128, true},
		{"put32k", 64, false},
	} {
		fs := "mem"
		if bc.onDisk {
			fs = "disk"
		}
		b.Run(fmt.Sprintf("%s/n=%d/fs=%s", bc.kind, bc.n, fs), func(b *testing.B) {
			br := newBenchReplica(b, bc.onDisk)
			ps := make([]*Proposal, bc.n)
			key := 0
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			cacheBefore := br.db.Metrics().BlockCache
			b.ReportAllocs()
			for b.Loop() {
				for i := range ps {
					key++
					switch bc.kind {
					case "put":
						ps[i] = br.propose(raftcmd.KindPut, &etcdpb.PutRequest{Key: scattered("put/", key), Value: benchValue})
						continue
					case "put32k":
						ps[i] = br.propose(raftcmd.KindPut, &etcdpb.PutRequest{Key: scattered("put/", key), Value: bigValue})
						continue
					}
					txn := &etcdpb.TxnRequest{}
					for j := range 4 {
						txn.Success = append(txn.Success, &etcdpb.RequestOp{Request: &etcdpb.RequestOp_RequestPut{
							RequestPut: &etcdpb.PutRequest{Key: fmt.Appendf(scattered("txn/", key), "/%d", j), Value: benchValue},
						}})
					}
					ps[i] = br.propose(raftcmd.KindTxn, txn)
				}
				br.drain()
				for _, p := range ps {
					wait(b, p)
				}
			}
			runtime.ReadMemStats(&after)
			proposals := float64(b.N * bc.n)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/proposals, "ns/proposal")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/proposals, "allocs/proposal")
			b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/proposals, "B/proposal")
			br.reportCacheHits(b, cacheBefore)
		})
	}
}

// BenchmarkRead measures the read path of a single-key get: serializable is
// what the server does for a serializable Range (the replica's shared view,
// its published KV counters and index of live keys, kv.Range); linearizable
// adds a ReadIndex round on
// the replica, with N reads sharing it. With 10,000 keys the data never
// leaves the memtable; with 300,000 (about 100 MiB of writes with the Raft
// log, on disk) reads go through SSTables and the block cache, whose hit
// rate is reported.
func BenchmarkRead(b *testing.B) {
	for _, nKeys := range []int{10000, 300000} {
		b.Run(fmt.Sprintf("keys=%d", nKeys), func(b *testing.B) {
			benchmarkRead(b, nKeys)
		})
	}
}

func benchmarkRead(b *testing.B, nKeys int) {
	br := newBenchReplica(b, nKeys > 10000)
	for i := 0; i < nKeys; i += 100 {
		txn := &etcdpb.TxnRequest{}
		for j := i; j < min(i+100, nKeys); j++ {
			txn.Success = append(txn.Success, &etcdpb.RequestOp{Request: &etcdpb.RequestOp_RequestPut{
				RequestPut: &etcdpb.PutRequest{Key: fmt.Appendf(nil, "get/%06d", j), Value: benchValue},
			}})
		}
		br.propose(raftcmd.KindTxn, txn)
		br.drain()
	}
	// A read as the server serves it: through the replica's shared view and
	// its index of live keys.
	get := func(b *testing.B, i int) {
		v := br.r.View()
		defer v.Close()
		if v.Pub == nil || datarange.Index(v.Derived()) == nil {
			b.Fatal("idle replica's view without its published state and index")
		}
		resp, err := kv.Range(v, datarange.Index(v.Derived()), v.Pub.KV, &etcdpb.RangeRequest{Key: fmt.Appendf(nil, "get/%06d", i%nKeys)})
		if err != nil || len(resp.Kvs) != 1 {
			b.Fatalf("get %d: %v, %d keys", i, err, len(resp.GetKvs()))
		}
	}
	b.Run("serializable", func(b *testing.B) {
		b.ReportAllocs()
		before := br.db.Metrics().BlockCache
		i := 0
		for b.Loop() {
			i += 7919
			get(b, i)
		}
		br.reportCacheHits(b, before)
	})
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprintf("linearizable/n=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			before := br.db.Metrics().BlockCache
			reads := make([]*Read, n)
			i := 0
			for b.Loop() {
				for j := range reads {
					reads[j] = NewRead()
					br.r.ReadIndex(reads[j])
				}
				br.drain()
				for _, rd := range reads {
					select {
					case err := <-rd.Done():
						if err != nil {
							b.Fatal(err)
						}
					default:
						b.Fatal("read not completed after the replica went idle")
					}
					i += 7919
					get(b, i)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/read")
			br.reportCacheHits(b, before)
		})
	}
}
