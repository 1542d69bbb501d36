package metrics

import (
	"context"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The KV methods the history counts: reads are ranges, writes are puts,
// deletes and transactions (a read-only txn counts as a write: telling it
// apart would cost every request a look at its body).
var (
	readMethods  = map[string]bool{"/etcdserverpb.KV/Range": true}
	writeMethods = map[string]bool{
		"/etcdserverpb.KV/Put":         true,
		"/etcdserverpb.KV/DeleteRange": true,
		"/etcdserverpb.KV/Txn":         true,
	}
)

// Sample is the node's KV traffic over one interval of a History.
type Sample struct {
	// Time is the end of the interval.
	Time time.Time
	// Reads and Writes are requests per second, gRPC and gateway alike.
	Reads, Writes float64
	// ReadP50, ReadP99, WriteP50 and WriteP99 are the handling times'
	// quantiles in seconds, estimated from the histogram's buckets as
	// Prometheus' histogram_quantile does; NaN when no request ended in
	// the interval.
	ReadP50, ReadP99, WriteP50, WriteP99 float64
}

// History keeps a short ring of Samples of the node's KV traffic, taken
// from the gRPC latency histogram (which the interceptors update anyway:
// sampling adds nothing to a request), for the web console's charts.
type History struct {
	m        *Metrics
	interval time.Duration

	mu struct {
		sync.Mutex
		ring  []Sample // the last len(ring) samples, oldest at next once full
		next  int
		full  bool
		prev  kvTotals
		prevT time.Time
	}
}

// NewHistory returns a History of m that keeps size samples, one per
// interval, once Run runs.
func NewHistory(m *Metrics, interval time.Duration, size int) *History {
	h := &History{m: m, interval: interval}
	h.mu.ring = make([]Sample, size)
	return h
}

// Interval is the time between two samples.
func (h *History) Interval() time.Duration { return h.interval }

// Run takes a sample every interval until ctx ends.
func (h *History) Run(ctx context.Context) {
	h.mu.Lock()
	h.mu.prev, h.mu.prevT = h.m.kvTotals(), time.Now()
	h.mu.Unlock()
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h.sample(now)
		}
	}
}

// sample records the traffic since the previous sample.
func (h *History) sample(now time.Time) {
	cur := h.m.kvTotals()
	h.mu.Lock()
	defer h.mu.Unlock()
	secs := now.Sub(h.mu.prevT).Seconds()
	if secs <= 0 {
		return
	}
	reads, writes := cur.reads.minus(h.mu.prev.reads), cur.writes.minus(h.mu.prev.writes)
	s := Sample{
		Time:     now,
		Reads:    float64(reads.count) / secs,
		Writes:   float64(writes.count) / secs,
		ReadP50:  reads.quantile(0.5),
		ReadP99:  reads.quantile(0.99),
		WriteP50: writes.quantile(0.5),
		WriteP99: writes.quantile(0.99),
	}
	h.mu.prev, h.mu.prevT = cur, now
	h.mu.ring[h.mu.next] = s
	h.mu.next++
	if h.mu.next == len(h.mu.ring) {
		h.mu.next, h.mu.full = 0, true
	}
}

// Samples returns the samples kept, oldest first.
func (h *History) Samples() []Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.mu.full {
		return append([]Sample(nil), h.mu.ring[:h.mu.next]...)
	}
	out := make([]Sample, 0, len(h.mu.ring))
	out = append(out, h.mu.ring[h.mu.next:]...)
	return append(out, h.mu.ring[:h.mu.next]...)
}

// buckets is a latency histogram: cumulative counts per upper bound
// (seconds, ascending), and the total count (the +Inf bucket).
type buckets struct {
	bounds []float64
	cum    []uint64
	count  uint64
}

// add adds the histogram of one method.
func (b *buckets) add(h *dto.Histogram) {
	if b.bounds == nil {
		for _, bk := range h.GetBucket() {
			b.bounds = append(b.bounds, bk.GetUpperBound())
		}
		b.cum = make([]uint64, len(b.bounds))
	}
	for i, bk := range h.GetBucket() {
		if i < len(b.cum) {
			b.cum[i] += bk.GetCumulativeCount()
		}
	}
	b.count += h.GetSampleCount()
}

// minus returns the observations of b that are not in prev.
func (b buckets) minus(prev buckets) buckets {
	out := buckets{bounds: b.bounds, cum: make([]uint64, len(b.cum)), count: b.count - min(prev.count, b.count)}
	for i := range b.cum {
		var p uint64
		if i < len(prev.cum) {
			p = prev.cum[i]
		}
		out.cum[i] = b.cum[i] - min(p, b.cum[i])
	}
	return out
}

// quantile estimates the q-quantile by linear interpolation within its
// bucket, as Prometheus' histogram_quantile; NaN without observations.
// Observations above the highest bound count as that bound.
func (b buckets) quantile(q float64) float64 {
	if b.count == 0 || len(b.bounds) == 0 {
		return math.NaN()
	}
	rank := q * float64(b.count)
	i := sort.Search(len(b.cum), func(i int) bool { return float64(b.cum[i]) >= rank })
	if i == len(b.cum) {
		return b.bounds[len(b.bounds)-1]
	}
	lo, below := 0.0, uint64(0)
	if i > 0 {
		lo, below = b.bounds[i-1], b.cum[i-1]
	}
	in := b.cum[i] - below
	if in == 0 {
		return b.bounds[i]
	}
	return lo + (b.bounds[i]-lo)*(rank-float64(below))/float64(in)
}

// kvTotals are the KV requests handled since the node started.
type kvTotals struct {
	reads, writes buckets
}

// kvTotals sums the latency histograms of the KV read and write methods.
func (m *Metrics) kvTotals() kvTotals {
	var t kvTotals
	ch := make(chan prometheus.Metric)
	go func() {
		m.grpcLatency.Collect(ch)
		close(ch)
	}()
	for pm := range ch {
		var d dto.Metric
		if err := pm.Write(&d); err != nil || d.Histogram == nil {
			continue
		}
		method := ""
		for _, l := range d.GetLabel() {
			if l.GetName() == "method" {
				method = l.GetValue()
			}
		}
		switch {
		case readMethods[method]:
			t.reads.add(d.Histogram)
		case writeMethods[method]:
			t.writes.add(d.Histogram)
		}
	}
	return t
}
