package allocator

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/synod-io/synod/internal/keys"
)

// epsilon absorbs float rounding when diversity scores are compared.
const epsilon = 1e-9

// Plan returns the actions that bring c's ranges towards their
// replication factor, spread over distinct localities and balanced over
// the nodes, at most o.MaxMoves of them. It fails only on nodes that
// cannot be told apart (a zero or repeated ID); a range described
// inconsistently is left alone and listed in Result.Invalid.
func Plan(c Cluster, o Options) (Result, error) {
	p, err := newPlanner(c, o)
	if err != nil {
		return Result{}, err
	}
	p.repair()
	p.finishMoves()
	p.rebalance()
	p.balanceLeaders()
	return p.result(), nil
}

// Tally returns copies of nodes whose Replicas and Leaders are counted
// from ranges (for a caller that holds every range's descriptor).
func Tally(nodes []Node, ranges []Range) []Node {
	out := slices.Clone(nodes)
	idx := make(map[NodeID]int, len(out))
	for i := range out {
		out[i].Replicas, out[i].Leaders = 0, 0
		idx[out[i].ID] = i
	}
	for _, r := range ranges {
		for _, rep := range r.Replicas {
			if i, ok := idx[rep.Node]; ok {
				out[i].Replicas++
			}
		}
		if i, ok := idx[r.Leader]; ok && r.Leader != 0 {
			out[i].Leaders++
		}
	}
	return out
}

// rng is a range being planned: a copy of the input, changed as actions
// are planned so that later decisions see them.
type rng struct {
	Range
	busy   bool // an action is in flight or planned
	settle map[NodeID]int
}

type planner struct {
	nodes    map[NodeID]*Node
	ids      []NodeID // sorted
	ranges   []*rng   // by ID
	given    map[NodeID][2]int
	replicas map[NodeID]int // projected
	// own undoes, while a range is decided, its own share of the
	// projection: its removal to come must be chosen with the counts it
	// was projected with, not with its own effect on them.
	own     map[NodeID]int
	leaders map[NodeID]int // projected
	budget  int
	actions []Action
	invalid []InvalidRange
	under   []keys.RangeID
	unavail []keys.RangeID
}

func newPlanner(c Cluster, o Options) (*planner, error) {
	p := &planner{
		nodes:    make(map[NodeID]*Node, len(c.Nodes)),
		given:    make(map[NodeID][2]int, len(c.Nodes)),
		replicas: make(map[NodeID]int, len(c.Nodes)),
		leaders:  make(map[NodeID]int, len(c.Nodes)),
		budget:   o.MaxMoves,
	}
	if p.budget <= 0 {
		p.budget = DefaultMaxMoves
	}
	for i := range c.Nodes {
		n := c.Nodes[i]
		if n.ID == 0 {
			return nil, errors.New("node with ID 0")
		}
		if _, ok := p.nodes[n.ID]; ok {
			return nil, fmt.Errorf("node %d given twice", n.ID)
		}
		p.nodes[n.ID] = &n
		p.ids = append(p.ids, n.ID)
		p.given[n.ID] = [2]int{n.Replicas, n.Leaders}
		p.replicas[n.ID] = n.Replicas
		p.leaders[n.ID] = n.Leaders
	}
	slices.Sort(p.ids)

	inflight := make(map[keys.RangeID][]Action)
	for _, a := range c.InFlight {
		inflight[a.Range] = append(inflight[a.Range], a)
	}
	seen := make(map[keys.RangeID]bool, len(c.Ranges))
	for _, in := range c.Ranges {
		r := in
		// In node order, so that no choice depends on the input's order.
		r.Replicas = slices.SortedFunc(slices.Values(in.Replicas), func(a, b Replica) int { return cmp.Compare(a.Node, b.Node) })
		if r.Factor == 0 {
			r.Factor = DefaultFactor
		}
		if err := p.validate(r, seen); err != nil {
			p.invalid = append(p.invalid, InvalidRange{Range: r.ID, Err: err})
			continue
		}
		seen[r.ID] = true
		p.ranges = append(p.ranges, &rng{Range: r})
	}
	slices.SortFunc(p.ranges, func(a, b *rng) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(p.invalid, func(a, b InvalidRange) int { return cmp.Compare(a.Range, b.Range) })

	// Reports describe the ranges as given.
	for _, r := range p.ranges {
		if !p.hasQuorum(r.Replicas) {
			p.unavail = append(p.unavail, r.ID)
		}
		if p.count(r.Replicas, func(rep Replica) bool { return rep.Type == Voter && !p.dead(rep.Node) }) < r.Factor {
			p.under = append(p.under, r.ID)
		}
	}

	// Counts are projected to where the moves under way end (a learner
	// promoted, then the voter it replaces removed), so that a move is
	// not started again at each call while the last one is finishing.
	// The ranges are settled in order, each seeing the counts as the
	// ones before it left them, as planning does.
	for _, r := range p.ranges {
		for _, rep := range r.Replicas {
			p.replicas[rep.Node]--
		}
		for _, a := range inflight[r.ID] {
			r.busy = true
			r.Range = Apply(r.Range, a)
			if a.Kind == TransferLeader {
				p.leaders[a.From]--
				p.leaders[a.Node]++
			}
		}
		p.own = make(map[NodeID]int, len(r.Replicas))
		for _, rep := range r.Replicas {
			p.own[rep.Node]++
		}
		r.settle = p.settle(r.Replicas, r.Factor)
		p.own = nil
		for n, k := range r.settle {
			p.replicas[n] += k
		}
	}
	return p, nil
}

func (p *planner) validate(r Range, seen map[keys.RangeID]bool) error {
	if seen[r.ID] {
		return fmt.Errorf("range %d given twice", r.ID)
	}
	if r.Factor < 0 {
		return fmt.Errorf("replication factor %d", r.Factor)
	}
	onNode := make(map[NodeID]bool, len(r.Replicas))
	ids := make(map[ReplicaID]bool, len(r.Replicas))
	for _, rep := range r.Replicas {
		if rep.ID == 0 {
			return fmt.Errorf("replica on node %d has ID 0", rep.Node)
		}
		if onNode[rep.Node] {
			return fmt.Errorf("two replicas on node %d", rep.Node)
		}
		if ids[rep.ID] {
			return fmt.Errorf("replica ID %d used twice", rep.ID)
		}
		if rep.ID >= r.NextReplicaID {
			return fmt.Errorf("replica ID %d not below the next replica ID %d", rep.ID, r.NextReplicaID)
		}
		onNode[rep.Node], ids[rep.ID] = true, true
	}
	return nil
}

// Apply returns a copy of r with a done: a learner added (not caught up),
// promoted or removed, or leadership moved. Plan uses it to see its own
// actions; a caller simulating the allocator's moves can too.
func Apply(r Range, a Action) Range {
	r.Replicas = slices.Clone(r.Replicas)
	switch a.Kind {
	case AddLearner:
		if !slices.ContainsFunc(r.Replicas, func(rep Replica) bool { return rep.Node == a.Node }) {
			r.Replicas = append(r.Replicas, Replica{Node: a.Node, ID: a.Replica, Type: Learner})
		}
		r.NextReplicaID = max(r.NextReplicaID, a.Replica+1)
	case Promote:
		for i := range r.Replicas {
			if r.Replicas[i].ID == a.Replica {
				r.Replicas[i].Type, r.Replicas[i].CaughtUp = Voter, false
			}
		}
	case Remove:
		r.Replicas = slices.DeleteFunc(r.Replicas, func(rep Replica) bool { return rep.ID == a.Replica })
	case TransferLeader:
		r.Leader = a.Node
	}
	return r
}

func (p *planner) state(n NodeID) NodeState {
	if node, ok := p.nodes[n]; ok {
		return node.State
	}
	return Dead // a node the cluster no longer knows holds nothing live
}

func (p *planner) dead(n NodeID) bool { return p.state(n) == Dead }

func (p *planner) count(reps []Replica, f func(Replica) bool) int {
	k := 0
	for _, rep := range reps {
		if f(rep) {
			k++
		}
	}
	return k
}

// hasQuorum reports whether the live voters of reps are a majority of its
// voters.
func (p *planner) hasQuorum(reps []Replica) bool {
	voters := p.count(reps, func(rep Replica) bool { return rep.Type == Voter })
	live := p.count(reps, func(rep Replica) bool { return rep.Type == Voter && !p.dead(rep.Node) })
	return live >= voters/2+1
}

// margin is how many more live voters a range can lose and keep a quorum.
func (p *planner) margin(reps []Replica) int {
	voters := p.count(reps, func(rep Replica) bool { return rep.Type == Voter })
	live := p.count(reps, func(rep Replica) bool { return rep.Type == Voter && !p.dead(rep.Node) })
	return live - (voters/2 + 1)
}

// settle returns the replicas per node reps ends with once its moves under
// way are done: learners on dead or decommissioning nodes removed, the
// others promoted, and voters beyond factor removed as finishMoves would.
func (p *planner) settle(reps []Replica, factor int) map[NodeID]int {
	out := make(map[NodeID]int, len(reps))
	if !p.hasQuorum(reps) {
		for _, rep := range reps {
			out[rep.Node]++
		}
		return out // nothing will happen to it
	}
	s := slices.DeleteFunc(slices.Clone(reps), func(rep Replica) bool {
		return rep.Type == Learner && p.state(rep.Node) != Live
	})
	for i := range s {
		s[i].Type = Voter
	}
	for len(s) > factor {
		i := p.removeChoice(s)
		s = slices.Delete(s, i, i+1)
	}
	for _, rep := range s {
		out[rep.Node]++
	}
	return out
}

// cnt is n's projected replica count as the range being decided sees it.
func (p *planner) cnt(n NodeID) int { return p.replicas[n] + p.own[n] }

// focus makes cnt see the counts without r's projected moves.
func (p *planner) focus(r *rng) {
	p.own = make(map[NodeID]int, len(r.Replicas))
	for n, k := range r.settle {
		p.own[n] -= k
	}
	for _, rep := range r.Replicas {
		p.own[rep.Node]++
	}
}

// change plans a on r: it is appended to the plan, r shows it done, and
// the projected counts follow.
func (p *planner) change(r *rng, a Action) {
	p.own = nil
	p.actions = append(p.actions, a)
	p.budget--
	r.busy = true
	r.Range = Apply(r.Range, a)
	if a.Kind == TransferLeader {
		p.leaders[a.From]--
		p.leaders[a.Node]++
		return
	}
	s := p.settle(r.Replicas, r.Factor)
	for n, k := range r.settle {
		p.replicas[n] -= k
	}
	for n, k := range s {
		p.replicas[n] += k
	}
	r.settle = s
}

// distance is CockroachDB's diversity score of two localities: 1 if they
// differ in their first tier, falling to 0 if they share every tier.
func distance(a, b Locality) float64 {
	n := min(len(a), len(b))
	for i := range n {
		if a[i].Value != b[i].Value {
			return float64(n-i) / float64(n)
		}
	}
	if len(a) != len(b) {
		return 0.5
	}
	return 0
}

func (p *planner) locality(n NodeID) Locality {
	if node, ok := p.nodes[n]; ok {
		return node.Locality
	}
	return nil
}

// spread is how far n lies from the nodes of reps (skipping n itself).
func (p *planner) spread(n NodeID, reps []Replica) float64 {
	sum := 0.0
	for _, rep := range reps {
		if rep.Node != n {
			sum += distance(p.locality(n), p.locality(rep.Node))
		}
	}
	return sum
}

func (p *planner) disk(n NodeID) int64 {
	if node, ok := p.nodes[n]; ok {
		return node.DiskUsed
	}
	return 0
}

// removeChoice returns the index of the replica of reps to remove: on a
// dead node, else on a decommissioning node, else the learner, else the
// one adding least diversity, else on the node with most replicas, then
// most disk used, then the lowest ID.
func (p *planner) removeChoice(reps []Replica) int {
	rank := func(rep Replica) int {
		switch {
		case p.state(rep.Node) == Dead:
			return 0
		case p.state(rep.Node) == Decommissioning:
			return 1
		case rep.Type == Learner:
			return 2
		}
		return 3
	}
	best := 0
	for i := 1; i < len(reps); i++ {
		a, b := reps[i], reps[best]
		if c := cmp.Compare(rank(a), rank(b)); c != 0 {
			if c < 0 {
				best = i
			}
			continue
		}
		if sa, sb := p.spread(a.Node, reps), p.spread(b.Node, reps); math.Abs(sa-sb) > epsilon {
			if sa < sb {
				best = i
			}
			continue
		}
		if c := cmp.Or(
			cmp.Compare(p.cnt(b.Node), p.cnt(a.Node)),
			cmp.Compare(p.disk(b.Node), p.disk(a.Node)),
			cmp.Compare(a.Node, b.Node),
		); c < 0 {
			best = i
		}
	}
	return best
}

// targets returns the live nodes holding no replica of reps, best first
// for a new replica that joins kept: most diversity, then fewest
// replicas, least disk used, lowest ID.
func (p *planner) targets(reps, kept []Replica) []NodeID {
	var out []NodeID
	for _, id := range p.ids {
		if p.state(id) == Live && !slices.ContainsFunc(reps, func(rep Replica) bool { return rep.Node == id }) {
			out = append(out, id)
		}
	}
	score := make(map[NodeID]float64, len(out))
	for _, id := range out {
		score[id] = p.spread(id, kept)
	}
	slices.SortStableFunc(out, func(a, b NodeID) int {
		if d := score[b] - score[a]; math.Abs(d) > epsilon {
			if d < 0 {
				return -1
			}
			return 1
		}
		return cmp.Or(
			cmp.Compare(p.cnt(a), p.cnt(b)),
			cmp.Compare(p.disk(a), p.disk(b)),
			cmp.Compare(a, b),
		)
	})
	return out
}

// addLearner plans a learner on the best target for r, replacing the
// replica on from (0 if none). It reports whether there was a target.
func (p *planner) addLearner(r *rng, from NodeID, why Reason) bool {
	kept := slices.DeleteFunc(slices.Clone(r.Replicas), func(rep Replica) bool { return p.state(rep.Node) != Live })
	t := p.targets(r.Replicas, kept)
	if len(t) == 0 {
		return false
	}
	p.change(r, Action{Kind: AddLearner, Range: r.ID, Node: t[0], Replica: r.NextReplicaID, From: from, Reason: why})
	return true
}

// leaderTarget returns the live, not decommissioning voter of r other than
// not with fewest leaders (lowest ID on a tie), or 0. A voter the range's
// moves under way will remove is passed over.
func (p *planner) leaderTarget(r *rng, not NodeID) NodeID {
	var best NodeID
	for _, rep := range r.Replicas {
		n := rep.Node
		if rep.Type != Voter || n == not || p.state(n) != Live || r.settle[n] == 0 {
			continue
		}
		if best == 0 || p.leaders[n] < p.leaders[best] || (p.leaders[n] == p.leaders[best] && n < best) {
			best = n
		}
	}
	return best
}

// remove plans the removal of r's replica i, or, if it is the leader's,
// the transfer of leadership that must come first. A live voter is
// removed only under a known leader and only if the live voters left are
// a quorum of the voters left.
func (p *planner) remove(r *rng, i int, why Reason) bool {
	rep := r.Replicas[i]
	if rep.Type == Voter && !p.dead(rep.Node) {
		if r.Leader == 0 || p.dead(r.Leader) {
			return false
		}
		if rep.Node == r.Leader {
			t := p.leaderTarget(r, rep.Node)
			if t == 0 {
				return false
			}
			p.change(r, Action{Kind: TransferLeader, Range: r.ID, Node: t, From: rep.Node, Reason: ReasonBeforeRemoval})
			return true
		}
	}
	if !p.hasQuorum(slices.Delete(slices.Clone(r.Replicas), i, i+1)) {
		return false
	}
	p.change(r, Action{Kind: Remove, Range: r.ID, Node: rep.Node, Replica: rep.ID, Reason: why})
	return true
}

// eligible reports whether r may get an action in this call.
func (p *planner) eligible(r *rng) bool {
	return p.budget > 0 && !r.busy && p.hasQuorum(r.Replicas)
}

// repair plans rule 1, most urgent ranges first.
func (p *planner) repair() {
	order := slices.Clone(p.ranges)
	slices.SortStableFunc(order, func(a, b *rng) int { return cmp.Compare(p.margin(a.Replicas), p.margin(b.Replicas)) })
	for _, r := range order {
		if p.eligible(r) {
			p.focus(r)
			p.repairRange(r)
			p.own = nil
		}
	}
}

func stateReason(s NodeState) Reason {
	if s == Dead {
		return ReasonDead
	}
	return ReasonDecommissioning
}

func (p *planner) repairRange(r *rng) {
	for i, rep := range r.Replicas {
		if rep.Type == Learner && p.state(rep.Node) != Live {
			p.remove(r, i, stateReason(p.state(rep.Node)))
			return
		}
	}
	if slices.ContainsFunc(r.Replicas, func(rep Replica) bool { return rep.Type == Learner }) {
		return // a move is under way: finishMoves promotes the learner
	}
	voters := p.count(r.Replicas, func(rep Replica) bool { return rep.Type == Voter })
	if voters < r.Factor {
		p.addLearner(r, 0, ReasonUnderReplicated)
		return
	}
	for _, s := range []NodeState{Dead, Decommissioning} {
		i := slices.IndexFunc(r.Replicas, func(rep Replica) bool { return p.state(rep.Node) == s })
		if i < 0 {
			continue
		}
		if voters > r.Factor && p.remove(r, p.removeChoice(r.Replicas), stateReason(s)) {
			return
		}
		if voters <= r.Factor && p.addLearner(r, r.Replicas[i].Node, stateReason(s)) {
			return
		}
		break // no target: the drain stalls, its leadership can still move
	}
	if r.Leader != 0 && p.state(r.Leader) == Decommissioning {
		if t := p.leaderTarget(r, r.Leader); t != 0 {
			p.change(r, Action{Kind: TransferLeader, Range: r.ID, Node: t, From: r.Leader, Reason: ReasonDecommissioning})
		}
	}
}

// finishMoves plans rule 2: caught-up learners promoted, voters beyond
// the factor removed.
func (p *planner) finishMoves() {
	for _, r := range p.ranges {
		if !p.eligible(r) {
			continue
		}
		if i := slices.IndexFunc(r.Replicas, func(rep Replica) bool { return rep.Type == Learner }); i >= 0 {
			rep := r.Replicas[i]
			if rep.CaughtUp && p.state(rep.Node) == Live {
				p.change(r, Action{Kind: Promote, Range: r.ID, Node: rep.Node, Replica: rep.ID, Reason: ReasonCaughtUp})
			}
			continue
		}
		if p.count(r.Replicas, func(rep Replica) bool { return rep.Type == Voter }) > r.Factor {
			p.focus(r)
			p.remove(r, p.removeChoice(r.Replicas), ReasonOverReplicated)
			p.own = nil
		}
	}
}

// bounds returns the mean of counts over the live nodes that are not
// decommissioning, and how far from it a node may be: 10% of it or 2,
// whichever is larger. ok is false if there is no such node.
func (p *planner) bounds(counts map[NodeID]int) (mean, bound float64, ok bool) {
	total, n := 0, 0
	for _, id := range p.ids {
		if p.state(id) == Live {
			total += counts[id]
			n++
		}
	}
	if n == 0 {
		return 0, 0, false
	}
	mean = float64(total) / float64(n)
	return mean, max(0.1*mean, 2), true
}

// worthMoving reports whether moving one from a node with count from to
// one with count to brings the nodes towards the mean: from above the
// bound and to below the mean, or to below the bound and from above the
// mean. Either way the two differ by more than 2, so every move lowers
// the spread of the counts and the moves come to an end.
func worthMoving(from, to int, mean, bound float64) bool {
	f, t := float64(from), float64(to)
	return (f > mean+bound && t < mean) || (t < mean-bound && f > mean)
}

// healthy reports whether r is as it should be but for balance: as many
// voters as its factor, all on live nodes, no learner.
func (p *planner) healthy(r *rng) bool {
	if len(r.Replicas) != r.Factor {
		return false
	}
	for _, rep := range r.Replicas {
		if rep.Type != Voter || p.state(rep.Node) != Live {
			return false
		}
	}
	return true
}

// sources returns the live nodes by count, highest first (lowest ID on a
// tie).
func (p *planner) sources(counts map[NodeID]int) []NodeID {
	var out []NodeID
	for _, id := range p.ids {
		if p.state(id) == Live {
			out = append(out, id)
		}
	}
	slices.SortStableFunc(out, func(a, b NodeID) int { return cmp.Compare(counts[b], counts[a]) })
	return out
}

// rebalance plans rule 3: first a learner wherever it raises a range's
// diversity (CockroachDB too puts diversity before balance), then a
// learner on a node below the mean whose promotion makes the replica on a
// node above it the one to remove. Diversity moves raise the sum of the
// ranges' diversity; balance moves never lower it and narrow the spread
// of the counts: so the moves come to an end.
func (p *planner) rebalance() {
	for _, r := range p.ranges {
		if p.eligible(r) && p.healthy(r) {
			p.diversify(r)
		}
	}
	for p.budget > 0 && p.rebalanceOne() {
	}
}

// diversity is the sum of the distances between reps' nodes.
func (p *planner) diversity(reps []Replica) float64 {
	sum := 0.0
	for i := range reps {
		for j := i + 1; j < len(reps); j++ {
			sum += distance(p.locality(reps[i].Node), p.locality(reps[j].Node))
		}
	}
	return sum
}

// diversify plans a learner on the node that raises r's diversity most
// once the replica its promotion makes the one to remove is gone (the
// fewest replicas, then the lowest ID, among the best).
func (p *planner) diversify(r *rng) {
	before := p.diversity(r.Replicas)
	var best, from NodeID
	bestDiv := before
	for _, t := range p.targets(r.Replicas, nil) {
		p.replicas[t]++
		with := append(slices.Clone(r.Replicas), Replica{Node: t, Type: Voter})
		i := p.removeChoice(with)
		p.replicas[t]--
		if with[i].Node == t {
			continue
		}
		rm := with[i].Node
		after := p.diversity(slices.Delete(with, i, i+1))
		// targets orders by count then ID among equals: the first best
		// stays.
		if after > bestDiv+epsilon {
			best, from, bestDiv = t, rm, after
		}
	}
	if best != 0 {
		p.change(r, Action{Kind: AddLearner, Range: r.ID, Node: best, Replica: r.NextReplicaID, From: from, Reason: ReasonDiversity})
	}
}

func (p *planner) rebalanceOne() bool {
	mean, bound, ok := p.bounds(p.replicas)
	if !ok {
		return false
	}
	for _, s := range p.sources(p.replicas) {
		if float64(p.replicas[s]) <= mean {
			return false
		}
		for _, r := range p.ranges {
			if !p.eligible(r) || !p.healthy(r) || !slices.ContainsFunc(r.Replicas, func(rep Replica) bool { return rep.Node == s }) {
				continue
			}
			if p.rebalanceRange(r, s, mean, bound) {
				return true
			}
		}
	}
	return false
}

func (p *planner) rebalanceRange(r *rng, s NodeID, mean, bound float64) bool {
	kept := slices.DeleteFunc(slices.Clone(r.Replicas), func(rep Replica) bool { return rep.Node == s })
	for _, t := range p.targets(r.Replicas, kept) {
		if !worthMoving(p.replicas[s], p.replicas[t], mean, bound) {
			continue
		}
		// The learner, once promoted, must make s's replica the one to
		// remove; otherwise the move would not relieve s, or would
		// lower the range's diversity (removeChoice weighs it first).
		p.replicas[t]++
		with := append(slices.Clone(r.Replicas), Replica{Node: t, Type: Voter})
		rm := with[p.removeChoice(with)].Node
		p.replicas[t]--
		if rm != s {
			continue
		}
		p.change(r, Action{Kind: AddLearner, Range: r.ID, Node: t, Replica: r.NextReplicaID, From: s, Reason: ReasonRebalance})
		return true
	}
	return false
}

// balanceLeaders plans rule 4: leadership moved among a range's live
// voters from nodes above the mean leader count to nodes below it.
func (p *planner) balanceLeaders() {
	for p.budget > 0 && p.balanceLeadersOne() {
	}
}

func (p *planner) balanceLeadersOne() bool {
	mean, bound, ok := p.bounds(p.leaders)
	if !ok {
		return false
	}
	for _, s := range p.sources(p.leaders) {
		if float64(p.leaders[s]) <= mean {
			return false
		}
		for _, r := range p.ranges {
			if !p.eligible(r) || r.Leader != s {
				continue
			}
			t := p.leaderTarget(r, s)
			if t != 0 && worthMoving(p.leaders[s], p.leaders[t], mean, bound) {
				p.change(r, Action{Kind: TransferLeader, Range: r.ID, Node: t, From: s, Reason: ReasonLeaders})
				return true
			}
		}
	}
	return false
}

func (p *planner) result() Result {
	res := Result{
		Actions:         p.actions,
		UnderReplicated: p.under,
		Unavailable:     p.unavail,
		Invalid:         p.invalid,
	}
	for _, id := range p.ids {
		n := p.nodes[id]
		res.Nodes = append(res.Nodes, NodeReport{
			ID: id, Name: n.Name, State: n.State,
			Replicas: p.given[id][0], Leaders: p.given[id][1],
			ProjectedReplicas: p.replicas[id], ProjectedLeaders: p.leaders[id],
		})
	}
	return res
}
