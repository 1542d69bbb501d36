package lease

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// grantedLessor returns a primary lessor holding n leases with an hour's TTL.
func grantedLessor(n int) *Lessor {
	l := NewLessor(Config{})
	l.Promote(1)
	for i := range n {
		l.Granted(at(time.Duration(i)), int64(i+1), 3600)
	}
	return l
}

var benchSizes = []int{10_000, 1_000_000}

// BenchmarkLessorMemory reports the heap the lessor holds per lease.
func BenchmarkLessorMemory(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("leases=%d", n), func(b *testing.B) {
			var perLease float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				l := grantedLessor(n)
				runtime.GC()
				runtime.ReadMemStats(&after)
				perLease = float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
				runtime.KeepAlive(l)
			}
			b.ReportMetric(perLease, "heap-B/lease")
		})
	}
}

// BenchmarkLessorRenew is the lessor's share of a keepalive.
func BenchmarkLessorRenew(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("leases=%d", n), func(b *testing.B) {
			l := grantedLessor(n)
			i := 0
			for b.Loop() {
				i++
				if _, err := l.Renew(at(time.Duration(n+i)), int64(1+(i*7919)%n)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLessorIdleTick is the leader's periodic work with nothing due:
// one look for expired leases and one for checkpoints.
func BenchmarkLessorIdleTick(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("leases=%d", n), func(b *testing.B) {
			l := grantedLessor(n)
			for b.Loop() {
				now := at(time.Minute)
				if len(l.Expired(now, 100)) != 0 || len(l.Checkpoints(now)) != 0 {
					b.Fatal("a lease is due")
				}
			}
		})
	}
}

// BenchmarkTTLsMemory reports the heap every replica holds per lease for
// apply's lookups.
func BenchmarkTTLsMemory(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("leases=%d", n), func(b *testing.B) {
			var perLease float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				t := &TTLs{m: map[int64]int64{}}
				for i := range n {
					t.m[int64(i+1)] = 3600
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perLease = float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
				runtime.KeepAlive(t)
			}
			b.ReportMetric(perLease, "heap-B/lease")
		})
	}
}
