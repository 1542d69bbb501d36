package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// txnSpec is a transaction read in etcdctl's text format: compare lines, a
// blank line, success requests, a blank line, failure requests.
type txnSpec struct {
	compares []clientv3.Cmp
	success  []txnOp
	failure  []txnOp
}

// txnOp is one request of a txn branch.
type txnOp struct {
	op    clientv3.Op
	style getStyle // how to print the result of a get
}

func opsOf(ops []txnOp) []clientv3.Op {
	out := make([]clientv3.Op, len(ops))
	for i, o := range ops {
		out[i] = o.op
	}
	return out
}

// styles returns the print styles of the branch that ran.
func (s *txnSpec) styles(succeeded bool) []getStyle {
	branch := s.failure
	if succeeded {
		branch = s.success
	}
	out := make([]getStyle, len(branch))
	for i, o := range branch {
		out[i] = o.style
	}
	return out
}

// txnSyntaxError is a mistake in a txn's text, at a line (1-based).
type txnSyntaxError struct {
	line int
	err  error
}

func (e *txnSyntaxError) Error() string { return fmt.Sprintf("txn line %d: %v", e.line, e.err) }
func (e *txnSyntaxError) Unwrap() error { return e.err }

// txnSectionPrompts are shown before each section in interactive mode,
// as etcdctl does.
var txnSectionPrompts = [3]string{
	"compares:",
	"success requests (get, put, del):",
	"failure requests (get, put, del):",
}

// parseTxn reads a transaction from r. A blank line ends a section and the
// end of the input ends them all. prompt, if not nil, is called before each
// section (interactive mode); then reading stops after the third section,
// otherwise the rest of the input must be blank.
func parseTxn(r io.Reader, prompt func(string)) (*txnSpec, error) {
	br := bufio.NewReader(r)
	lineNo := 0
	// next returns the next line, trimmed; ok is false at the end of input.
	next := func() (string, bool, error) {
		s, err := br.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", false, fmt.Errorf("read txn: %w", err)
		}
		if err != nil && s == "" {
			return "", false, nil
		}
		lineNo++
		return strings.TrimSpace(s), true, nil
	}
	fail := func(err error) error {
		return usageError{&txnSyntaxError{line: lineNo, err: err}}
	}

	spec := &txnSpec{}
	for section := range 3 {
		if prompt != nil {
			prompt(txnSectionPrompts[section])
		}
		for {
			line, ok, err := next()
			if err != nil {
				return nil, err
			}
			if !ok {
				return spec, nil
			}
			if line == "" {
				break
			}
			if section == 0 {
				cmp, err := parseCompare(line)
				if err != nil {
					return nil, fail(err)
				}
				spec.compares = append(spec.compares, cmp)
				continue
			}
			op, err := parseTxnOp(line)
			if err != nil {
				return nil, fail(err)
			}
			if section == 1 {
				spec.success = append(spec.success, op)
			} else {
				spec.failure = append(spec.failure, op)
			}
		}
	}
	if prompt != nil {
		return spec, nil
	}
	for {
		line, ok, err := next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return spec, nil
		}
		if line != "" {
			return nil, fail(fmt.Errorf("unexpected %q after the failure requests (a txn has three sections separated by blank lines: compares, success requests, failure requests)", line))
		}
	}
}

// compareUsage shows the form of a compare line in errors.
const compareUsage = `want TARGET("KEY") OP "VALUE" such as value("k") = "v" or mod("k") > "3"`

// parseCompare parses a compare line: value("k") = "v", mod("k") > "3",
// create("k") = "0", version("k") != "1" or lease("k") = "694d77aa9e38260f".
// TARGET may be abbreviated (val, ver, c, m); OP is =, !=, > or <. KEY and
// VALUE are double-quoted with Go escapes or single-quoted verbatim; a VALUE
// without spaces may be left unquoted.
func parseCompare(line string) (clientv3.Cmp, error) {
	target, rest, ok := strings.Cut(line, "(")
	if !ok {
		return clientv3.Cmp{}, fmt.Errorf("malformed compare: %s", compareUsage)
	}
	target = strings.TrimSpace(target)
	var newCmp func(key string) clientv3.Cmp
	switch target {
	case "value", "val":
		newCmp = clientv3.Value
	case "version", "ver":
		newCmp = clientv3.Version
	case "create", "c":
		newCmp = clientv3.CreateRevision
	case "mod", "m":
		newCmp = clientv3.ModRevision
	case "lease":
		newCmp = clientv3.LeaseValue
	default:
		return clientv3.Cmp{}, fmt.Errorf("unknown compare target %q: want value, version, create, mod or lease", target)
	}

	rest = strings.TrimLeft(rest, " \t")
	if rest == "" || (rest[0] != '"' && rest[0] != '\'') {
		return clientv3.Cmp{}, fmt.Errorf("malformed compare: the key must be quoted; %s", compareUsage)
	}
	key, rest, err := readQuoted(rest)
	if err != nil {
		return clientv3.Cmp{}, fmt.Errorf("malformed compare key: %w", err)
	}
	rest = strings.TrimLeft(rest, " \t")
	if !strings.HasPrefix(rest, ")") {
		return clientv3.Cmp{}, errors.New("malformed compare: missing ')' after the key")
	}
	rest = strings.TrimLeft(rest[1:], " \t")

	var op string
	for _, candidate := range []string{"!=", "==", "=", ">", "<"} {
		if strings.HasPrefix(rest, candidate) {
			op = candidate
			break
		}
	}
	if op == "" {
		return clientv3.Cmp{}, errors.New("malformed compare: missing operator (=, !=, > or <) after the key")
	}
	rest = strings.TrimLeft(rest[len(op):], " \t")
	if op == "==" {
		op = "="
	}

	if rest == "" {
		return clientv3.Cmp{}, fmt.Errorf("malformed compare: missing value after %s", op)
	}
	words, err := splitWords(rest)
	if err != nil {
		return clientv3.Cmp{}, fmt.Errorf("malformed compare value: %w", err)
	}
	if len(words) != 1 {
		return clientv3.Cmp{}, fmt.Errorf("malformed compare: want one value after %s, got %d", op, len(words))
	}
	val := words[0]

	var v any = val
	switch target {
	case "version", "ver", "create", "c", "mod", "m":
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			return clientv3.Cmp{}, fmt.Errorf("compare of %s needs a number, got %q", target, val)
		}
		v = n
	case "lease":
		id, err := strconv.ParseInt(strings.TrimPrefix(val, "0x"), 16, 64)
		if err != nil {
			return clientv3.Cmp{}, fmt.Errorf("compare of lease needs a hexadecimal lease ID, got %q", val)
		}
		v = id
	}
	return clientv3.Compare(newCmp(key), op, v), nil
}

// parseTxnOp parses a request line: put, get or del with the arguments and
// flags of the command of the same name.
func parseTxnOp(line string) (txnOp, error) {
	words, err := splitWords(line)
	if err != nil {
		return txnOp{}, err
	}
	verb, args := words[0], words[1:]
	fs := pflag.NewFlagSet(verb, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var build func([]string) (clientv3.Op, error)
	var style func() getStyle
	switch verb {
	case "put":
		var o putOptions
		o.addFlags(fs)
		build = o.op
	case "get":
		var o getOptions
		o.addFlags(fs)
		build, style = o.op, o.style
	case "del", "delete":
		var o delOptions
		o.addFlags(fs)
		build = o.op
	default:
		return txnOp{}, fmt.Errorf("unknown request %q: want put, get or del", verb)
	}
	if err := fs.Parse(args); err != nil {
		return txnOp{}, fmt.Errorf("%s: %w", verb, err)
	}
	op, err := build(fs.Args())
	if err != nil {
		return txnOp{}, err
	}
	t := txnOp{op: op}
	if style != nil {
		t.style = style()
	}
	return t, nil
}

// splitWords splits a line into words at spaces and tabs. A double-quoted
// part is unquoted with Go's rules ("a\tb"), a single-quoted part is taken
// verbatim; quoted parts may hold spaces and join the text around them
// (--prefix="a b").
func splitWords(s string) ([]string, error) {
	var words []string
	i := 0
	for {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i == len(s) {
			break
		}
		var w strings.Builder
		for i < len(s) && !isSpace(s[i]) {
			if s[i] == '"' || s[i] == '\'' {
				part, rest, err := readQuoted(s[i:])
				if err != nil {
					return nil, err
				}
				w.WriteString(part)
				i = len(s) - len(rest)
				continue
			}
			w.WriteByte(s[i])
			i++
		}
		words = append(words, w.String())
	}
	if len(words) == 0 {
		return nil, errors.New("empty line")
	}
	return words, nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// readQuoted reads the quoted string at the start of s and returns its
// value and the text after it.
func readQuoted(s string) (val, rest string, err error) {
	switch s[0] {
	case '\'':
		end := strings.IndexByte(s[1:], '\'')
		if end < 0 {
			return "", "", fmt.Errorf("unterminated quote in %s", s)
		}
		return s[1 : 1+end], s[2+end:], nil
	case '"':
		for i := 1; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
			case '"':
				v, err := strconv.Unquote(s[:i+1])
				if err != nil {
					return "", "", fmt.Errorf("bad quoted string %s: %w", s[:i+1], err)
				}
				return v, s[i+1:], nil
			}
		}
		return "", "", fmt.Errorf("unterminated quote in %s", s)
	}
	return "", "", fmt.Errorf("%q is not quoted", s)
}
