package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/synod-io/synod/internal/lincheck"
	"github.com/synod-io/synod/internal/testcluster"
)

// A fault kind injects one fault into a cluster and returns what it did and
// how to undo it. Its random choices come from rng; it draws the same number
// of values whatever the cluster's state, so that the schedule stays a
// function of the seed.
type faultKind struct {
	name string
	// process and inProcess say which clusters support it.
	process, inProcess bool
	inject             func(ctx context.Context, c cluster, rng *rand.Rand) (desc string, undo func() error, err error)
}

// pick returns the leader if there is one, else the node drawn at random.
func pick(ctx context.Context, c cluster, rng *rand.Rand) int {
	random := rng.IntN(c.size())
	if l := c.leader(ctx); l >= 0 {
		return l
	}
	return random
}

func healAll(c cluster) func() error {
	return func() error {
		c.heal()
		return nil
	}
}

var faultKinds = []faultKind{
	{name: "isolate-leader", process: true, inProcess: true,
		inject: func(ctx context.Context, c cluster, rng *rand.Rand) (string, func() error, error) {
			i := pick(ctx, c, rng)
			c.isolate(i)
			return "isolate " + c.name(i) + " (leader)", healAll(c), nil
		}},
	{name: "partition", process: true, inProcess: true,
		inject: func(_ context.Context, c cluster, rng *rand.Rand) (string, func() error, error) {
			perm := rng.Perm(c.size())
			minority := perm[:(c.size()-1)/2]
			if len(minority) == 0 {
				minority = perm[:1]
			}
			sort.Ints(minority)
			c.split(minority)
			var names []string
			for _, i := range minority {
				names = append(names, c.name(i))
			}
			return "partition {" + strings.Join(names, ",") + "} from the rest", healAll(c), nil
		}},
	{name: "oneway-leader-out", process: true, inProcess: true,
		inject: func(ctx context.Context, c cluster, rng *rand.Rand) (string, func() error, error) {
			l := pick(ctx, c, rng)
			for j := range c.size() {
				if j != l {
					c.oneWay(l, j)
				}
			}
			return "one-way: " + c.name(l) + " (leader) reaches no one, hears everyone", healAll(c), nil
		}},
	{name: "oneway-leader-in", process: true, inProcess: true,
		inject: func(ctx context.Context, c cluster, rng *rand.Rand) (string, func() error, error) {
			l := pick(ctx, c, rng)
			for j := range c.size() {
				if j != l {
					c.oneWay(j, l)
				}
			}
			return "one-way: " + c.name(l) + " (leader) hears no one, reaches everyone", healAll(c), nil
		}},
	{name: "flaky", inProcess: true,
		inject: func(_ context.Context, c cluster, rng *rand.Rand) (string, func() error, error) {
			f := testcluster.LinkFaults{
				Drop:      0.05 + 0.25*rng.Float64(),
				Duplicate: 0.1 + 0.3*rng.Float64(),
				Delay:     time.Duration(rng.IntN(3)) * time.Millisecond,
				Jitter:    time.Duration(1+rng.IntN(20)) * time.Millisecond,
			}
			c.setLinkFaults(f)
			return "every link " + f.String() + " (loss, duplicates, reordering)", healAll(c), nil
		}},
	{name: "slow", process: true, inProcess: true,
		inject: func(_ context.Context, c cluster, rng *rand.Rand) (string, func() error, error) {
			f := testcluster.LinkFaults{
				Delay:  time.Duration(20+rng.IntN(80)) * time.Millisecond,
				Jitter: time.Duration(rng.IntN(20)) * time.Millisecond,
			}
			c.setLinkFaults(f)
			return "every link " + f.String(), healAll(c), nil
		}},
	{name: "crash", process: true, inProcess: true,
		inject: func(_ context.Context, c cluster, rng *rand.Rand) (string, func() error, error) {
			i := rng.IntN(c.size())
			return crashNodes(c, []int{i}, "crash "+c.name(i))
		}},
	{name: "crash-leader", process: true, inProcess: true,
		inject: func(ctx context.Context, c cluster, rng *rand.Rand) (string, func() error, error) {
			i := pick(ctx, c, rng)
			return crashNodes(c, []int{i}, "crash "+c.name(i)+" (leader)")
		}},
	{name: "crash-all", process: true, inProcess: true,
		inject: func(_ context.Context, c cluster, _ *rand.Rand) (string, func() error, error) {
			var all []int
			for i := range c.size() {
				all = append(all, i)
			}
			return crashNodes(c, all, "crash every node")
		}},
	{name: "pause-leader", process: true,
		inject: func(ctx context.Context, c cluster, rng *rand.Rand) (string, func() error, error) {
			i := pick(ctx, c, rng)
			if _, err := c.pause(i); err != nil {
				return "", nil, err
			}
			return "SIGSTOP " + c.name(i) + " (leader)", func() error { return c.resume(i) }, nil
		}},
}

func crashNodes(c cluster, nodes []int, desc string) (string, func() error, error) {
	for _, i := range nodes {
		if err := c.crash(i); err != nil {
			return "", nil, err
		}
	}
	return desc, func() error {
		for _, i := range nodes {
			if err := c.restart(i); err != nil {
				return err
			}
		}
		return nil
	}, nil
}

func faultKindNamed(name string) (faultKind, bool) {
	for _, k := range faultKinds {
		if k.name == name {
			return k, true
		}
	}
	return faultKind{}, false
}

// nemesis injects faults until ctx ends: shuffled rounds of its kinds, each
// held for a while, undone, then a quiet spell.
type nemesis struct {
	c     cluster
	kinds []faultKind
	rng   *rand.Rand
	rec   *lincheck.Recorder
	// hold and quiet bound how long a fault lasts and the pause after it.
	hold, quiet [2]time.Duration
	logf        func(format string, args ...any)

	injected map[string]int
	// roundDone is closed when every kind has been injected once.
	roundDone chan struct{}
}

func (n *nemesis) between(b [2]time.Duration) time.Duration {
	return b[0] + time.Duration(n.rng.Int64N(int64(b[1]-b[0])+1))
}

// run injects faults until ctx ends and undoes the last one. It returns the
// first error of an injection or undo.
func (n *nemesis) run(ctx context.Context) error {
	n.injected = map[string]int{}
	for round := 0; ; round++ {
		if round == 1 {
			close(n.roundDone)
		}
		for _, k := range n.rng.Perm(len(n.kinds)) {
			kind := n.kinds[k]
			hold, quiet := n.between(n.hold), n.between(n.quiet)
			if !sleep(ctx, quiet) {
				return nil
			}
			desc, undo, err := kind.inject(ctx, n.c, n.rng)
			if err != nil {
				return fmt.Errorf("inject %s: %w", kind.name, err)
			}
			n.injected[kind.name]++
			end := n.rec.Begin(desc)
			n.logf("fault %s for %s", desc, hold.Round(time.Millisecond))
			sleep(ctx, hold) // the fault is undone even when the run ends
			err = undo()
			end()
			if err != nil {
				return fmt.Errorf("undo %q: %w", desc, err)
			}
			if ctx.Err() != nil {
				return nil
			}
		}
	}
}

// sleep waits d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
