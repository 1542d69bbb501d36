package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestParseTestSplits(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"m", []string{"m"}},
		{"/,0,a,k1", []string{"/", "0", "a", "k1"}},
		{`a\,b,c`, []string{"a,b", "c"}},
		{`[,\\,\x5d,\x02`, nil}, // unsorted: "\x02" after "]"
		{`\x02,[,\\,\x5d`, []string{"\x02", "[", `\`, "]"}},
		{`\x7Fend`, []string{"\x7fend"}},
	}
	for _, tt := range tests {
		got, err := parseTestSplits(tt.in)
		if tt.want == nil && tt.in != "" {
			if err == nil {
				t.Errorf("parseTestSplits(%q): got %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseTestSplits(%q): %v", tt.in, err)
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("parseTestSplits(%q): got %q, want %q", tt.in, got, tt.want)
			continue
		}
		for i := range got {
			if !bytes.Equal(got[i], []byte(tt.want[i])) {
				t.Errorf("parseTestSplits(%q): got %q, want %q", tt.in, got, tt.want)
				break
			}
		}
	}
}

func TestStartTestSplitsFlag(t *testing.T) {
	var o startOptions
	fs := pflag.NewFlagSet("start", pflag.ContinueOnError)
	o.addFlags(fs)
	if f := fs.Lookup(testSplitsFlag); f == nil || !f.Hidden || !strings.HasPrefix(f.Usage, "test setting:") {
		t.Fatalf("--%s: got %+v, want a hidden flag whose usage says it is a test setting", testSplitsFlag, f)
	}
	if err := fs.Parse([]string{"--" + testSplitsFlag, `/,k1,z`, "--range-max-bytes", "1048576"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := o.config()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.DataRangeSplits) != 3 || string(cfg.DataRangeSplits[1]) != "k1" || cfg.RangeMaxBytes != 1<<20 {
		t.Errorf("config: splits %q, range max bytes %d; want [/ k1 z] and 1048576", cfg.DataRangeSplits, cfg.RangeMaxBytes)
	}
	code, stdout, _ := execute(t.Context(), "", "start", "--help")
	if code != 0 || strings.Contains(stdout, testSplitsFlag) {
		t.Errorf("start --help: exit %d, lists --%s: %v", code, testSplitsFlag, strings.Contains(stdout, testSplitsFlag))
	}
	code, stdout, _ = execute(t.Context(), "", "demo", "--help")
	if code != 0 || strings.Contains(stdout, testSplitsFlag) || strings.Contains(stdout, "range-max-bytes") {
		t.Errorf("demo --help: exit %d, want the test flags hidden:\n%s", code, stdout)
	}
}
