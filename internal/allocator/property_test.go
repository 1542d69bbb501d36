package allocator

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/synod-io/synod/internal/keys"
)

// randomCluster returns nodes (in that many regions of two zones each,
// or without a locality if regions is 0) and ranges of factor 3 (one in
// five of factor 5 when there are enough nodes) placed only on the first
// few nodes, so that there is much to rebalance. Leaders are random
// voters.
func randomCluster(rnd *rand.Rand, nodes, ranges, regions int) Cluster {
	var c Cluster
	for i := 1; i <= nodes; i++ {
		n := Node{ID: NodeID(i)}
		if regions > 0 {
			n.Locality = Locality{{"region", fmt.Sprint("r", i%regions)}, {"zone", fmt.Sprint("z", i%2)}}
		}
		c.Nodes = append(c.Nodes, n)
	}
	crowded := min(nodes, 5)
	for i := range ranges {
		factor := 3
		if nodes >= 7 && rnd.IntN(5) == 0 {
			factor = 5
		}
		r := Range{ID: keys.RangeID(10 + i), Factor: factor}
		for _, k := range rnd.Perm(max(crowded, factor))[:factor] {
			r.Replicas = append(r.Replicas, Replica{Node: NodeID(k + 1), ID: ReplicaID(len(r.Replicas) + 1)})
		}
		r.NextReplicaID = ReplicaID(factor + 1 + rnd.IntN(3)) // some IDs were used and removed
		r.Leader = r.Replicas[rnd.IntN(factor)].Node
		c.Ranges = append(c.Ranges, r)
	}
	c.Nodes = Tally(c.Nodes, c.Ranges)
	return c
}

type scenario struct {
	name string
	// change turns a random cluster into the one to converge from.
	change func(c Cluster) Cluster
}

func setState(c Cluster, id NodeID, s NodeState) Cluster {
	c.Nodes = slices.Clone(c.Nodes)
	for i := range c.Nodes {
		if c.Nodes[i].ID == id {
			c.Nodes[i].State = s
		}
	}
	return c
}

var scenarios = []scenario{
	{"skewed", func(c Cluster) Cluster { return c }},
	{"node-dies", func(c Cluster) Cluster { return setState(c, 2, Dead) }},
	{"decommission", func(c Cluster) Cluster { return setState(c, 1, Decommissioning) }},
	{"dead-and-decommissioning", func(c Cluster) Cluster {
		return setState(setState(c, 3, Dead), 4, Decommissioning)
	}},
}

// TestConvergesSafely runs Plan and carries out its actions, call after
// call, on random clusters with a fixed seed, and checks that every action
// is sound (one per range per call, learners only on live nodes without a
// replica of the range, fresh replica IDs, promotions of caught-up
// learners, leadership to live voters), that after each one no range has
// two replicas on a node or lacks a quorum of live voters, and that the
// moves end, within a bound of steps, in a cluster where every range has
// its factor of voters on live nodes. Without localities every node's
// replicas and leaders must then be within the bound of the mean; with
// three regions, where diversity comes before balance (a region of one
// live node holds a replica of every range), every range must span as
// many regions as it can.
func TestConvergesSafely(t *testing.T) {
	for _, regions := range []int{0, 3} {
		for seed := uint64(1); seed <= 10; seed++ {
			for _, sc := range scenarios {
				rnd := rand.New(rand.NewPCG(seed, 16))
				nodes := 5 + rnd.IntN(5)
				ranges := 20 + rnd.IntN(60)
				o := Options{MaxMoves: 4 + rnd.IntN(16)}
				name := fmt.Sprintf("regions=%d/seed=%d/%s/nodes=%d/ranges=%d/max-moves=%d", regions, seed, sc.name, nodes, ranges, o.MaxMoves)
				t.Run(name, func(t *testing.T) {
					c := sc.change(randomCluster(rnd, nodes, ranges, regions))
					// Each move takes three steps (learner, promotion,
					// removal) and a fourth for leadership: at most
					// every replica moves once, o.MaxMoves at a time.
					maxSteps := 4 * (3*ranges/o.MaxMoves + 3)
					steps := converge(t, c, o, maxSteps)
					t.Logf("done after %d steps", steps)
				})
			}
		}
	}
}

// converge carries out Plan's actions until it proposes none, checking
// every step, and returns the number of steps.
func converge(t *testing.T, c Cluster, o Options, maxSteps int) int {
	t.Helper()
	used := make(map[keys.RangeID]map[ReplicaID]bool)
	for _, r := range c.Ranges {
		used[r.ID] = make(map[ReplicaID]bool)
		for id := ReplicaID(1); id < r.NextReplicaID; id++ {
			used[r.ID][id] = true // given out before, present or removed
		}
	}
	for steps := 0; steps < maxSteps; steps++ {
		res, err := Plan(c, o)
		if err != nil {
			t.Fatalf("step %d: got error %v, want none", steps, err)
		}
		if len(res.Invalid) > 0 {
			t.Fatalf("step %d: got invalid ranges %v, want none", steps, res.Invalid)
		}
		if len(res.Actions) == 0 {
			checkBalanced(t, c, res)
			return steps
		}
		if len(res.Actions) > o.MaxMoves {
			t.Fatalf("step %d: got %d actions, want at most %d", steps, len(res.Actions), o.MaxMoves)
		}
		seen := make(map[keys.RangeID]bool)
		for _, a := range res.Actions {
			if seen[a.Range] {
				t.Fatalf("step %d: got a second action %v for r%d in one call, want one", steps, a, a.Range)
			}
			seen[a.Range] = true
			i := slices.IndexFunc(c.Ranges, func(r Range) bool { return r.ID == a.Range })
			checkAction(t, c, c.Ranges[i], a, used[a.Range])
			used[a.Range][a.Replica] = true
			c.Ranges[i] = Apply(c.Ranges[i], a)
			checkRange(t, c, c.Ranges[i], a)
		}
		c = step(c, res.Actions)
	}
	res, _ := Plan(c, o)
	t.Fatalf("got actions after %d steps, want none: %v", maxSteps, res.Actions)
	return maxSteps
}

func nodeState(c Cluster, id NodeID) (NodeState, bool) {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n.State, true
		}
	}
	return Dead, false
}

func checkAction(t *testing.T, c Cluster, r Range, a Action, used map[ReplicaID]bool) {
	t.Helper()
	idx := slices.IndexFunc(r.Replicas, func(rep Replica) bool { return rep.Node == a.Node })
	switch a.Kind {
	case AddLearner:
		if s, _ := nodeState(c, a.Node); s != Live {
			t.Fatalf("%v: got a learner on a %v node, want live", a, s)
		}
		if idx >= 0 {
			t.Fatalf("%v: got a second replica on n%d, want none", a, a.Node)
		}
		if used[a.Replica] || a.Replica != r.NextReplicaID {
			t.Fatalf("%v: got replica ID %d (next %d, used before: %v), want a fresh one", a, a.Replica, r.NextReplicaID, used[a.Replica])
		}
	case Promote:
		if idx < 0 || r.Replicas[idx].ID != a.Replica || r.Replicas[idx].Type != Learner || !r.Replicas[idx].CaughtUp {
			t.Fatalf("%v: got %+v, want a caught-up learner", a, r.Replicas)
		}
	case Remove:
		if idx < 0 || r.Replicas[idx].ID != a.Replica {
			t.Fatalf("%v: got %+v, want the replica present", a, r.Replicas)
		}
		if r.Leader == a.Node {
			t.Fatalf("%v: got the leader's replica removed, want leadership moved first", a)
		}
	case TransferLeader:
		if s, _ := nodeState(c, a.Node); idx < 0 || r.Replicas[idx].Type != Voter || s != Live {
			t.Fatalf("%v: got leadership to %+v (%v), want a live voter", a, r.Replicas, s)
		}
		if a.From != r.Leader {
			t.Fatalf("%v: got from n%d, want the leader n%d", a, a.From, r.Leader)
		}
	}
}

// checkRange checks r after a: no node holds two of its replicas, and its
// live voters are a quorum (the scenarios never kill a quorum, so only the
// allocator's moves could take it away).
func checkRange(t *testing.T, c Cluster, r Range, a Action) {
	t.Helper()
	nodes := make(map[NodeID]bool)
	live, voters := 0, 0
	for _, rep := range r.Replicas {
		if nodes[rep.Node] {
			t.Fatalf("after %v: got two replicas of r%d on n%d, want one", a, r.ID, rep.Node)
		}
		nodes[rep.Node] = true
		if rep.Type == Voter {
			voters++
			if s, ok := nodeState(c, rep.Node); ok && s != Dead {
				live++
			}
		}
	}
	if live <= voters/2 {
		t.Fatalf("after %v: got %d live voters of %d in r%d, want a quorum", a, live, voters, r.ID)
	}
}

// checkBalanced checks a cluster where Plan proposes nothing.
func checkBalanced(t *testing.T, c Cluster, res Result) {
	t.Helper()
	healthy := 0
	for _, n := range c.Nodes {
		if n.State == Live {
			healthy++
		}
	}
	for _, r := range c.Ranges {
		voters := 0
		for _, rep := range r.Replicas {
			s, _ := nodeState(c, rep.Node)
			if rep.Type != Voter {
				t.Errorf("r%d: got learner %+v at rest, want none", r.ID, rep)
			}
			if s != Live && healthy >= r.Factor {
				t.Errorf("r%d: got a replica on %v n%d at rest, want it replaced", r.ID, s, rep.Node)
			}
			voters++
		}
		if voters != r.Factor && healthy >= r.Factor {
			t.Errorf("r%d: got %d voters, want %d", r.ID, voters, r.Factor)
		}
	}
	if len(res.UnderReplicated) > 0 {
		t.Errorf("got under-replicated ranges %v at rest, want none", res.UnderReplicated)
	}
	if c.Nodes[0].Locality != nil {
		checkSpread(t, c)
		return
	}
	for _, what := range []string{"replicas", "leaders"} {
		counts := make(map[NodeID]int)
		total := 0
		for _, n := range c.Nodes {
			if n.State == Live {
				k := n.Replicas
				if what == "leaders" {
					k = n.Leaders
				}
				counts[n.ID] = k
				total += k
			}
		}
		mean := float64(total) / float64(len(counts))
		bound := max(0.1*mean, 2)
		for id, k := range counts {
			if float64(k) > mean+bound || float64(k) < mean-bound {
				t.Errorf("n%d: got %d %s, want within %.1f of the mean %.1f (%v)", id, k, what, bound, mean, counts)
			}
		}
	}
}

// checkSpread checks that every range spans as many regions as it can:
// its factor, or every region with a live node.
func checkSpread(t *testing.T, c Cluster) {
	t.Helper()
	regions := make(map[string]bool)
	region := make(map[NodeID]string)
	for _, n := range c.Nodes {
		region[n.ID] = n.Locality[0].Value
		if n.State == Live {
			regions[n.Locality[0].Value] = true
		}
	}
	for _, r := range c.Ranges {
		spanned := make(map[string]bool)
		for _, rep := range r.Replicas {
			spanned[region[rep.Node]] = true
		}
		if want := min(r.Factor, len(regions)); len(spanned) < want {
			t.Errorf("r%d: got %d regions (%+v), want %d", r.ID, len(spanned), r.Replicas, want)
		}
	}
}

// TestPlanIsDeterministic gives Plan the same cluster with its nodes,
// ranges and replicas in other orders: the result must not change.
func TestPlanIsDeterministic(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 16))
	for i := range 20 {
		c := randomCluster(rnd, 5+rnd.IntN(5), 10+rnd.IntN(40), rnd.IntN(4))
		c = setState(c, NodeID(1+rnd.IntN(len(c.Nodes))), NodeState(rnd.IntN(3)))
		c = setState(c, NodeID(1+rnd.IntN(len(c.Nodes))), NodeState(rnd.IntN(3)))
		want, err := Plan(c, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if len(want.Actions) == 0 {
			t.Fatalf("cluster %d: got no actions, want some to compare", i)
		}
		for range 5 {
			d := Cluster{Nodes: slices.Clone(c.Nodes), Ranges: slices.Clone(c.Ranges)}
			rnd.Shuffle(len(d.Nodes), func(a, b int) { d.Nodes[a], d.Nodes[b] = d.Nodes[b], d.Nodes[a] })
			rnd.Shuffle(len(d.Ranges), func(a, b int) { d.Ranges[a], d.Ranges[b] = d.Ranges[b], d.Ranges[a] })
			for j := range d.Ranges {
				reps := slices.Clone(d.Ranges[j].Replicas)
				rnd.Shuffle(len(reps), func(a, b int) { reps[a], reps[b] = reps[b], reps[a] })
				d.Ranges[j].Replicas = reps
			}
			got, err := Plan(d, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("cluster %d shuffled: got %v, want %v", i, got.Actions, want.Actions)
			}
		}
	}
}

// TestPlanDoesNotChangeItsInput checks that Plan works on copies: the
// cluster is one step into its repair, so that Plan promotes learners.
func TestPlanDoesNotChangeItsInput(t *testing.T) {
	c := setState(randomCluster(rand.New(rand.NewPCG(3, 16)), 6, 30, 3), 2, Dead)
	res, err := Plan(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c = step(c, res.Actions)
	before := fmt.Sprintf("%+v", c)
	if res, err = Plan(c, Options{}); err != nil || !slices.ContainsFunc(res.Actions, func(a Action) bool { return a.Kind == Promote }) {
		t.Fatalf("got %v, %v, want promotions", res.Actions, err)
	}
	if after := fmt.Sprintf("%+v", c); after != before {
		t.Fatalf("got input changed to %s, want %s", after, before)
	}
}

// TestRemoveKeepsAQuorum checks the guard under every removal: Plan's
// rules never ask for this one (a dead voter is always removed before a
// live one), so it is called directly: a live voter of a range with three
// live voters of five must not be removed, a dead one may.
func TestRemoveKeepsAQuorum(t *testing.T) {
	c := Cluster{
		Nodes: []Node{{ID: 1}, {ID: 2}, {ID: 3}, {ID: 4, State: Dead}, {ID: 5, State: Dead}},
		Ranges: []Range{{ID: 10, Leader: 1, NextReplicaID: 6, Factor: 3, Replicas: []Replica{
			{Node: 1, ID: 1}, {Node: 2, ID: 2}, {Node: 3, ID: 3}, {Node: 4, ID: 4}, {Node: 5, ID: 5},
		}}},
	}
	p, err := newPlanner(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := p.ranges[0]
	if p.remove(r, 2, ReasonOverReplicated) {
		t.Fatalf("removing n3: got %v, want no action (2 live voters of 4 left)", p.actions)
	}
	if !p.remove(r, 3, ReasonDead) || len(p.actions) != 1 || p.actions[0].Node != 4 {
		t.Fatalf("removing n4: got %v, want its removal", p.actions)
	}
}
