package main

import (
	"errors"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestParseCompare(t *testing.T) {
	tests := []struct {
		line   string
		key    string
		target pb.Compare_CompareTarget
		result pb.Compare_CompareResult
		want   any // []byte for values, int64 otherwise
	}{
		{`value("k") = "v"`, "k", pb.Compare_VALUE, pb.Compare_EQUAL, []byte("v")},
		{`val("k") != "v"`, "k", pb.Compare_VALUE, pb.Compare_NOT_EQUAL, []byte("v")},
		{`value("k") == "v"`, "k", pb.Compare_VALUE, pb.Compare_EQUAL, []byte("v")},
		{`value("k") > "v"`, "k", pb.Compare_VALUE, pb.Compare_GREATER, []byte("v")},
		{`value("k") < "v"`, "k", pb.Compare_VALUE, pb.Compare_LESS, []byte("v")},
		{`mod("k") > "3"`, "k", pb.Compare_MOD, pb.Compare_GREATER, int64(3)},
		{`m("k") < "10"`, "k", pb.Compare_MOD, pb.Compare_LESS, int64(10)},
		{`create("k") = "0"`, "k", pb.Compare_CREATE, pb.Compare_EQUAL, int64(0)},
		{`c("k") = "7"`, "k", pb.Compare_CREATE, pb.Compare_EQUAL, int64(7)},
		{`version("k") != "1"`, "k", pb.Compare_VERSION, pb.Compare_NOT_EQUAL, int64(1)},
		{`ver("k") = "2"`, "k", pb.Compare_VERSION, pb.Compare_EQUAL, int64(2)},
		{`lease("k") = "694d77aa9e38260f"`, "k", pb.Compare_LEASE, pb.Compare_EQUAL, int64(0x694d77aa9e38260f)},
		{`lease("k") = "0"`, "k", pb.Compare_LEASE, pb.Compare_EQUAL, int64(0)},
		// Spacing and quoting.
		{`value( "k" )="v"`, "k", pb.Compare_VALUE, pb.Compare_EQUAL, []byte("v")},
		{`  value("k")   =   "v"  `, "k", pb.Compare_VALUE, pb.Compare_EQUAL, []byte("v")},
		{`value("a key") = "a value"`, "a key", pb.Compare_VALUE, pb.Compare_EQUAL, []byte("a value")},
		{`value("q\"uote") = "tab\there"`, `q"uote`, pb.Compare_VALUE, pb.Compare_EQUAL, []byte("tab\there")},
		{`value("k)") = "="`, "k)", pb.Compare_VALUE, pb.Compare_EQUAL, []byte("=")},
		{`value('k\n') = 'v w'`, `k\n`, pb.Compare_VALUE, pb.Compare_EQUAL, []byte("v w")},
		{`value("") = ""`, "", pb.Compare_VALUE, pb.Compare_EQUAL, []byte("")},
		{`value("\x00\xff") = "\u00e9"`, "\x00\xff", pb.Compare_VALUE, pb.Compare_EQUAL, []byte("é")},
		{`mod("k") > 3`, "k", pb.Compare_MOD, pb.Compare_GREATER, int64(3)},
		{`value("k") = bare`, "k", pb.Compare_VALUE, pb.Compare_EQUAL, []byte("bare")},
	}
	for _, tt := range tests {
		cmp, err := parseCompare(tt.line)
		if err != nil {
			t.Errorf("parseCompare(%s): %v", tt.line, err)
			continue
		}
		c := cmp.GetCompare()
		if string(c.Key) != tt.key || c.Target != tt.target || c.Result != tt.result {
			t.Errorf("parseCompare(%s) = key %q target %v result %v, want key %q target %v result %v",
				tt.line, c.Key, c.Target, c.Result, tt.key, tt.target, tt.result)
		}
		var got any
		switch u := c.TargetUnion.(type) {
		case *pb.Compare_Value:
			got = u.Value
		case *pb.Compare_ModRevision:
			got = u.ModRevision
		case *pb.Compare_CreateRevision:
			got = u.CreateRevision
		case *pb.Compare_Version:
			got = u.Version
		case *pb.Compare_Lease:
			got = u.Lease
		}
		if b, ok := tt.want.([]byte); ok {
			if gb, ok := got.([]byte); !ok || string(gb) != string(b) {
				t.Errorf("parseCompare(%s) value = %#v, want %q", tt.line, got, b)
			}
		} else if got != tt.want {
			t.Errorf("parseCompare(%s) value = %#v, want %#v", tt.line, got, tt.want)
		}
	}
}

func TestParseCompareErrors(t *testing.T) {
	tests := []struct{ line, want string }{
		{`value "k" = "v"`, "malformed compare"},
		{`foo("k") = "v"`, `unknown compare target "foo"`},
		{`value(k) = "v"`, "the key must be quoted"},
		{`value("k" = "v"`, "missing ')'"},
		{`value("k) = "v"`, "missing ')'"},
		{`value("k`, "unterminated quote"},
		{`value("k") ~ "v"`, "missing operator"},
		{`value("k") = `, "missing value after ="},
		{`value("k") = "v" "w"`, "want one value after =, got 2"},
		{`value("k") = "v`, "unterminated quote"},
		{`value("\q") = "v"`, "bad quoted string"},
		{`mod("k") > "x"`, `compare of mod needs a number, got "x"`},
		{`version("k") = "1.5"`, `version needs a number`},
		{`create("k") = "99999999999999999999"`, `create needs a number`},
		{`lease("k") = "xyz"`, `lease needs a hexadecimal lease ID`},
	}
	for _, tt := range tests {
		_, err := parseCompare(tt.line)
		if err == nil {
			t.Errorf("parseCompare(%s) succeeded, want error with %q", tt.line, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseCompare(%s) error = %q, want it to contain %q", tt.line, err, tt.want)
		}
	}
}

func TestSplitWords(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"put k v", []string{"put", "k", "v"}},
		{"  put\tk   v  ", []string{"put", "k", "v"}},
		{`put "a key" "a value"`, []string{"put", "a key", "a value"}},
		{`put k ""`, []string{"put", "k", ""}},
		{`put 'single quoted' '\n'`, []string{"put", "single quoted", `\n`}},
		{`put "esc\"aped" "\t"`, []string{"put", `esc"aped`, "\t"}},
		{`get --prefix="a b"`, []string{"get", "--prefix=a b"}},
		{`put k"joined"'parts'`, []string{"put", "kjoinedparts"}},
		{`put k it's`, nil}, // unterminated single quote
	}
	for _, tt := range tests {
		got, err := splitWords(tt.in)
		if tt.want == nil {
			if err == nil {
				t.Errorf("splitWords(%s) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("splitWords(%s): %v", tt.in, err)
			continue
		}
		if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
			t.Errorf("splitWords(%s) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseTxnOp(t *testing.T) {
	tests := []struct {
		line      string
		check     func(op clientv3.Op) bool
		countOnly bool
	}{
		{"put k v", func(op clientv3.Op) bool {
			return op.IsPut() && string(op.KeyBytes()) == "k" && string(op.ValueBytes()) == "v" && !op.IsPrevKV()
		}, false},
		{`put "a b" "c d" --prev-kv`, func(op clientv3.Op) bool {
			return op.IsPut() && string(op.KeyBytes()) == "a b" && string(op.ValueBytes()) == "c d" && op.IsPrevKV()
		}, false},
		{"put --ignore-value k", func(op clientv3.Op) bool {
			return op.IsPut() && string(op.KeyBytes()) == "k"
		}, false},
		{"put -- k -v", func(op clientv3.Op) bool {
			return op.IsPut() && string(op.KeyBytes()) == "k" && string(op.ValueBytes()) == "-v"
		}, false},
		{"get k", func(op clientv3.Op) bool {
			return op.IsGet() && string(op.KeyBytes()) == "k" && op.RangeBytes() == nil && !op.IsSerializable()
		}, false},
		{"get a c", func(op clientv3.Op) bool {
			return op.IsGet() && string(op.KeyBytes()) == "a" && string(op.RangeBytes()) == "c"
		}, false},
		{"get --prefix foo", func(op clientv3.Op) bool {
			return op.IsGet() && string(op.KeyBytes()) == "foo" && string(op.RangeBytes()) == "fop"
		}, false},
		{"get foo --from-key --limit 3 --rev 9 --consistency s --keys-only", func(op clientv3.Op) bool {
			return op.IsGet() && string(op.RangeBytes()) == "\x00" && op.Limit() == 3 && op.Rev() == 9 &&
				op.IsSerializable() && op.IsKeysOnly()
		}, false},
		{"get k --count-only --min-mod-rev 2 --max-mod-rev 5 --min-create-rev 1 --max-create-rev 4", func(op clientv3.Op) bool {
			return op.IsCountOnly() && op.MinModRev() == 2 && op.MaxModRev() == 5 && op.MinCreateRev() == 1 && op.MaxCreateRev() == 4
		}, true},
		{"get k --sort-by MODIFY --order descend", func(op clientv3.Op) bool {
			return op.IsGet() && op.IsSortSet()
		}, false},
		{"del k", func(op clientv3.Op) bool {
			return op.IsDelete() && string(op.KeyBytes()) == "k" && op.RangeBytes() == nil
		}, false},
		{"delete --prefix --prev-kv p", func(op clientv3.Op) bool {
			return op.IsDelete() && string(op.KeyBytes()) == "p" && string(op.RangeBytes()) == "q" && op.IsPrevKV()
		}, false},
	}
	for _, tt := range tests {
		got, err := parseTxnOp(tt.line)
		if err != nil {
			t.Errorf("parseTxnOp(%s): %v", tt.line, err)
			continue
		}
		if !tt.check(got.op) {
			t.Errorf("parseTxnOp(%s) = %+v, not the op wanted", tt.line, got.op)
		}
		if got.style.countOnly != tt.countOnly {
			t.Errorf("parseTxnOp(%s) countOnly = %v, want %v", tt.line, got.style.countOnly, tt.countOnly)
		}
	}
}

func TestParseTxnOpErrors(t *testing.T) {
	tests := []struct{ line, want string }{
		{"set k v", `unknown request "set": want put, get or del`},
		{"put k", "put takes KEY VALUE, got 1 argument"},
		{"put k v w", "put takes KEY VALUE, got 3 arguments"},
		{"put --ignore-value k v", "put takes only KEY with --ignore-value"},
		{"put k v --bogus", "put: unknown flag: --bogus"},
		{"put k v --lease zz", `bad lease ID "zz"`},
		{"put k v --lease 1f --ignore-lease", "--lease and --ignore-lease cannot be used together"},
		{"get", "get takes KEY [RANGE_END], got 0 arguments"},
		{"get a b c", "get takes KEY [RANGE_END], got 3 arguments"},
		{"get a b --prefix", "RANGE_END cannot be given with --prefix"},
		{"get a --prefix --from-key", "--prefix and --from-key cannot be used together"},
		{"get a --limit x", `get: invalid argument "x" for "--limit"`},
		{"get a --limit -1", "--limit must not be negative"},
		{"get a --sort-by SIZE", "--sort-by must be KEY, VERSION, CREATE, MODIFY or VALUE"},
		{"get a --order UP", "--order must be ASCEND or DESCEND"},
		{"get a --consistency x", "--consistency must be l (linearizable) or s (serializable)"},
		{"del", "del takes KEY [RANGE_END], got 0 arguments"},
		{"del a b --from-key", "RANGE_END cannot be given with --from-key"},
		{`put "k v`, "unterminated quote"},
	}
	for _, tt := range tests {
		_, err := parseTxnOp(tt.line)
		if err == nil {
			t.Errorf("parseTxnOp(%s) succeeded, want error with %q", tt.line, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseTxnOp(%s) error = %q, want it to contain %q", tt.line, err, tt.want)
		}
	}
}

func TestParseTxn(t *testing.T) {
	in := `value("k") = "v"
mod("k") > "3"

put k v2
get k --count-only

del k
put other "x y"
`
	spec, err := parseTxn(strings.NewReader(in), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.compares) != 2 || len(spec.success) != 2 || len(spec.failure) != 2 {
		t.Fatalf("got %d compares, %d success and %d failure ops, want 2, 2, 2",
			len(spec.compares), len(spec.success), len(spec.failure))
	}
	if !spec.success[0].op.IsPut() || !spec.success[1].op.IsGet() || !spec.failure[0].op.IsDelete() {
		t.Errorf("ops in the wrong order: %+v %+v", spec.success, spec.failure)
	}
	if got := string(spec.failure[1].op.ValueBytes()); got != "x y" {
		t.Errorf("failure[1] value = %q, want %q", got, "x y")
	}
	if st := spec.styles(true); len(st) != 2 || st[0].countOnly || !st[1].countOnly {
		t.Errorf("success styles = %+v, want the second count-only", st)
	}
	if st := spec.styles(false); len(st) != 2 || st[0].countOnly || st[1].countOnly {
		t.Errorf("failure styles = %+v, want none count-only", st)
	}
}

func TestParseTxnSections(t *testing.T) {
	tests := []struct {
		name                       string
		in                         string
		compares, success, failure int
	}{
		{"empty input", "", 0, 0, 0},
		{"compares only, no newline", `value("k") = "v"`, 1, 0, 0},
		{"no compares", "\nput k v\n", 0, 1, 0},
		{"failure only", "\n\nput k v\n", 0, 0, 1},
		{"crlf and spaces", "value(\"k\") = \"v\"\r\n  \r\nput k v\r\n\r\nput k w\r\n", 1, 1, 1},
		{"trailing blank lines", "value(\"k\") = \"v\"\n\nput k v\n\nput k w\n\n\n\n", 1, 1, 1},
		{"last line without newline", "value(\"k\") = \"v\"\n\nput k v\n\nput k w", 1, 1, 1},
		{"etcdctl style, final blank line", "mod(\"k\") > \"0\"\n\nget k\n\nget k\n\n", 1, 1, 1},
	}
	for _, tt := range tests {
		spec, err := parseTxn(strings.NewReader(tt.in), nil)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if len(spec.compares) != tt.compares || len(spec.success) != tt.success || len(spec.failure) != tt.failure {
			t.Errorf("%s: got %d/%d/%d compares/success/failure, want %d/%d/%d", tt.name,
				len(spec.compares), len(spec.success), len(spec.failure), tt.compares, tt.success, tt.failure)
		}
	}
}

func TestParseTxnErrorsHaveLineNumbers(t *testing.T) {
	tests := []struct{ in, want string }{
		{"value(\"k\") = \"v\"\nbogus\n", "txn line 2: malformed compare: want TARGET"},
		{"\nput k v\nput k\n", "txn line 3: put takes KEY VALUE, got 1 argument"},
		{"\n\n\n", ""}, // three blank lines: an empty txn
		{"\n\nget\n", "txn line 3: get takes KEY [RANGE_END]"},
		{"\n\nput k v\n\nput k w\n", "txn line 5: unexpected \"put k w\" after the failure requests"},
		{"value(\"k\") = \"v\"\n\nput k v\n\nput k w\n\nextra\n", "txn line 7: unexpected \"extra\""},
		{"mod(\"k\") > \"x\"\n", "txn line 1: compare"},
		{"\nwatch k\n", "txn line 2: unknown request \"watch\""},
	}
	for _, tt := range tests {
		_, err := parseTxn(strings.NewReader(tt.in), nil)
		if tt.want == "" {
			if err != nil {
				t.Errorf("parseTxn(%q): %v", tt.in, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("parseTxn(%q) succeeded, want error %q", tt.in, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseTxn(%q) error = %q, want it to contain %q", tt.in, err, tt.want)
		}
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("parseTxn(%q) error %T is not a usage error", tt.in, err)
		}
	}
}

func TestParseTxnInteractive(t *testing.T) {
	// Interactive mode stops reading after the third section, so that a
	// terminal need not send end-of-file.
	in := "value(\"k\") = \"v\"\n\nput k v\n\nput k w\n\nthis line is never read\n"
	var prompts []string
	spec, err := parseTxn(strings.NewReader(in), func(s string) { prompts = append(prompts, s) })
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.compares) != 1 || len(spec.success) != 1 || len(spec.failure) != 1 {
		t.Errorf("got %d/%d/%d compares/success/failure, want 1/1/1", len(spec.compares), len(spec.success), len(spec.failure))
	}
	want := []string{"compares:", "success requests (get, put, del):", "failure requests (get, put, del):"}
	if strings.Join(prompts, "|") != strings.Join(want, "|") {
		t.Errorf("prompts = %q, want %q", prompts, want)
	}
}
