package limit

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/synod-io/synod/api/synodpb"
)

// MetricsRegisterer registers the service's metrics (a Prometheus
// registry).
type MetricsRegisterer = prometheus.Registerer

type metrics struct {
	decisions         *prometheus.CounterVec
	ownerMoves        prometheus.Counter
	checkpoints       prometheus.Counter
	checkpointEntries prometheus.Counter
	forwarded         prometheus.Counter
	forwardBatches    prometheus.Counter
}

// Outcomes of a decision, as the decisions metric labels them.
const (
	outcomeAllowed     = "allowed"
	outcomeRefused     = "refused"
	outcomeWouldRefuse = "would_refuse" // allowed in shadow mode
	outcomeFailedOpen  = "failed_open"  // no decision in time, allowed
	outcomeFailedClose = "failed_closed"
)

func newMetrics(reg MetricsRegisterer, s *Service) *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "synod_limit_decisions_total",
			Help: "Rate-limit decisions this node answered, by limit and outcome (allowed, refused, would_refuse in shadow mode, failed_open or failed_closed when no decision could be made in time).",
		}, []string{"limit", "outcome"}),
		ownerMoves: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "synod_limit_owner_moves_total",
			Help: "Times this node took over the limits' keys (it became the leader of their range).",
		}),
		checkpoints: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "synod_limit_checkpoints_total",
			Help: "Raft proposals this node made, as the owner, to record the keys' states.",
		}),
		checkpointEntries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "synod_limit_checkpoint_entries_total",
			Help: "Key states recorded by this node's checkpoints.",
		}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "synod_limit_forwarded_total",
			Help: "Requests this node sent to the owner of the limits' keys.",
		}),
		forwardBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "synod_limit_forward_batches_total",
			Help: "Calls that carried them (several requests per call under load).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.decisions, m.ownerMoves, m.checkpoints, m.checkpointEntries, m.forwarded, m.forwardBatches, ownerCollector{s})
	}
	return m
}

// count records the outcome of each item of a decided request.
func (m *metrics) count(req *synodpb.TakeRequest, defs []*Def, resp *synodpb.TakeResponse) {
	if req.Peek {
		return
	}
	for i, d := range resp.Decisions {
		outcome := outcomeRefused
		switch {
		case d.Unavailable && d.Allowed:
			outcome = outcomeFailedOpen
		case d.Unavailable:
			outcome = outcomeFailedClose
		case d.WouldRefuse:
			outcome = outcomeWouldRefuse
		case d.Allowed && resp.Allowed:
			outcome = outcomeAllowed
		}
		m.decisions.WithLabelValues(defs[i].Limit.Name, outcome).Inc()
	}
}

// ownerCollector exports, while the node owns the limits' keys, the keys
// it holds and the bound on over-admission (the local shares outstanding)
// per limit.
type ownerCollector struct{ s *Service }

var (
	keysDesc = prometheus.NewDesc("synod_limit_keys",
		"Keys whose state the owner holds in memory, by limit (on the owner only).", []string{"limit"}, nil)
	overDesc = prometheus.NewDesc("synod_limit_over_admission_bound",
		"Tokens that could be admitted beyond the limit at worst right now: the local shares handed out (on the owner only).", []string{"limit"}, nil)
)

func (c ownerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- keysDesc
	ch <- overDesc
}

func (c ownerCollector) Collect(ch chan<- prometheus.Metric) {
	o := c.s.owner
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.mu.term == 0 {
		return
	}
	for name, ol := range o.mu.limits {
		var out int64
		for _, ks := range ol.keys {
			for _, sh := range ks.shares {
				out += sh.out
			}
		}
		ch <- prometheus.MustNewConstMetric(keysDesc, prometheus.GaugeValue, float64(len(ol.keys)), name)
		ch <- prometheus.MustNewConstMetric(overDesc, prometheus.GaugeValue, float64(out), name)
	}
}
