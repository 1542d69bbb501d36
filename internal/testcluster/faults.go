package testcluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/internal/keys"
)

// LinkFaults are the faults of the link from one node to another: what
// happens to each Raft message (and snapshot) the first sends the second,
// and to its other calls to the second (lease forwarding). The zero value is
// a healthy link.
type LinkFaults struct {
	// Cut loses every message: a partition (one way unless the reverse link
	// is cut too).
	Cut bool
	// Drop is the probability that a message is lost.
	Drop float64
	// Duplicate is the probability that a message is delivered twice.
	// Proposals a follower forwards to the leader (MsgProp) are never
	// duplicated: Raft does not deduplicate them and neither does Synod,
	// which relies on its TCP transport never duplicating (as etcd does), so
	// a duplicate would be applied twice by design, not by a bug.
	Duplicate float64
	// Delay holds every message for at least Delay, plus a uniform random
	// extra below Jitter; a Jitter reorders messages.
	Delay  time.Duration
	Jitter time.Duration
}

func (f LinkFaults) String() string {
	var parts []string
	if f.Cut {
		parts = append(parts, "cut")
	}
	if f.Drop > 0 {
		parts = append(parts, fmt.Sprintf("drop=%.2f", f.Drop))
	}
	if f.Duplicate > 0 {
		parts = append(parts, fmt.Sprintf("dup=%.2f", f.Duplicate))
	}
	if f.Delay > 0 || f.Jitter > 0 {
		parts = append(parts, fmt.Sprintf("delay=%s+%s", f.Delay, f.Jitter))
	}
	if len(parts) == 0 {
		return "healthy"
	}
	return strings.Join(parts, ",")
}

// network holds the link faults of a cluster and applies them at each node's
// transport (through a transport.Interceptor per node). Its random choices
// come from one generator seeded by the test; which messages they fall on
// depends on timing, so a seed reproduces the faults, not every message.
type network struct {
	mu      sync.Mutex
	rng     *rand.Rand
	links   map[[2]int]LinkFaults // by (from, to) node index
	ids     map[uint64]int        // member ID to node index
	addrs   map[string]int        // peer address to node index
	pending map[*pendingDelivery]struct{}
	closed  bool
	wg      sync.WaitGroup // delayed deliveries that are running
}

type pendingDelivery struct{ timer *time.Timer }

func newNetwork(rng *rand.Rand) *network {
	return &network{
		rng:     rng,
		links:   map[[2]int]LinkFaults{},
		ids:     map[uint64]int{},
		addrs:   map[string]int{},
		pending: map[*pendingDelivery]struct{}{},
	}
}

// interceptor is the transport.Interceptor of node from.
type interceptor struct {
	n    *network
	from int
}

func (ic interceptor) Message(_ keys.RangeID, m *pb.Message, deliver func()) {
	n := ic.n
	n.mu.Lock()
	to, ok := n.ids[m.GetTo()]
	f := n.links[[2]int{ic.from, to}]
	if !ok || f == (LinkFaults{}) {
		n.mu.Unlock()
		deliver()
		return
	}
	if f.Cut || (f.Drop > 0 && n.rng.Float64() < f.Drop) {
		n.mu.Unlock()
		return
	}
	copies := 1
	if f.Duplicate > 0 && m.GetType() != pb.MsgProp && n.rng.Float64() < f.Duplicate {
		copies = 2
	}
	now := 0
	for range copies {
		d := f.Delay
		if f.Jitter > 0 {
			d += time.Duration(n.rng.Int64N(int64(f.Jitter)))
		}
		if d <= 0 || n.closed {
			now++
			continue
		}
		n.scheduleLocked(d, deliver)
	}
	n.mu.Unlock()
	for range now {
		deliver()
	}
}

// scheduleLocked delivers after d, unless the network is closed first.
func (n *network) scheduleLocked(d time.Duration, deliver func()) {
	p := &pendingDelivery{}
	n.pending[p] = struct{}{}
	n.wg.Add(1)
	// The callback takes n.mu, which is held until p.timer is set.
	p.timer = time.AfterFunc(d, func() {
		defer n.wg.Done()
		n.mu.Lock()
		delete(n.pending, p)
		closed := n.closed
		n.mu.Unlock()
		if !closed {
			deliver()
		}
	})
}

func (ic interceptor) Snapshot(_ keys.RangeID, to uint64) bool {
	n := ic.n
	n.mu.Lock()
	defer n.mu.Unlock()
	i, ok := n.ids[to]
	if !ok {
		return true
	}
	f := n.links[[2]int{ic.from, i}]
	return !f.Cut && (f.Drop == 0 || n.rng.Float64() >= f.Drop)
}

// unaryInterceptor applies the link faults to the other calls a node makes
// to its peers over the peer connections (lease forwarding): a cut or a
// drop fails the call as Unavailable, a delay holds it. Raft traffic goes
// through the transport's Interceptor instead.
func (n *network) unaryInterceptor(from int) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		n.mu.Lock()
		to, ok := n.addrs[cc.Target()]
		f := n.links[[2]int{from, to}]
		lost := ok && (f.Cut || (f.Drop > 0 && n.rng.Float64() < f.Drop))
		d := f.Delay
		if ok && f.Jitter > 0 {
			d += time.Duration(n.rng.Int64N(int64(f.Jitter)))
		}
		n.mu.Unlock()
		if !ok {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		if lost {
			return status.Errorf(codes.Unavailable, "testcluster: link %d->%d is faulty (%s)", from+1, to+1, f)
		}
		if d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			case <-t.C:
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

func (n *network) setAddr(addr string, index int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.addrs[addr] = index
}

func (n *network) setID(id uint64, index int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ids[id] = index
}

func (n *network) update(fn func(links map[[2]int]LinkFaults)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	fn(n.links)
}

// close stops pending deliveries and waits for running ones.
func (n *network) close() {
	n.mu.Lock()
	n.closed = true
	for p := range n.pending {
		if p.timer.Stop() {
			n.wg.Done()
		}
		delete(n.pending, p)
	}
	n.mu.Unlock()
	n.wg.Wait()
}

// Partition cuts the links between a and b, both ways.
func (c *Cluster) Partition(a, b *Node) {
	c.net.update(func(links map[[2]int]LinkFaults) {
		cut(links, a.Index, b.Index)
		cut(links, b.Index, a.Index)
	})
}

// OneWay cuts the link from one node to another: from's messages to to are
// lost, while to's messages still reach from.
func (c *Cluster) OneWay(from, to *Node) {
	c.net.update(func(links map[[2]int]LinkFaults) { cut(links, from.Index, to.Index) })
}

// Split partitions the cluster into groups: nodes talk only to nodes of their
// own group. Nodes in no group are cut off from every node.
func (c *Cluster) Split(groups ...[]*Node) {
	group := make([]int, len(c.nodes))
	for i := range group {
		group[i] = -1 - i // a group of its own
	}
	for g, nodes := range groups {
		for _, n := range nodes {
			group[n.Index] = g
		}
	}
	c.net.update(func(links map[[2]int]LinkFaults) {
		for i := range c.nodes {
			for j := range c.nodes {
				if i != j && group[i] != group[j] {
					cut(links, i, j)
				}
			}
		}
	})
}

// Isolate cuts every link to and from n.
func (c *Cluster) Isolate(n *Node) {
	c.net.update(func(links map[[2]int]LinkFaults) {
		for j := range c.nodes {
			if j != n.Index {
				cut(links, n.Index, j)
				cut(links, j, n.Index)
			}
		}
	})
}

func cut(links map[[2]int]LinkFaults, from, to int) {
	f := links[[2]int{from, to}]
	f.Cut = true
	links[[2]int{from, to}] = f
}

// SetLinkFaults sets the faults of the link from one node to another,
// replacing the ones it had (a cut included).
func (c *Cluster) SetLinkFaults(from, to *Node, f LinkFaults) {
	c.net.update(func(links map[[2]int]LinkFaults) { links[[2]int{from.Index, to.Index}] = f })
}

// SetAllLinkFaults sets the same faults on every link.
func (c *Cluster) SetAllLinkFaults(f LinkFaults) {
	c.net.update(func(links map[[2]int]LinkFaults) {
		for i := range c.nodes {
			for j := range c.nodes {
				if i != j {
					links[[2]int{i, j}] = f
				}
			}
		}
	})
}

// Heal makes every link healthy again. Messages already delayed are still
// delivered.
func (c *Cluster) Heal() {
	c.net.update(func(links map[[2]int]LinkFaults) { clear(links) })
}

// LinkState describes the faulty links, e.g. "n1->n2 cut; n2->n3 drop=0.10",
// or "healthy".
func (c *Cluster) LinkState() string {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	var parts []string
	for l, f := range c.net.links {
		if f != (LinkFaults{}) {
			parts = append(parts, fmt.Sprintf("%s->%s %s", c.nodes[l[0]].Name, c.nodes[l[1]].Name, f))
		}
	}
	if len(parts) == 0 {
		return "healthy"
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}
