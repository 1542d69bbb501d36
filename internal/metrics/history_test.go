package metrics

import (
	"context"
	"math"
	"testing"
	"time"

	"google.golang.org/grpc"
)

// call passes one unary call of method through m's interceptor.
func call(m *Metrics, method string) {
	_, _ = m.UnaryInterceptor()(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: method},
		func(context.Context, any) (any, error) { return nil, nil })
}

func TestHistorySamplesKVTraffic(t *testing.T) {
	m := New(Source{})
	h := NewHistory(m, time.Second, 3)
	t0 := time.Unix(1000, 0)
	h.mu.prev, h.mu.prevT = m.kvTotals(), t0

	for range 10 {
		call(m, "/etcdserverpb.KV/Put")
	}
	for range 4 {
		call(m, "/etcdserverpb.KV/Txn")
	}
	for range 6 {
		call(m, "/etcdserverpb.KV/Range")
	}
	call(m, "/etcdserverpb.Lease/LeaseGrant") // neither
	h.sample(t0.Add(2 * time.Second))
	got := h.Samples()
	if len(got) != 1 {
		t.Fatalf("got %d samples, want 1", len(got))
	}
	s := got[0]
	if s.Writes != 7 || s.Reads != 3 {
		t.Errorf("got %.1f writes/s and %.1f reads/s, want 7 and 3 (14 and 6 in 2s)", s.Writes, s.Reads)
	}
	// The calls took microseconds: in the histogram's first bucket.
	if !(s.WriteP50 > 0 && s.WriteP50 <= 0.0001) || !(s.ReadP99 > 0 && s.ReadP99 <= 0.0001) {
		t.Errorf("got write p50 %v, read p99 %v, want within the first bucket (0, 100µs]", s.WriteP50, s.ReadP99)
	}

	// No traffic: zero rates, no latency.
	h.sample(t0.Add(3 * time.Second))
	if s := h.Samples()[1]; s.Writes != 0 || s.Reads != 0 || !math.IsNaN(s.WriteP50) || !math.IsNaN(s.ReadP99) {
		t.Errorf("a quiet second: got %+v, want zero rates and NaN latencies", s)
	}
	// The ring keeps the last 3, oldest first.
	h.sample(t0.Add(4 * time.Second))
	h.sample(t0.Add(5 * time.Second))
	got = h.Samples()
	if len(got) != 3 || !got[0].Time.Equal(t0.Add(3*time.Second)) || !got[2].Time.Equal(t0.Add(5*time.Second)) {
		t.Errorf("got samples at %v, %v, ..., want the last 3 from %v", got[0].Time, got[len(got)-1].Time, t0.Add(3*time.Second))
	}
}

func TestBucketsQuantile(t *testing.T) {
	b := buckets{bounds: []float64{1, 2, 4}, cum: []uint64{10, 30, 40}, count: 50}
	for _, tc := range []struct{ q, want float64 }{
		{0.1, 0.5},  // rank 5 of the 10 in (0, 1]
		{0.4, 1.5},  // rank 20: half of the 20 in (1, 2]
		{0.7, 3},    // rank 35: half of the 10 in (2, 4]
		{0.99, 4},   // in +Inf: the highest bound
		{0.2, 1},    // rank 10: the top of the first bucket
		{0.0, 0},    // rank 0
		{0.6, 2},    // rank 30
		{0.79, 3.9}, // rank 39.5
	} {
		if got := b.quantile(tc.q); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("q %.2f: got %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := (buckets{bounds: []float64{1}, cum: []uint64{0}}).quantile(0.5); !math.IsNaN(got) {
		t.Errorf("no observations: got %v, want NaN", got)
	}
	d := b.minus(buckets{bounds: b.bounds, cum: []uint64{5, 10, 15}, count: 20})
	if d.count != 30 || d.cum[0] != 5 || d.cum[1] != 20 || d.cum[2] != 25 {
		t.Errorf("minus: got %+v, want count 30, cum [5 20 25]", d)
	}
}
