package lincheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Result is the outcome of Check.
type Result struct {
	// Linearizable is porcupine's verdict: Ok, Illegal, or Unknown when it
	// ran out of time.
	Linearizable porcupine.CheckResult
	// Problems lists what the other checks found (revisions), one line each.
	Problems []string
	info     porcupine.LinearizationInfo
	history  []Op
}

// OK reports whether every check passed.
func (r Result) OK() bool {
	return r.Linearizable == porcupine.Ok && len(r.Problems) == 0
}

func (r Result) String() string {
	if r.OK() {
		return "linearizable, revisions consistent"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "linearizability: %s", r.Linearizable)
	for _, p := range r.Problems {
		b.WriteString("\n  " + p)
	}
	return b.String()
}

// Check checks a history: linearizability (porcupine, at most timeout) and
// the revisions' real-time order.
func Check(history []Op, timeout time.Duration) Result {
	res := Result{history: history}
	ops := toPorcupine(history)
	res.Linearizable, res.info = porcupine.CheckOperationsVerbose(Model, ops, timeout)
	res.Problems = CheckRevisions(history)
	return res
}

// toPorcupine converts a history; operations of unknown outcome return at
// the end of the history.
func toPorcupine(history []Op) []porcupine.Operation {
	var end int64
	for _, o := range history {
		end = max(end, o.Return)
	}
	ops := make([]porcupine.Operation, 0, len(history))
	for _, o := range history {
		ret := o.Return
		if o.Output.Unknown {
			ret = end + 1
		}
		ops = append(ops, porcupine.Operation{ClientId: o.Client, Input: o.Input, Output: o.Output, Call: o.Call, Return: ret})
	}
	return ops
}

// maxListed bounds the problems of one sort that are listed one by one.
const maxListed = 5

// CheckRevisions checks what crosses keys: an operation invoked after
// another returned has a header revision at least as high, and no two
// acknowledged writes share a revision. It returns one line per problem.
func CheckRevisions(history []Op) []string {
	var problems []string
	var known []Op
	for _, o := range history {
		if !o.Output.Unknown && o.Output.Revision > 0 {
			known = append(known, o)
		}
	}
	byReturn := append([]Op(nil), known...)
	sort.Slice(byReturn, func(i, j int) bool { return byReturn[i].Return < byReturn[j].Return })
	byCall := append([]Op(nil), known...)
	sort.Slice(byCall, func(i, j int) bool { return byCall[i].Call < byCall[j].Call })
	var best Op // the operation of highest revision returned so far
	i, back := 0, 0
	for _, o := range byCall {
		for i < len(byReturn) && byReturn[i].Return < o.Call {
			if byReturn[i].Output.Revision > best.Output.Revision {
				best = byReturn[i]
			}
			i++
		}
		if o.Output.Revision < best.Output.Revision {
			back++
			if back <= maxListed {
				problems = append(problems, fmt.Sprintf("revision went back in real time: %s started after %s returned", o, best))
			}
		}
	}
	if back > maxListed {
		problems = append(problems, fmt.Sprintf("... and %d more operations saw a revision older than one returned before they started", back-maxListed))
	}
	writers := map[int64]Op{}
	dups := 0
	for _, o := range known {
		if !isWrite(o) {
			continue
		}
		if prev, ok := writers[o.Output.Revision]; ok {
			dups++
			if dups <= maxListed {
				problems = append(problems, fmt.Sprintf("two writes at revision %d: %s and %s", o.Output.Revision, prev, o))
			}
		}
		writers[o.Output.Revision] = o
	}
	if dups > maxListed {
		problems = append(problems, fmt.Sprintf("... and %d more writes at a revision already written", dups-maxListed))
	}
	return problems
}

// isWrite reports whether an acknowledged operation created a revision.
func isWrite(o Op) bool {
	switch o.Input.Kind {
	case Put:
		return true
	case CAS:
		return o.Output.Succeeded
	case Delete:
		return o.Output.Deleted > 0
	}
	return false
}

// ErrFutureRevision is what a Reader returns when the store has not reached
// the revision asked for (etcd's ErrFutureRev): the write is lost.
var ErrFutureRevision = errors.New("revision is in the future of the store")

// Reader reads key at revision rev (etcd's Get WithRev).
type Reader func(ctx context.Context, key string, rev int64) (exists bool, value string, modRev int64, err error)

// CheckDurable reads back, at its revision, every write the history says
// was acknowledged, and returns one line per write that is missing or
// different. Run it after every node restarted; the store must not have been
// compacted.
func CheckDurable(ctx context.Context, history []Op, read Reader) (missing []string, err error) {
	lost := 0
	defer func() {
		if lost > maxListed {
			missing = append(missing, fmt.Sprintf("... and %d more acknowledged writes lost", lost-maxListed))
		}
	}()
	for _, o := range history {
		if o.Output.Unknown || !isWrite(o) {
			continue
		}
		exists, value, modRev, err := read(ctx, o.Input.Key, o.Output.Revision)
		var got string
		switch {
		case errors.Is(err, ErrFutureRevision):
			got = "the store has not reached that revision"
		case err != nil:
			return missing, fmt.Errorf("read %s at revision %d: %w", o.Input.Key, o.Output.Revision, err)
		case !exists:
			got = "the key is absent"
		default:
			got = fmt.Sprintf("the key is %q@%d", value, modRev)
		}
		wantExists := o.Input.Kind != Delete
		ok := err == nil && exists == wantExists
		if wantExists {
			ok = ok && value == o.Input.Value && modRev == o.Output.Revision
		}
		if !ok {
			lost++
			if lost <= maxListed {
				missing = append(missing, fmt.Sprintf("acknowledged write lost: %s; at revision %d %s", o, o.Output.Revision, got))
			}
		}
	}
	return missing, nil
}

// Report is what a failed run leaves for replay.
type Report struct {
	Seed     int64        `json:"seed"`
	Replay   string       `json:"replay"`
	Faults   []Event      `json:"faults"`
	Verdict  string       `json:"verdict"`
	Problems []string     `json:"problems,omitempty"`
	History  []Op         `json:"history"`
	EventLog []WatchEvent `json:"eventLog,omitempty"`
	Watchers []Watcher    `json:"watchers,omitempty"`
	Leases   []Lease      `json:"leases,omitempty"`
}

// WriteFiles writes the report as JSON and porcupine's visualization of the
// history (with the faults as annotations) as HTML into dir, and returns
// their paths.
func (r Result) WriteFiles(dir string, rep Report) (jsonPath, htmlPath string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("create report dir: %w", err)
	}
	rep.Verdict = r.String()
	if v := r.Explain(); v != "" {
		rep.Verdict += "\n" + v
	}
	rep.History = r.history
	b, err := json.MarshalIndent(rep, "", " ")
	if err != nil {
		return "", "", fmt.Errorf("encode report: %w", err)
	}
	jsonPath = filepath.Join(dir, "history.json")
	if err := os.WriteFile(jsonPath, b, 0o644); err != nil {
		return "", "", fmt.Errorf("write report: %w", err)
	}
	var notes []porcupine.Annotation
	for _, e := range rep.Faults {
		notes = append(notes, porcupine.Annotation{Tag: "faults", Start: e.Start, End: e.End, Description: e.Description, BackgroundColor: "#f5c6cb"})
	}
	r.info.AddAnnotations(notes)
	htmlPath = filepath.Join(dir, "linearizability.html")
	if err := porcupine.VisualizePath(Model, r.info, htmlPath); err != nil {
		return jsonPath, "", fmt.Errorf("write visualization: %w", err)
	}
	return jsonPath, htmlPath, nil
}

// Explain describes, for each key porcupine could not linearize, the end of
// the longest linearization it found and the operations that could not
// follow it. Empty when the history is linearizable.
func (r Result) Explain() string {
	if r.Linearizable != porcupine.Illegal {
		return ""
	}
	var b strings.Builder
	// PartialLinearizationsOperations has one entry per partition, in the
	// order of Model.Partition.
	parts := Model.Partition(toPorcupine(r.history))
	for p, lins := range r.info.PartialLinearizationsOperations() {
		if p >= len(parts) || len(parts[p]) == 0 {
			continue
		}
		key := parts[p][0].Input.(Input).Key
		total := len(parts[p])
		var longest []porcupine.Operation
		for _, lin := range lins {
			if len(lin) > len(longest) {
				longest = lin
			}
		}
		if len(longest) == total {
			continue
		}
		type opKey struct {
			client int
			call   int64
		}
		in := map[opKey]bool{}
		for _, o := range longest {
			in[opKey{o.ClientId, o.Call}] = true
		}
		fmt.Fprintf(&b, "key %q: only %d of %d operations linearize", key, len(longest), total)
		if len(longest) > 0 {
			b.WriteString("; the longest linearization ends with:\n")
		} else {
			b.WriteString(":\n")
		}
		state := Model.Init()
		for i, o := range longest {
			_, state = Model.Step(state, o.Input, o.Output)
			if i >= len(longest)-5 {
				fmt.Fprintf(&b, "    client %d: %s  => %s\n", o.ClientId, Model.DescribeOperation(o.Input, o.Output), Model.DescribeState(state))
			}
		}
		b.WriteString("  and none of these can come next:\n")
		var rest []Op
		for _, o := range r.history {
			if o.Input.Key == key && !in[opKey{o.Client, o.Call}] {
				rest = append(rest, o)
			}
		}
		sort.Slice(rest, func(i, j int) bool { return rest[i].Return < rest[j].Return })
		for i, o := range rest {
			if i == 3 {
				fmt.Fprintf(&b, "    ... and %d more\n", len(rest)-3)
				break
			}
			fmt.Fprintf(&b, "    %s\n", o)
		}
	}
	return strings.TrimRight(b.String(), "\n")
}
