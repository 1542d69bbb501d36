package metrics

import (
	"context"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Source is what the node reports on each scrape.
type Source struct {
	Term           func() uint64
	IsLeader       func() bool
	HasLeader      func() bool
	CommittedIndex func() uint64
	AppliedIndex   func() uint64
	// LogEntries is the number of applied entries the Raft log holds.
	LogEntries    func() uint64
	LeaderChanges func() uint64
	Revision      func() int64
	Watchers      func() (watchers, unsynced int)
	// WatchersLeftBehind counts the times a watcher fell back to history.
	WatchersLeftBehind func() int64
	// WatchersOverBudget counts the times a watcher dropped what it had
	// queued because its stream's or the node's budget was spent.
	WatchersOverBudget func() int64
	// WatchQueuedBytes is the bytes of watch events queued for clients.
	WatchQueuedBytes func() int
	Leases           func() int
	// QuotaUsed is the size the storage quota counts.
	QuotaUsed func() int64
	DB        *pebble.DB
}

// Metrics holds a node's registry and the metrics updated as things happen.
type Metrics struct {
	Registry *prometheus.Registry

	ProposalsFailed    prometheus.Counter
	OracleRequests     prometheus.Counter     // requests for revisions the oracle answered (or failed), local or forwarded
	OracleBatches      prometheus.Counter     // batches of requests for revisions the oracle served (or failed)
	OracleRevisions    prometheus.Counter     // revisions the oracle handed out
	SnapshotsSent      *prometheus.CounterVec // by result: ok, failed
	SnapshotsInstalled prometheus.Counter
	// RangeSplits counts the splits this node applied (each makes a
	// range).
	RangeSplits      prometheus.Counter
	CrossRangeTxns   *prometheus.CounterVec // transactions across data ranges, by outcome
	TxnRetries       prometheus.Counter     // runs of such transactions started again (a lock or a conflict met)
	TxnLocksResolved *prometheus.CounterVec // locks of other transactions resolved, by what their record said

	grpcRequests *prometheus.CounterVec
	grpcLatency  *prometheus.HistogramVec
}

// New builds the metrics of a node.
func New(src Source) *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{Registry: r}
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gauge := func(name, help string, f func() float64) {
		r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "synod", Name: name, Help: help}, f))
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	gauge("raft_term", "Current Raft term.", func() float64 { return float64(src.Term()) })
	gauge("raft_is_leader", "1 if this node is the leader.", func() float64 { return b2f(src.IsLeader()) })
	gauge("raft_has_leader", "1 if a leader is known.", func() float64 { return b2f(src.HasLeader()) })
	gauge("raft_committed_index", "Highest Raft index known committed.", func() float64 { return float64(src.CommittedIndex()) })
	gauge("raft_applied_index", "Highest Raft index applied.", func() float64 { return float64(src.AppliedIndex()) })
	gauge("raft_apply_lag", "Committed entries not yet applied.", func() float64 {
		c, a := src.CommittedIndex(), src.AppliedIndex()
		if c < a {
			return 0
		}
		return float64(c - a)
	})
	gauge("raft_log_entries", "Applied Raft entries not yet truncated from the log: about 1,000 or fewer while every member keeps up, up to --log-truncate-threshold while one lags.",
		func() float64 { return float64(src.LogEntries()) })
	gauge("kv_revision", "Current KV revision.", func() float64 { return float64(src.Revision()) })
	gauge("watchers", "Watchers on this node.", func() float64 { w, _ := src.Watchers(); return float64(w) })
	gauge("watchers_unsynced", "Watchers catching up from history.", func() float64 { _, u := src.Watchers(); return float64(u) })
	gauge("watch_queued_bytes", "Bytes of watch events queued on this node for clients to read (bounded by the node's watch budget).",
		func() float64 { return float64(src.WatchQueuedBytes()) })
	gauge("leases", "Leases tracked by the leader's lessor (0 on followers).", func() float64 { return float64(src.Leases()) })
	gauge("storage_size_bytes", "Bytes on disk of the node's Pebble instance.", func() float64 {
		return float64(src.DB.Metrics().DiskSpaceUsage())
	})
	gauge("storage_quota_used_bytes", "Bytes of replicated state the storage quota (--quota-backend-bytes) counts: what etcd's Status reports as the DB size.", func() float64 {
		return float64(src.QuotaUsed())
	})
	counter := func(name, help string, f func() float64) {
		r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "synod", Name: name, Help: help}, f))
	}
	counter("watchers_left_behind_total", "Times a watcher had no room for its events and fell back to catching up from history.",
		func() float64 { return float64(src.WatchersLeftBehind()) })
	counter("watchers_over_budget_total", "Times a watcher dropped what it had queued because its stream's or the node's watch budget was spent (it catches up from history when its client reads).",
		func() float64 { return float64(src.WatchersOverBudget()) })
	counter("raft_leader_changes_total", "Leader changes seen by this node.", func() float64 { return float64(src.LeaderChanges()) })
	m.ProposalsFailed = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "synod", Name: "raft_proposals_failed_total", Help: "Proposals that failed or timed out."})
	m.OracleRequests = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "synod", Name: "oracle_requests_total", Help: "Requests for revisions this node's revision oracle answered, its own and those other nodes forwarded to it, failed ones included (several make a batch)."})
	m.OracleBatches = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "synod", Name: "oracle_batches_total", Help: "Batches of requests for revisions this node's revision oracle answered (one ReadIndex round each), failed ones included."})
	m.OracleRevisions = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "synod", Name: "oracle_revisions_total", Help: "Revisions this node's revision oracle handed out."})
	m.SnapshotsSent = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "synod", Name: "raft_snapshots_sent_total", Help: "Snapshots streamed to followers."}, []string{"result"})
	m.SnapshotsInstalled = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "synod", Name: "raft_snapshots_installed_total", Help: "Snapshots received and installed."})
	m.RangeSplits = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "synod", Name: "range_splits_total", Help: "Data range splits this node applied."})
	m.CrossRangeTxns = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "synod", Name: "txn_cross_range_total", Help: "Transactions across data ranges this node coordinated, by outcome (committed, read: the branch taken wrote nothing, failed)."}, []string{"outcome"})
	m.TxnRetries = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "synod", Name: "txn_cross_range_retries_total", Help: "Runs of transactions across data ranges started again from a new revision (another transaction's lock, or a key changed since the read revision)."})
	m.TxnLocksResolved = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "synod", Name: "txn_locks_resolved_total", Help: "Locks of other transactions this node resolved, by their record's status (committed, aborted)."}, []string{"status"})
	m.grpcRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "synod", Name: "grpc_requests_total", Help: "Client gRPC requests by method and code."}, []string{"method", "code"})
	m.grpcLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "synod", Name: "grpc_handling_seconds", Help: "Client gRPC handling time by method (unary calls).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
	}, []string{"method"})
	r.MustRegister(m.ProposalsFailed, m.OracleRequests, m.OracleBatches, m.OracleRevisions, m.SnapshotsSent, m.SnapshotsInstalled, m.RangeSplits, m.CrossRangeTxns, m.TxnRetries, m.TxnLocksResolved, m.grpcRequests, m.grpcLatency)
	r.MustRegister(&fsyncCollector{db: src.DB, desc: prometheus.NewDesc(
		"synod_disk_wal_fsync_duration_seconds", "Latency of the write-ahead log's fsyncs.", nil, nil)})
	r.MustRegister(newStorageCollector(src.DB))
	return m
}

// storageCollector exports the state of the node's LSM (Pebble): what an
// operator looks at when writes slow down after a bulk load (a compaction
// debt, a deep L0) and what a benchmark waits on before it measures. It
// reads Pebble's metrics once per scrape.
type storageCollector struct {
	db    *pebble.DB
	descs map[string]*prometheus.Desc
	// values reads each metric from one snapshot of Pebble's metrics.
	values []storageMetric
}

type storageMetric struct {
	name, help string
	kind       prometheus.ValueType
	value      func(m *pebble.Metrics) float64
}

func newStorageCollector(db *pebble.DB) *storageCollector {
	c := &storageCollector{db: db, descs: map[string]*prometheus.Desc{}, values: []storageMetric{
		{"storage_compaction_debt_bytes", "Bytes Pebble estimates it must compact to bring its LSM into shape.", prometheus.GaugeValue,
			func(m *pebble.Metrics) float64 { return float64(m.Compact.EstimatedDebt) }},
		{"storage_compactions_in_progress", "Compactions running.", prometheus.GaugeValue,
			func(m *pebble.Metrics) float64 { return float64(m.Compact.NumInProgress) }},
		{"storage_flushes_in_progress", "Memtable flushes running.", prometheus.GaugeValue,
			func(m *pebble.Metrics) float64 { return float64(m.Flush.NumInProgress) }},
		{"storage_compactions_total", "Compactions done.", prometheus.CounterValue,
			func(m *pebble.Metrics) float64 { return float64(m.Compact.Count) }},
		{"storage_flushes_total", "Memtable flushes done.", prometheus.CounterValue,
			func(m *pebble.Metrics) float64 { return float64(m.Flush.Count) }},
		{"storage_l0_sublevels", "Sublevels of L0: each one more table a read may have to look at.", prometheus.GaugeValue,
			func(m *pebble.Metrics) float64 { return float64(m.Levels[0].Sublevels) }},
		{"storage_l0_tables", "Tables in L0.", prometheus.GaugeValue,
			func(m *pebble.Metrics) float64 { return float64(m.Levels[0].TablesCount) }},
		{"storage_read_amplification", "Tables and memtables a point read may have to look at (L0 sublevels, non-empty lower levels, memtables).", prometheus.GaugeValue,
			func(m *pebble.Metrics) float64 { return float64(m.ReadAmp()) }},
		{"storage_memtable_bytes", "Bytes of the memtables, flushing ones included.", prometheus.GaugeValue,
			func(m *pebble.Metrics) float64 { return float64(m.MemTable.Size) }},
	}}
	for _, v := range c.values {
		c.descs[v.name] = prometheus.NewDesc("synod_"+v.name, v.help, nil, nil)
	}
	return c
}

func (c *storageCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *storageCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.db.Metrics()
	for _, v := range c.values {
		ch <- prometheus.MustNewConstMetric(c.descs[v.name], v.kind, v.value(m))
	}
}

// UnaryInterceptor counts and times unary client requests.
func (m *Metrics) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		m.grpcLatency.WithLabelValues(info.FullMethod).Observe(time.Since(start).Seconds())
		m.grpcRequests.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
		return resp, err
	}
}

// StreamInterceptor counts client streams by how they end.
func (m *Metrics) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(srv, ss)
		m.grpcRequests.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
		return err
	}
}

// fsyncCollector re-exports Pebble's WAL fsync histogram (which has no name
// of its own) under Synod's name.
type fsyncCollector struct {
	db   *pebble.DB
	desc *prometheus.Desc
}

func (c *fsyncCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *fsyncCollector) Collect(ch chan<- prometheus.Metric) {
	h := c.db.Metrics().LogWriter.FsyncLatency
	if h == nil {
		return
	}
	var m dto.Metric
	if err := h.Write(&m); err != nil || m.Histogram == nil {
		return
	}
	buckets := map[float64]uint64{}
	for _, b := range m.Histogram.Bucket {
		// Pebble records nanoseconds; Prometheus convention is seconds.
		buckets[b.GetUpperBound()/1e9] = b.GetCumulativeCount()
	}
	ch <- prometheus.MustNewConstHistogram(c.desc, m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum()/1e9, buckets)
}
