package allocator

import (
	"fmt"
	"strings"

	"github.com/synod-io/synod/internal/keys"
)

// NodeID names a node of the cluster.
type NodeID uint64

// ReplicaID names one replica of one range (its Raft ID). A range never
// gives the same ID twice, so a removed replica can never vote again.
type ReplicaID uint64

// NodeState is a node's liveness as the cluster sees it.
type NodeState int

const (
	// Live nodes serve and may receive replicas.
	Live NodeState = iota
	// Dead nodes were unreachable for longer than the dead-node timeout:
	// their replicas count as lost.
	Dead
	// Decommissioning nodes are live but being drained: their replicas
	// still vote, are replaced elsewhere, and they receive none.
	Decommissioning
)

func (s NodeState) String() string {
	switch s {
	case Live:
		return "live"
	case Dead:
		return "dead"
	case Decommissioning:
		return "decommissioning"
	}
	return fmt.Sprintf("NodeState(%d)", int(s))
}

// Tier is one level of a locality, such as region=eu.
type Tier struct{ Key, Value string }

// Locality is a node's place, its widest tier first: region=eu,zone=a.
type Locality []Tier

func (l Locality) String() string {
	parts := make([]string, len(l))
	for i, t := range l {
		parts[i] = t.Key + "=" + t.Value
	}
	return strings.Join(parts, ",")
}

// ParseLocality reads the form String writes (the --locality flag's).
func ParseLocality(s string) (Locality, error) {
	if s == "" {
		return nil, nil
	}
	var l Locality
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("locality tier %q: want key=value", part)
		}
		l = append(l, Tier{Key: k, Value: v})
	}
	return l, nil
}

// Node is one node as the allocator sees it.
type Node struct {
	ID       NodeID
	Name     string
	Locality Locality
	State    NodeState
	// Replicas counts the replicas the node holds, learners included, and
	// Leaders the ranges it leads (Tally computes both from ranges).
	Replicas, Leaders int
	// DiskUsed is in bytes, 0 if unknown; it breaks ties between nodes
	// holding as many replicas.
	DiskUsed int64
}

// ReplicaType says whether a replica votes.
type ReplicaType int

const (
	// Voter replicas are part of the range's quorum.
	Voter ReplicaType = iota
	// Learner replicas receive the log but do not vote: a new replica is
	// one until it has caught up and is promoted.
	Learner
)

func (t ReplicaType) String() string {
	if t == Learner {
		return "learner"
	}
	return "voter"
}

// Replica is one replica of a range.
type Replica struct {
	Node NodeID
	ID   ReplicaID
	Type ReplicaType
	// CaughtUp says that a learner holds a snapshot and nearly all of the
	// range's log, so it may be promoted. The zero value (not caught up)
	// is the safe one.
	CaughtUp bool
}

// DefaultFactor is the replication factor of a range whose zone config
// names none.
const DefaultFactor = 3

// Range is one range as the allocator sees it.
type Range struct {
	ID         keys.RangeID
	Start, End []byte
	Replicas   []Replica
	// Leader is the node of the range's Raft leader, 0 if unknown.
	Leader NodeID
	// Size is in bytes (reported, not yet weighed).
	Size int64
	// Factor is the replication factor (voters wanted); 0 means
	// DefaultFactor.
	Factor int
	// NextReplicaID is the ID the range's next new replica gets: above
	// every ID it ever gave.
	NextReplicaID ReplicaID
}

// Kind is what an action does.
type Kind int

const (
	// AddLearner adds a learner replica, Replica, on Node.
	AddLearner Kind = iota + 1
	// Promote makes the caught-up learner Replica on Node a voter.
	Promote
	// Remove removes Replica, on Node, from the range.
	Remove
	// TransferLeader moves the range's leadership from From to Node.
	TransferLeader
)

func (k Kind) String() string {
	switch k {
	case AddLearner:
		return "add-learner"
	case Promote:
		return "promote"
	case Remove:
		return "remove"
	case TransferLeader:
		return "transfer-leader"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Reason is why an action is proposed.
type Reason int

const (
	// ReasonDead replaces or removes a replica on a dead node.
	ReasonDead Reason = iota + 1
	// ReasonDecommissioning replaces or removes a replica, or moves
	// leadership, off a decommissioning node.
	ReasonDecommissioning
	// ReasonUnderReplicated adds a replica to a range with fewer voters
	// than its factor.
	ReasonUnderReplicated
	// ReasonOverReplicated removes a voter from a range with more than its
	// factor.
	ReasonOverReplicated
	// ReasonCaughtUp promotes a learner that caught up.
	ReasonCaughtUp
	// ReasonRebalance moves a replica from a node above the mean to one
	// below it.
	ReasonRebalance
	// ReasonLeaders moves leadership from a node above the mean leader
	// count to one below it.
	ReasonLeaders
	// ReasonBeforeRemoval moves leadership off a voter about to be removed.
	ReasonBeforeRemoval
	// ReasonDiversity moves a replica to where it spreads the range over
	// more distinct localities.
	ReasonDiversity
)

func (r Reason) String() string {
	switch r {
	case ReasonDead:
		return "dead"
	case ReasonDecommissioning:
		return "decommissioning"
	case ReasonUnderReplicated:
		return "under-replicated"
	case ReasonOverReplicated:
		return "over-replicated"
	case ReasonCaughtUp:
		return "caught-up"
	case ReasonRebalance:
		return "rebalance"
	case ReasonLeaders:
		return "leaders"
	case ReasonBeforeRemoval:
		return "before-removal"
	case ReasonDiversity:
		return "diversity"
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// Action is one step proposed for one range.
type Action struct {
	Kind  Kind
	Range keys.RangeID
	// Node is where a learner is added, the node of the replica promoted
	// or removed, or the new leader.
	Node NodeID
	// Replica is the replica added, promoted or removed (0 for leadership).
	Replica ReplicaID
	// From is, for TransferLeader, the current leader; for AddLearner, the
	// node whose replica the new one replaces (removed once it is
	// promoted), 0 for a replica added to an under-replicated range.
	From   NodeID
	Reason Reason
}

func (a Action) String() string {
	switch a.Kind {
	case AddLearner:
		s := fmt.Sprintf("add-learner r%d n%d replica %d", a.Range, a.Node, a.Replica)
		if a.From != 0 {
			s += fmt.Sprintf(" replacing n%d", a.From)
		}
		return s + " (" + a.Reason.String() + ")"
	case TransferLeader:
		return fmt.Sprintf("transfer-leader r%d n%d -> n%d (%s)", a.Range, a.From, a.Node, a.Reason)
	}
	return fmt.Sprintf("%s r%d n%d replica %d (%s)", a.Kind, a.Range, a.Node, a.Replica, a.Reason)
}

// Options bound a call.
type Options struct {
	// MaxMoves is the most actions one call returns; 0 means
	// DefaultMaxMoves.
	MaxMoves int
}

// DefaultMaxMoves bounds a call whose Options name no bound.
const DefaultMaxMoves = 32

// Cluster is the allocator's input.
type Cluster struct {
	Nodes  []Node
	Ranges []Range
	// InFlight are actions proposed earlier and not yet done: their
	// ranges get no other action, and their effect is counted.
	InFlight []Action
}

// NodeReport is one node's counts, for metrics and the decommission
// progress.
type NodeReport struct {
	ID    NodeID
	Name  string
	State NodeState
	// Replicas and Leaders are the node's counts as given.
	Replicas, Leaders int
	// Projected are the counts once the moves in flight, the planned
	// actions and the moves they start are done.
	ProjectedReplicas, ProjectedLeaders int
}

// InvalidRange is a range left alone because its description is
// inconsistent.
type InvalidRange struct {
	Range keys.RangeID
	Err   error
}

// Result is the allocator's output.
type Result struct {
	// Actions are in the order to carry them out, at most one per range.
	Actions []Action
	// Nodes are by ID.
	Nodes []NodeReport
	// UnderReplicated are the ranges with fewer voters on non-dead nodes
	// than their factor; Unavailable the ranges whose live voters are not
	// a quorum. Both by ID.
	UnderReplicated, Unavailable []keys.RangeID
	Invalid                      []InvalidRange
}
