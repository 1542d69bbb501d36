package lincheck

import (
	"fmt"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"
)

// register is the state of one key: whether it exists, its value and its mod
// revision (0 when a write of unknown outcome set it and no read has seen it
// since).
type register struct {
	exists bool
	value  string
	modRev int64
}

func (s register) String() string {
	if !s.exists {
		return "absent"
	}
	if s.modRev == 0 {
		return fmt.Sprintf("%q@?", s.value)
	}
	return fmt.Sprintf("%q@%d", s.value, s.modRev)
}

// observe checks a read of the key against the state; the read teaches the
// mod revision a write of unknown outcome left unknown.
func (s register) observe(out Output) (bool, register) {
	if out.Exists != s.exists {
		return false, s
	}
	if !s.exists {
		return true, s
	}
	if out.Value != s.value {
		return false, s
	}
	if s.modRev == 0 {
		s.modRev = out.ModRev
		return true, s
	}
	return out.ModRev == s.modRev, s
}

// step is the sequential specification of one key.
func step(s register, in Input, out Output) (bool, register) {
	switch in.Kind {
	case Get:
		if out.Unknown {
			return true, s
		}
		return s.observe(out)
	case Put:
		if out.Unknown {
			return true, register{exists: true, value: in.Value}
		}
		return true, register{exists: true, value: in.Value, modRev: out.Revision}
	case Delete:
		if out.Unknown {
			return true, register{}
		}
		want := int64(0)
		if s.exists {
			want = 1
		}
		return out.Deleted == want, register{}
	case CAS:
		holds := (in.ExpectAbsent && !s.exists) || (!in.ExpectAbsent && s.exists && s.value == in.Expect)
		if out.Unknown {
			if holds {
				return true, register{exists: true, value: in.Value}
			}
			return true, s
		}
		if out.Succeeded != holds {
			return false, s
		}
		if holds {
			return true, register{exists: true, value: in.Value, modRev: out.Revision}
		}
		return s.observe(out)
	}
	return false, s
}

// Model is the porcupine model of a history: one register per key.
var Model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(Input).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return register{} },
	Step: func(state, input, output any) (bool, any) {
		return step(state.(register), input.(Input), output.(Output))
	},
	DescribeOperation: func(input, output any) string {
		in := input.(Input)
		return describeInput(in) + " -> " + describeOutput(in, output.(Output))
	},
	DescribeState: func(state any) string { return state.(register).String() },
}

func describeInput(in Input) string {
	switch in.Kind {
	case Get:
		return fmt.Sprintf("get(%s)", in.Key)
	case Put:
		return fmt.Sprintf("put(%s, %q)", in.Key, in.Value)
	case Delete:
		return fmt.Sprintf("delete(%s)", in.Key)
	case CAS:
		if in.ExpectAbsent {
			return fmt.Sprintf("cas(%s, absent, %q)", in.Key, in.Value)
		}
		return fmt.Sprintf("cas(%s, %q, %q)", in.Key, in.Expect, in.Value)
	}
	return in.Kind.String()
}

func describeOutput(in Input, out Output) string {
	if out.Unknown {
		return "unknown (" + out.Err + ")"
	}
	read := func() string {
		if !out.Exists {
			return "absent"
		}
		return fmt.Sprintf("%q@%d", out.Value, out.ModRev)
	}
	var b strings.Builder
	switch in.Kind {
	case Get:
		b.WriteString(read())
	case Put:
		b.WriteString("ok")
	case Delete:
		fmt.Fprintf(&b, "deleted %d", out.Deleted)
	case CAS:
		if out.Succeeded {
			b.WriteString("succeeded")
		} else {
			b.WriteString("failed, saw " + read())
		}
	}
	fmt.Fprintf(&b, " rev %d", out.Revision)
	return b.String()
}
