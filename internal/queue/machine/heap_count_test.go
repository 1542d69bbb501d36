package machine

import (
	"math/rand/v2"
	"testing"
)

// TestCountAtMost checks the pruned count of due jobs against a count of
// every job, on random heaps ordered by run time.
func TestCountAtMost(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 50 {
		h := jobHeap{less: runAtLess, pos: func(j *job) *int { return &j.schedIdx }}
		n := rng.IntN(300)
		for i := range n {
			h.push(&job{id: uint64(i), runAt: rng.Int64N(100)})
		}
		for _, at := range []int64{-1, 0, 17, 50, 99, 100} {
			var want int64
			for _, j := range h.items {
				if j.runAt <= at {
					want++
				}
			}
			if got := h.countAtMost(at); got != want {
				t.Fatalf("round %d, %d jobs: countAtMost(%d): got %d, want %d", round, n, at, got, want)
			}
		}
	}
}
