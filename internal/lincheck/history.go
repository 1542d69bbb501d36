package lincheck

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// Kind is the kind of an operation.
type Kind uint8

// The kinds of operations.
const (
	Get Kind = iota + 1
	Put
	Delete
	// CAS is a Txn: if the key's value is Expect (or, with ExpectAbsent, the
	// key does not exist) put Value, else get the key.
	CAS
)

func (k Kind) String() string {
	switch k {
	case Get:
		return "get"
	case Put:
		return "put"
	case Delete:
		return "delete"
	case CAS:
		return "cas"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Input is what a client asked.
type Input struct {
	Kind Kind   `json:"kind"`
	Key  string `json:"key"`
	// Value is the value a Put or CAS writes.
	Value string `json:"value,omitempty"`
	// Expect is the value a CAS compares with, unless ExpectAbsent.
	Expect       string `json:"expect,omitempty"`
	ExpectAbsent bool   `json:"expectAbsent,omitempty"`
}

// Output is what the client saw.
type Output struct {
	// Unknown means the operation may or may not have taken effect.
	Unknown bool   `json:"unknown,omitempty"`
	Err     string `json:"err,omitempty"`
	// Revision is the response header's revision.
	Revision int64 `json:"revision,omitempty"`
	// Exists, Value and ModRev are the key as read by a Get or by the else
	// branch of a failed CAS.
	Exists bool   `json:"exists,omitempty"`
	Value  string `json:"value,omitempty"`
	ModRev int64  `json:"modRev,omitempty"`
	// Succeeded is whether a CAS's comparison held.
	Succeeded bool `json:"succeeded,omitempty"`
	// Deleted is the number of keys a Delete removed.
	Deleted int64 `json:"deleted,omitempty"`
}

// Op is one operation of a history. Times are nanoseconds since the
// recorder started.
type Op struct {
	Client int    `json:"client"`
	Node   string `json:"node,omitempty"`
	Input  Input  `json:"input"`
	Output Output `json:"output"`
	Call   int64  `json:"call"`
	Return int64  `json:"return"`
}

func (o Op) String() string {
	return fmt.Sprintf("client %d [%s, %s] %s -> %s", o.Client, time.Duration(o.Call), returnTime(o), describeInput(o.Input), describeOutput(o.Input, o.Output))
}

func returnTime(o Op) string {
	if o.Output.Unknown {
		return "?"
	}
	return time.Duration(o.Return).String()
}

// Recorder collects the operations of concurrent clients, and the faults
// injected meanwhile.
type Recorder struct {
	start  time.Time
	mu     sync.Mutex
	ops    []Op
	events []Event
}

// Event is a fault injected during a history, from Start to End
// (nanoseconds since the recorder started; End is 0 while it lasts).
type Event struct {
	Start       int64  `json:"start"`
	End         int64  `json:"end"`
	Description string `json:"description"`
}

func (e Event) String() string {
	end := "end"
	if e.End > 0 {
		end = time.Duration(e.End).Round(time.Millisecond).String()
	}
	return fmt.Sprintf("[%s, %s] %s", time.Duration(e.Start).Round(time.Millisecond), end, e.Description)
}

// Begin records that a fault starts now; the returned function records that
// it ended.
func (r *Recorder) Begin(description string) (end func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := len(r.events)
	r.events = append(r.events, Event{Start: r.now(), Description: description})
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.events[i].End = r.now()
	}
}

// Events returns the faults recorded so far.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// NewRecorder returns a recorder whose clock starts now.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Pending is an operation that has been invoked and has not returned.
type Pending struct {
	r    *Recorder
	op   Op
	done bool
}

// Invoke records the invocation of an operation by a client on a node.
func (r *Recorder) Invoke(client int, node string, in Input) *Pending {
	return &Pending{r: r, op: Op{Client: client, Node: node, Input: in, Call: r.now()}}
}

func (r *Recorder) now() int64 { return int64(time.Since(r.start)) }

// Now is the recorder's clock: nanoseconds since it started.
func (r *Recorder) Now() int64 { return r.now() }

// Ok records that the operation returned out.
func (p *Pending) Ok(out Output) {
	p.finish(out)
}

// Unknown records that the operation's outcome is unknown; err says why.
func (p *Pending) Unknown(err error) {
	p.finish(Output{Unknown: true, Err: err.Error()})
}

// Failed records that the operation failed without effect: it is dropped.
// Only reads fail this way; a write whose error does not prove it had no
// effect is Unknown.
func (p *Pending) Failed() {
	p.done = true
}

func (p *Pending) finish(out Output) {
	if p.done {
		panic("lincheck: operation completed twice")
	}
	p.done = true
	p.op.Output = out
	p.op.Return = p.r.now()
	p.r.mu.Lock()
	p.r.ops = append(p.r.ops, p.op)
	p.r.mu.Unlock()
}

// History returns the operations recorded so far, ordered by invocation.
func (r *Recorder) History() []Op {
	r.mu.Lock()
	ops := append([]Op(nil), r.ops...)
	r.mu.Unlock()
	sort.Slice(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
	return ops
}

// Stats counts a history's operations by kind and outcome.
func Stats(h []Op) string {
	var ok, unknown int
	byKind := map[Kind]int{}
	for _, o := range h {
		byKind[o.Input.Kind]++
		if o.Output.Unknown {
			unknown++
		} else {
			ok++
		}
	}
	return fmt.Sprintf("%d ops (%d get, %d put, %d delete, %d cas): %d ok, %d unknown",
		len(h), byKind[Get], byKind[Put], byKind[Delete], byKind[CAS], ok, unknown)
}
