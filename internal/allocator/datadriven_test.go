package allocator

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/synod-io/synod/internal/keys"
)

// The data-driven tests read testdata/*.txt, a small form of
// cockroachdb/datadriven's (not a dependency of this module): a case is a
// command line, its input lines, a line "----", and the expected output,
// which ends at a blank line. Lines starting with # between cases are
// comments. go test -run TestData -rewrite writes the outputs instead.
//
// Commands:
//
//	plan [max-moves=N]       one call of Plan
//	simulate [max-moves=N] [steps=N]
//	                         Plan and apply its actions until it proposes
//	                         none (learners catch up after one step)
//
// Input lines:
//
//	node ID [name=S] [locality=k=v,k=v] [state=live|dead|decommissioning]
//	        [replicas=N] [leaders=N] [disk=N]
//	range ID replicas=n1:1,n2:2,n3:3/learner,n4:4/caught-up [leader=nN]
//	        [factor=N] [next=N] [size=N] [span=a-b]
//	inflight KIND rID nN [replica=N] [from=nN]
//
// A node's counts are tallied from the ranges unless given; a range's next
// replica ID is one above its highest unless given.
var rewrite = flag.Bool("rewrite", false, "rewrite the expected outputs of testdata/*.txt")

type ddCase struct {
	cmd      string
	input    []string
	expected string
	// start and end are the case's lines in the file, [start, end).
	start, end int
}

func parseCases(t *testing.T, path string, lines []string) []ddCase {
	var cases []ddCase
	for i := 0; i < len(lines); {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "#") {
			i++
			continue
		}
		c := ddCase{cmd: l, start: i}
		i++
		for ; i < len(lines) && lines[i] != "----"; i++ {
			if s := strings.TrimSpace(lines[i]); s != "" && !strings.HasPrefix(s, "#") {
				c.input = append(c.input, s)
			}
		}
		if i == len(lines) {
			t.Fatalf("%s:%d: case %q has no ----", path, c.start+1, c.cmd)
		}
		i++
		var out []string
		for ; i < len(lines) && lines[i] != ""; i++ {
			out = append(out, lines[i])
		}
		c.expected = strings.Join(out, "\n")
		c.end = i
		cases = append(cases, c)
	}
	return cases
}

func TestData(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("testdata: got %v, %v, want files", files, err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			cases := parseCases(t, path, lines)
			var rewritten []string
			last := 0
			for _, c := range cases {
				got, err := runCase(c)
				if err != nil {
					t.Fatalf("%s:%d: %s: %v", path, c.start+1, c.cmd, err)
				}
				if *rewrite {
					head := lines[last:c.start]
					rewritten = append(rewritten, head...)
					rewritten = append(rewritten, lines[c.start:c.start+1+nonOutput(lines[c.start:c.end])]...)
					rewritten = append(rewritten, got)
					last = c.end
					continue
				}
				if got != c.expected {
					t.Errorf("%s:%d: %s:\ngot:\n%s\nwant:\n%s", path, c.start+1, c.cmd, got, c.expected)
				}
			}
			if *rewrite {
				rewritten = append(rewritten, lines[last:]...)
				if err := os.WriteFile(path, []byte(strings.Join(rewritten, "\n")+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// nonOutput returns how many lines of a case, after its command, come
// before its output (its input and the ---- line).
func nonOutput(lines []string) int {
	return slices.Index(lines, "----")
}

func runCase(c ddCase) (string, error) {
	args, err := parseArgs(strings.Fields(c.cmd)[1:])
	if err != nil {
		return "", err
	}
	cl, err := parseCluster(c.input)
	if err != nil {
		return "", err
	}
	o := Options{MaxMoves: args["max-moves"]}
	switch strings.Fields(c.cmd)[0] {
	case "plan":
		res, err := Plan(cl, o)
		if err != nil {
			return "error: " + err.Error(), nil
		}
		return formatResult(res), nil
	case "simulate":
		return simulate(cl, o, args["steps"])
	}
	return "", fmt.Errorf("unknown command %q", c.cmd)
}

// parseArgs reads key=N arguments.
func parseArgs(fields []string) (map[string]int, error) {
	args := make(map[string]int)
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("argument %q: want key=N", f)
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("argument %q: %v", f, err)
		}
		args[k] = n
	}
	return args, nil
}

func nodeArg(s string) (NodeID, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "n"), 10, 64)
	return NodeID(n), err
}

func parseCluster(lines []string) (Cluster, error) {
	var c Cluster
	tallyReplicas, tallyLeaders := map[NodeID]bool{}, map[NodeID]bool{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 2 {
			return c, fmt.Errorf("line %q: too short", l)
		}
		kv := make(map[string]string)
		var pos []string
		for _, x := range f[2:] {
			if k, v, ok := strings.Cut(x, "="); ok {
				kv[k] = v
			} else {
				pos = append(pos, x)
			}
		}
		num := func(k string) (int64, error) {
			if v, ok := kv[k]; ok {
				return strconv.ParseInt(v, 10, 64)
			}
			return 0, nil
		}
		switch f[0] {
		case "node":
			id, err := nodeArg(f[1])
			if err != nil {
				return c, fmt.Errorf("line %q: %v", l, err)
			}
			n := Node{ID: id, Name: kv["name"]}
			if n.Locality, err = ParseLocality(kv["locality"]); err != nil {
				return c, fmt.Errorf("line %q: %v", l, err)
			}
			switch kv["state"] {
			case "", "live":
			case "dead":
				n.State = Dead
			case "decommissioning":
				n.State = Decommissioning
			default:
				return c, fmt.Errorf("line %q: unknown state", l)
			}
			r, err1 := num("replicas")
			ld, err2 := num("leaders")
			d, err3 := num("disk")
			if err := errors.Join(err1, err2, err3); err != nil {
				return c, fmt.Errorf("line %q: %v", l, err)
			}
			n.Replicas, n.Leaders, n.DiskUsed = int(r), int(ld), d
			_, hasR := kv["replicas"]
			_, hasL := kv["leaders"]
			tallyReplicas[id], tallyLeaders[id] = !hasR, !hasL
			c.Nodes = append(c.Nodes, n)
		case "range":
			id, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return c, fmt.Errorf("line %q: %v", l, err)
			}
			r := Range{ID: keys.RangeID(id)}
			if kv["replicas"] != "" {
				for _, x := range strings.Split(kv["replicas"], ",") {
					rep, err := parseReplica(x)
					if err != nil {
						return c, fmt.Errorf("line %q: %v", l, err)
					}
					r.Replicas = append(r.Replicas, rep)
					r.NextReplicaID = max(r.NextReplicaID, rep.ID+1)
				}
			}
			if v, ok := kv["leader"]; ok {
				if r.Leader, err = nodeArg(v); err != nil {
					return c, fmt.Errorf("line %q: %v", l, err)
				}
			}
			fa, err1 := num("factor")
			nx, err2 := num("next")
			sz, err3 := num("size")
			if err := errors.Join(err1, err2, err3); err != nil {
				return c, fmt.Errorf("line %q: %v", l, err)
			}
			r.Factor, r.Size = int(fa), sz
			if _, ok := kv["next"]; ok {
				r.NextReplicaID = ReplicaID(nx)
			}
			if s, ok := kv["span"]; ok {
				a, b, _ := strings.Cut(s, "-")
				r.Start, r.End = []byte(a), []byte(b)
			}
			c.Ranges = append(c.Ranges, r)
		case "inflight":
			if len(f) < 4 {
				return c, fmt.Errorf("line %q: want inflight KIND rID nN", l)
			}
			var a Action
			for k := AddLearner; k <= TransferLeader; k++ {
				if k.String() == f[1] {
					a.Kind = k
				}
			}
			if a.Kind == 0 {
				return c, fmt.Errorf("line %q: unknown kind", l)
			}
			rid, err1 := strconv.ParseUint(strings.TrimPrefix(f[2], "r"), 10, 64)
			nid, err2 := nodeArg(f[3])
			rep, err3 := num("replica")
			if err := errors.Join(err1, err2, err3); err != nil {
				return c, fmt.Errorf("line %q: %v", l, err)
			}
			a.Range, a.Node, a.Replica = keys.RangeID(rid), nid, ReplicaID(rep)
			if v, ok := kv["from"]; ok {
				var err error
				if a.From, err = nodeArg(v); err != nil {
					return c, fmt.Errorf("line %q: %v", l, err)
				}
			}
			c.InFlight = append(c.InFlight, a)
		default:
			return c, fmt.Errorf("line %q: unknown kind of line", l)
		}
	}
	tallied := Tally(c.Nodes, c.Ranges)
	for i := range c.Nodes {
		if tallyReplicas[c.Nodes[i].ID] {
			c.Nodes[i].Replicas = tallied[i].Replicas
		}
		if tallyLeaders[c.Nodes[i].ID] {
			c.Nodes[i].Leaders = tallied[i].Leaders
		}
	}
	return c, nil
}

// parseReplica reads n1:1, n4:4/learner or n4:4/caught-up.
func parseReplica(s string) (Replica, error) {
	s, kind, _ := strings.Cut(s, "/")
	n, id, ok := strings.Cut(s, ":")
	if !ok {
		return Replica{}, fmt.Errorf("replica %q: want nNODE:ID", s)
	}
	node, err := nodeArg(n)
	if err != nil {
		return Replica{}, fmt.Errorf("replica %q: %v", s, err)
	}
	rid, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return Replica{}, fmt.Errorf("replica %q: %v", s, err)
	}
	rep := Replica{Node: node, ID: ReplicaID(rid)}
	switch kind {
	case "":
	case "learner":
		rep.Type = Learner
	case "caught-up":
		rep.Type, rep.CaughtUp = Learner, true
	default:
		return Replica{}, fmt.Errorf("replica %q: unknown kind %q", s, kind)
	}
	return rep, nil
}

func formatReplica(rep Replica) string {
	s := fmt.Sprintf("n%d:%d", rep.Node, rep.ID)
	if rep.Type == Learner {
		if rep.CaughtUp {
			return s + "/caught-up"
		}
		return s + "/learner"
	}
	return s
}

func formatIDs(ids []keys.RangeID) string {
	if len(ids) == 0 {
		return "none"
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprintf("r%d", id)
	}
	return strings.Join(s, " ")
}

func formatResult(res Result) string {
	var b strings.Builder
	if len(res.Actions) == 0 {
		b.WriteString("no actions\n")
	}
	for _, a := range res.Actions {
		b.WriteString(a.String() + "\n")
	}
	b.WriteString("nodes:\n")
	for _, n := range res.Nodes {
		name := ""
		if n.Name != "" {
			name = " " + n.Name
		}
		fmt.Fprintf(&b, "  n%d%s %s: replicas %d -> %d, leaders %d -> %d\n", n.ID, name, n.State,
			n.Replicas, n.ProjectedReplicas, n.Leaders, n.ProjectedLeaders)
	}
	fmt.Fprintf(&b, "under-replicated: %s\nunavailable: %s", formatIDs(res.UnderReplicated), formatIDs(res.Unavailable))
	for _, inv := range res.Invalid {
		fmt.Fprintf(&b, "\ninvalid: r%d: %v", inv.Range, inv.Err)
	}
	return b.String()
}

// step applies actions to c and then lets every learner catch up, as
// the server would between two calls.
func step(c Cluster, actions []Action) Cluster {
	byID := make(map[keys.RangeID]int, len(c.Ranges))
	for i, r := range c.Ranges {
		byID[r.ID] = i
	}
	c.Ranges = slices.Clone(c.Ranges)
	for _, a := range actions {
		i := byID[a.Range]
		c.Ranges[i] = Apply(c.Ranges[i], a)
	}
	state := make(map[NodeID]NodeState, len(c.Nodes))
	for _, n := range c.Nodes {
		state[n.ID] = n.State
	}
	for i := range c.Ranges {
		r := &c.Ranges[i]
		leaderOK := false
		for j := range r.Replicas {
			rep := &r.Replicas[j]
			if rep.Type == Learner {
				rep.CaughtUp = true
			}
			if rep.Node == r.Leader && rep.Type == Voter && state[rep.Node] != Dead {
				leaderOK = true
			}
		}
		if leaderOK || r.Leader == 0 {
			continue
		}
		// Raft elects another leader, the lowest live voter here, if a
		// quorum is live.
		r.Leader = 0
		if live, voters := liveVoters(*r, state); live > voters/2 {
			for _, rep := range r.Replicas {
				if rep.Type == Voter && state[rep.Node] != Dead && (r.Leader == 0 || rep.Node < r.Leader) {
					r.Leader = rep.Node
				}
			}
		}
	}
	c.Nodes = Tally(c.Nodes, c.Ranges)
	return c
}

// liveVoters returns r's voters on nodes not dead (known to state) and
// all its voters.
func liveVoters(r Range, state map[NodeID]NodeState) (live, voters int) {
	for _, rep := range r.Replicas {
		if rep.Type != Voter {
			continue
		}
		voters++
		if s, ok := state[rep.Node]; ok && s != Dead {
			live++
		}
	}
	return live, voters
}

func simulate(c Cluster, o Options, steps int) (string, error) {
	if steps == 0 {
		steps = 50
	}
	var b strings.Builder
	var last Result
	done := false
	for i := 1; i <= steps; i++ {
		res, err := Plan(c, o)
		if err != nil {
			return "", err
		}
		last = res
		if len(res.Actions) == 0 {
			fmt.Fprintf(&b, "done after %d steps\n", i-1)
			done = true
			break
		}
		for _, a := range res.Actions {
			fmt.Fprintf(&b, "%d: %s\n", i, a)
		}
		c = step(c, res.Actions)
	}
	if !done {
		fmt.Fprintf(&b, "not done after %d steps\n", steps)
	}
	for _, r := range c.Ranges {
		reps := make([]string, len(r.Replicas))
		for i, rep := range r.Replicas {
			reps[i] = formatReplica(rep)
		}
		fmt.Fprintf(&b, "r%d: %s leader=n%d next=%d\n", r.ID, strings.Join(reps, ","), r.Leader, r.NextReplicaID)
	}
	b.WriteString(formatResult(last))
	return b.String(), nil
}
