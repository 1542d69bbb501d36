package testcluster

import (
	"sync"
	"sync/atomic"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/replica"
)

// An ApplyGate holds one node's apply of a chosen batch of the data range
// until released, so that a test can make one member lag behind the others
// at an exact point.
// Give each node Hook(i) as its server.Config.TestingBeforeApply (through
// Options.Configure), then Arm the gate once the node to hold is known.
//
// A held node cannot stop: defer Release in the test, since deferred calls
// run before the cluster's cleanup.
type ApplyGate struct {
	match   func(replica.ApplyOutput) bool
	armed   atomic.Int64 // 1 + index of the node to hold; 0: none
	held    chan struct{}
	release chan struct{}
	once    sync.Once
}

// NewApplyGate returns a gate that holds the first batch match accepts on
// the armed node.
func NewApplyGate(match func(replica.ApplyOutput) bool) *ApplyGate {
	return &ApplyGate{match: match, held: make(chan struct{}), release: make(chan struct{})}
}

// Hook returns node i's TestingBeforeApply hook.
func (g *ApplyGate) Hook(i int) func(keys.RangeID, replica.ApplyOutput) {
	return func(id keys.RangeID, out replica.ApplyOutput) {
		if id == keys.SystemRangeID || g.armed.Load() != int64(i)+1 || !g.match(out) || !g.armed.CompareAndSwap(int64(i)+1, 0) {
			return
		}
		close(g.held)
		<-g.release
	}
}

// Arm makes the gate hold n's next matching batch.
func (g *ApplyGate) Arm(n *Node) { g.armed.Store(int64(n.Index) + 1) }

// Held is closed once the armed node holds a batch.
func (g *ApplyGate) Held() <-chan struct{} { return g.held }

// Release lets the held node go on. It may be called more than once.
func (g *ApplyGate) Release() { g.once.Do(func() { close(g.release) }) }
