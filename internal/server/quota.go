package server

import (
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
)

// versionOverhead is what one stored key-value version costs besides its key
// and value: the escaping and revision of its MVCC key, the header of its
// value, Pebble's trailer. A request's quota cost and an applied version's
// bytes both count it, so that a member refuses a write that would take it
// past the quota.
const versionOverhead = 64

// storageUsage estimates the bytes that hold this member's replicated state
// (keys.ReplicatedSpans: versions, leases, members, auth, applied state):
// what the storage quota counts. Not counted: the Raft log, which is
// truncated on its own; the write-ahead log; files Pebble no longer uses and
// has yet to delete. Compaction (which deletes old versions) and a
// defragmentation (which flushes and compacts everything, dropping what was
// deleted) shrink it, unlike the size of the files on disk.
//
// The estimate is the size of the sstables that hold the replicated spans
// (Pebble's EstimateDiskUsage, refreshed after each flush and compaction and
// every second), plus the bytes applied to them since the last flush began
// (memtables hold them, along with the Raft log). Versions count their key,
// value and versionOverhead in memtables, and their compressed size in
// sstables, so the estimate errs high until a flush. It errs low only for
// bytes applied between a memtable's rotation and the start of its flush
// (milliseconds of writes), until the next flush.
type storageUsage struct {
	// mu serializes refreshes, so that an older sstable size never
	// replaces a newer one whose flushes were already subtracted.
	mu    sync.Mutex
	db    *pebble.DB // set once open; events before then are ignored
	spans []keys.Span

	// sst is the size of the replicated spans' sstables at the last refresh.
	sst atomic.Int64
	// unflushed is what was applied to the replicated spans since the last
	// flush began (see above).
	unflushed atomic.Int64
	// flushing is unflushed as it was when the running flush began. When
	// the flush ends it moves from unflushed to inTransit, where it stays
	// until a refresh has its sstables in sst.
	flushing  atomic.Int64
	inTransit atomic.Int64

	// changed wakes the quota loop: a flush or a compaction ended, or a
	// write found the quota reached.
	changed chan struct{}
}

func newStorageUsage() *storageUsage {
	return &storageUsage{
		spans:   replicatedSpans(),
		changed: make(chan struct{}, 1),
	}
}

// listener follows Pebble's flushes and compactions. Its functions run on
// Pebble's goroutines: they only record and wake the quota loop.
func (u *storageUsage) listener() *pebble.EventListener {
	return &pebble.EventListener{
		FlushBegin: func(pebble.FlushInfo) { u.flushing.Store(u.unflushed.Load()) },
		FlushEnd: func(info pebble.FlushInfo) {
			n := u.flushing.Swap(0)
			if info.Err == nil {
				u.inTransit.Add(n)
				u.unflushed.Add(-n)
			}
			u.notify()
		},
		CompactionEnd: func(pebble.CompactionInfo) { u.notify() },
	}
}

func (u *storageUsage) notify() {
	select {
	case u.changed <- struct{}{}:
	default:
	}
}

// open starts estimating over db, whose memtables must hold nothing
// replicated (Pebble flushes what it recovers at open; a new data dir is
// flushed after its bootstrap).
func (u *storageUsage) open(db *pebble.DB) {
	u.mu.Lock()
	u.db = db
	u.mu.Unlock()
	u.inTransit.Store(0)
	u.unflushed.Store(0)
	u.refresh()
}

// refresh reads the sstables' size again and stops counting the flushed
// bytes apart. A flush that ends during a refresh is counted twice until the
// next one, never missed.
func (u *storageUsage) refresh() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.db == nil {
		return
	}
	done := u.inTransit.Load()
	var total int64
	for _, sp := range u.spans {
		if n, err := u.db.EstimateDiskUsage(sp.Start, sp.End); err == nil {
			total += int64(n)
		}
	}
	u.sst.Store(total)
	u.inTransit.Add(-done)
}

// applied counts the versions an applied batch wrote.
func (u *storageUsage) applied(events []kv.Event) int64 {
	var n int64
	for _, e := range events {
		if e.KV != nil {
			n += int64(len(e.KV.Key)+len(e.KV.Value)) + versionOverhead
		}
	}
	u.unflushed.Add(n)
	return n
}

// size is the estimate of the replicated state's bytes.
func (u *storageUsage) size() int64 {
	return u.sst.Load() + u.unflushed.Load() + u.inTransit.Load()
}

// quotaCost is what a request may add to the replicated state, as etcd
// counts it: a put's key and value, a txn's puts (of its larger branch), a
// lease; zero for requests that add nothing (deletes, compactions,
// revocations), which a NOSPACE alarm lets through.
func quotaCost(req proto.Message) int64 {
	switch r := req.(type) {
	case *pb.PutRequest:
		return int64(len(r.Key)+len(r.Value)) + versionOverhead
	case *pb.TxnRequest:
		return txnCost(r)
	case *pb.LeaseGrantRequest:
		return versionOverhead
	}
	return 0
}

func txnCost(r *pb.TxnRequest) int64 {
	var most int64
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		var n int64
		for _, op := range ops {
			switch o := op.Request.(type) {
			case *pb.RequestOp_RequestPut:
				n += quotaCost(o.RequestPut)
			case *pb.RequestOp_RequestTxn:
				n += txnCost(o.RequestTxn)
			}
		}
		most = max(most, n)
	}
	return most
}
