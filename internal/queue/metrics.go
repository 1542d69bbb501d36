package queue

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/synod-io/synod/internal/queue/machine"
)

// rateWindow is the window of the rates and pickup times Stats reports.
const rateWindow = 60 * time.Second

// metrics are the queue service's Prometheus metrics, and the recent rates
// and pickup times Stats reports.
type metrics struct {
	s        *Service
	jobs     *prometheus.CounterVec
	pickupH  *prometheus.HistogramVec
	batchOps prometheus.Histogram
	commands prometheus.Counter
	ops      prometheus.Counter
	ticks    prometheus.Counter
	streams  prometheus.Gauge

	mu struct {
		sync.Mutex
		recent map[string]*recent
	}
}

// recent is a queue's counts per second over the last rateWindow, and its
// pickup times.
type recent struct {
	secs    [60]secCounts
	pickups []pickupSample
}

type secCounts struct {
	sec                             int64
	pushed, completed, failed, dead int
}

type pickupSample struct {
	at  time.Time
	sec float64
}

func newMetrics(s *Service) *metrics {
	m := &metrics{
		s: s,
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "synod", Subsystem: "queue", Name: "jobs_total",
			Help: "Jobs by outcome (pushed, claimed, completed, failed, dead, cancelled), as this member applied them."}, []string{"queue", "outcome"}),
		pickupH: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "synod", Subsystem: "queue", Name: "pickup_seconds",
			Help:    "Time from a job being available to its claim, for the claim streams this member serves.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18)}, []string{"queue"}),
		batchOps: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "synod", Subsystem: "queue", Name: "batch_operations",
			Help:    "Operations per batch command this member proposed.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 13)}),
		commands: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "synod", Subsystem: "queue", Name: "commands_applied_total",
			Help: "Batch commands of the queues this member applied (each one Raft entry)."}),
		ops: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "synod", Subsystem: "queue", Name: "operations_applied_total",
			Help: "Operations in the batch commands this member applied."}),
		ticks: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "synod", Subsystem: "queue", Name: "ticks_proposed_total",
			Help: "Time-driven commands this member proposed as leader."}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "synod", Subsystem: "queue", Name: "claim_streams",
			Help: "Claim streams open on this member."}),
	}
	m.mu.recent = map[string]*recent{}
	return m
}

// Collectors returns the service's metrics, for the node's registry.
func (s *Service) Collectors() []prometheus.Collector {
	m := s.metrics
	return []prometheus.Collector{m.jobs, m.pickupH, m.batchOps, m.commands, m.ops, m.ticks, m.streams, stateCollector{s}}
}

func (m *metrics) recentLocked(q string) *recent {
	r := m.mu.recent[q]
	if r == nil {
		r = &recent{}
		m.mu.recent[q] = r
	}
	return r
}

func (r *recent) at(sec int64) *secCounts {
	c := &r.secs[sec%int64(len(r.secs))]
	if c.sec != sec {
		*c = secCounts{sec: sec}
	}
	return c
}

// applied counts an applied command's outcomes.
func (m *metrics) applied(e *machine.Effect) {
	if e.Ops > 0 {
		m.commands.Inc()
		m.ops.Add(float64(e.Ops))
	}
	if len(e.Outcomes) == 0 {
		return
	}
	sec := time.Now().Unix()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range e.Outcomes {
		for _, x := range []struct {
			name string
			n    int
		}{{"pushed", o.Pushed}, {"claimed", o.Claimed}, {"completed", o.Completed}, {"failed", o.Failed}, {"dead", o.Dead}, {"cancelled", o.Cancels}} {
			if x.n > 0 {
				m.jobs.WithLabelValues(o.Queue, x.name).Add(float64(x.n))
			}
		}
		c := m.recentLocked(o.Queue).at(sec)
		c.pushed += o.Pushed
		c.completed += o.Completed
		c.failed += o.Failed
		c.dead += o.Dead
	}
}

// pickup records the time a job waited before its claim.
func (m *metrics) pickup(q string, sec float64) {
	m.pickupH.WithLabelValues(q).Observe(sec)
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.recentLocked(q)
	r.pickups = append(r.pickups, pickupSample{at: now, sec: sec})
	if len(r.pickups) > 8192 || (len(r.pickups) > 0 && now.Sub(r.pickups[0].at) > rateWindow) {
		i := 0
		for i < len(r.pickups) && (now.Sub(r.pickups[i].at) > rateWindow || len(r.pickups)-i > 4096) {
			i++
		}
		r.pickups = append(r.pickups[:0], r.pickups[i:]...)
	}
}

type rates struct {
	pushed, completed, failed, dead float64
	p50, p99                        float64
}

// rates returns queue q's rates over the last minute.
func (m *metrics) rates(q string) rates {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.mu.recent[q]
	if r == nil {
		return rates{}
	}
	var out rates
	sec := now.Unix()
	for _, c := range r.secs {
		if c.sec > sec-int64(len(r.secs)) && c.sec <= sec {
			out.pushed += float64(c.pushed)
			out.completed += float64(c.completed)
			out.failed += float64(c.failed)
			out.dead += float64(c.dead)
		}
	}
	w := float64(len(r.secs))
	out.pushed, out.completed, out.failed, out.dead = out.pushed/w, out.completed/w, out.failed/w, out.dead/w
	var xs []float64
	for _, p := range r.pickups {
		if now.Sub(p.at) <= rateWindow {
			xs = append(xs, p.sec)
		}
	}
	if len(xs) > 0 {
		slices.Sort(xs)
		out.p50 = xs[len(xs)/2]
		out.p99 = xs[min(len(xs)-1, len(xs)*99/100)]
	}
	return out
}

// stateCollector reports the queues' jobs by state at scrape time.
type stateCollector struct{ s *Service }

var (
	jobsDesc = prometheus.NewDesc("synod_queue_jobs", "Jobs of a queue by state, as applied on this member (available, scheduled, waiting, running, completed, dead, cancelled).",
		[]string{"queue", "state"}, nil)
	oldestDesc = prometheus.NewDesc("synod_queue_oldest_available_seconds", "How long the oldest available job of a queue has waited.",
		[]string{"queue"}, nil)
	workersDesc = prometheus.NewDesc("synod_queue_workers", "Workers attached to a queue with capacity.", []string{"queue"}, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- jobsDesc
	ch <- oldestDesc
	ch <- workersDesc
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.s.m()
	now := c.s.now()
	for _, q := range m.Queues() {
		st := m.Stats(q, now)
		for _, x := range []struct {
			state string
			n     int64
		}{{"available", st.Available}, {"scheduled", st.Scheduled}, {"waiting", st.Waiting}, {"running", st.Running},
			{"completed", st.Completed}, {"dead", st.Dead}, {"cancelled", st.Cancelled}} {
			ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(x.n), q, x.state)
		}
		var age float64
		if st.OldestAvailable > 0 && st.OldestAvailable <= now {
			age = float64(now-st.OldestAvailable) / 1000
		}
		ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age, q)
		ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(st.Workers), q)
	}
}
