package lincheck

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// op builds an operation that ran from call to ret (in ms).
func op(client int, call, ret int64, in Input, out Output) Op {
	return Op{Client: client, Input: in, Output: out, Call: call * 1e6, Return: ret * 1e6}
}

func put(k, v string) Input         { return Input{Kind: Put, Key: k, Value: v} }
func get(k string) Input            { return Input{Kind: Get, Key: k} }
func del(k string) Input            { return Input{Kind: Delete, Key: k} }
func cas(k, expect, v string) Input { return Input{Kind: CAS, Key: k, Expect: expect, Value: v} }
func casAbsent(k, v string) Input   { return Input{Kind: CAS, Key: k, ExpectAbsent: true, Value: v} }
func wrote(rev int64) Output        { return Output{Revision: rev} }
func read(v string, mod, rev int64) Output {
	return Output{Exists: true, Value: v, ModRev: mod, Revision: rev}
}
func absent(rev int64) Output { return Output{Revision: rev} }
func unknown() Output         { return Output{Unknown: true, Err: "context deadline exceeded"} }

func TestGoodHistories(t *testing.T) {
	tests := []struct {
		name string
		h    []Op
	}{
		{"sequential", []Op{
			op(0, 0, 1, put("x", "a"), wrote(2)),
			op(0, 2, 3, get("x"), read("a", 2, 2)),
			op(0, 4, 5, cas("x", "a", "b"), Output{Succeeded: true, Revision: 3}),
			op(0, 6, 7, cas("x", "a", "c"), Output{Exists: true, Value: "b", ModRev: 3, Revision: 3}),
			op(0, 8, 9, del("x"), Output{Deleted: 1, Revision: 4}),
			op(0, 10, 11, del("x"), Output{Revision: 4}),
			op(0, 12, 13, get("x"), absent(4)),
			op(0, 14, 15, casAbsent("x", "d"), Output{Succeeded: true, Revision: 5}),
		}},
		{"concurrent writes seen in either order", []Op{
			op(0, 0, 10, put("x", "a"), wrote(3)),
			op(1, 0, 10, put("x", "b"), wrote(2)),
			op(2, 1, 2, get("x"), read("b", 2, 2)),
			op(2, 11, 12, get("x"), read("a", 3, 3)),
		}},
		{"a write of unknown outcome that took effect late", []Op{
			op(0, 0, 0, put("x", "a"), unknown()),
			op(1, 5, 6, get("x"), absent(1)),
			op(1, 7, 8, get("x"), read("a", 2, 2)),
			op(1, 9, 10, get("x"), read("a", 2, 2)),
		}},
		{"a write of unknown outcome that never took effect", []Op{
			op(0, 0, 0, put("x", "a"), unknown()),
			op(1, 1, 2, put("x", "b"), wrote(2)),
			op(1, 3, 4, get("x"), read("b", 2, 2)),
		}},
		{"keys are independent", []Op{
			op(0, 0, 1, put("x", "a"), wrote(2)),
			op(0, 2, 3, put("y", "b"), wrote(3)),
			op(1, 4, 5, get("y"), read("b", 3, 3)),
			op(1, 6, 7, get("x"), read("a", 2, 3)),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if res := Check(tt.h, 10*time.Second); !res.OK() {
				t.Fatalf("got %s, want linearizable\n%s", res, res.Explain())
			}
		})
	}
}

func TestBadHistories(t *testing.T) {
	tests := []struct {
		name      string
		h         []Op
		wantLin   porcupine.CheckResult
		wantProbl string
	}{
		{"stale read", []Op{
			op(0, 0, 1, put("x", "a"), wrote(2)),
			op(0, 2, 3, put("x", "b"), wrote(3)),
			op(1, 4, 5, get("x"), read("a", 2, 2)),
		}, porcupine.Illegal, "revision went back in real time"},
		{"acknowledged write lost", []Op{
			op(0, 0, 1, put("x", "a"), wrote(2)),
			op(1, 2, 3, get("x"), absent(2)),
		}, porcupine.Illegal, ""},
		{"two compare-and-swaps from the same value", []Op{
			op(0, 0, 1, casAbsent("x", "a"), Output{Succeeded: true, Revision: 2}),
			op(1, 2, 3, casAbsent("x", "b"), Output{Succeeded: true, Revision: 3}),
		}, porcupine.Illegal, ""},
		{"read of a value never written", []Op{
			op(0, 0, 1, get("x"), read("ghost", 2, 2)),
		}, porcupine.Illegal, ""},
		{"mod revision of a read disagrees with the write", []Op{
			op(0, 0, 1, put("x", "a"), wrote(2)),
			op(1, 2, 3, get("x"), read("a", 5, 5)),
		}, porcupine.Illegal, ""},
		{"delete reports a key that was not there", []Op{
			op(0, 0, 1, del("x"), Output{Deleted: 1, Revision: 2}),
		}, porcupine.Illegal, ""},
		{"revisions out of real-time order across keys", []Op{
			op(0, 0, 1, put("x", "a"), wrote(5)),
			op(1, 2, 3, get("y"), absent(4)),
		}, porcupine.Ok, "revision went back in real time"},
		{"two writes at one revision", []Op{
			op(0, 0, 10, put("x", "a"), wrote(2)),
			op(1, 0, 10, put("y", "b"), wrote(2)),
		}, porcupine.Ok, "two writes at revision 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := Check(tt.h, 10*time.Second)
			if res.OK() {
				t.Fatalf("got %s, want the history rejected", res)
			}
			if res.Linearizable != tt.wantLin {
				t.Fatalf("porcupine: got %s, want %s", res.Linearizable, tt.wantLin)
			}
			if tt.wantProbl != "" && !strings.Contains(strings.Join(res.Problems, "\n"), tt.wantProbl) {
				t.Fatalf("problems: got %q, want one containing %q", res.Problems, tt.wantProbl)
			}
			if tt.wantLin == porcupine.Illegal && !strings.Contains(res.Explain(), "operations linearize") {
				t.Fatalf("explanation: got %q, want the longest linearization", res.Explain())
			}
		})
	}
}

func TestReportFiles(t *testing.T) {
	h := []Op{
		op(0, 0, 1, put("x", "a"), wrote(2)),
		op(1, 2, 3, get("x"), absent(2)),
	}
	res := Check(h, 10*time.Second)
	dir := t.TempDir()
	jsonPath, htmlPath, err := res.WriteFiles(dir, Report{Seed: 7, Replay: "go test", Faults: []Event{{Start: 0, End: 1e6, Description: "isolate n1"}}})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{jsonPath: `"seed": 7`, htmlPath: "isolate n1"} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), want) {
			t.Fatalf("%s: want it to contain %q", filepath.Base(path), want)
		}
	}
}

func TestCheckDurable(t *testing.T) {
	h := []Op{
		op(0, 0, 1, put("x", "a"), wrote(2)),
		op(0, 2, 3, put("x", "b"), wrote(3)),
		op(0, 4, 5, put("y", "c"), unknown()),
		op(0, 6, 7, del("x"), Output{Deleted: 1, Revision: 4}),
		op(0, 8, 9, cas("x", "zz", "q"), Output{Revision: 4}),
	}
	// The store lost the write at revision 3.
	store := map[int64][3]string{2: {"x", "a"}, 4: {"x", ""}}
	reader := func(_ context.Context, key string, rev int64) (bool, string, int64, error) {
		for r := rev; r > 0; r-- {
			if kv, ok := store[r]; ok && kv[0] == key {
				return kv[1] != "", kv[1], r, nil
			}
		}
		return false, "", 0, nil
	}
	missing, err := CheckDurable(t.Context(), h, reader)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) != 1 || !strings.Contains(missing[0], `put(x, "b")`) {
		t.Fatalf("missing writes: got %q, want the put of b", missing)
	}
	// A store that went back before revision 3 lost the writes from there.
	behind := func(ctx context.Context, key string, rev int64) (bool, string, int64, error) {
		if rev >= 3 {
			return false, "", 0, ErrFutureRevision
		}
		return reader(ctx, key, rev)
	}
	missing, err = CheckDurable(t.Context(), h, behind)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) != 2 || !strings.Contains(missing[1], "has not reached that revision") {
		t.Fatalf("missing writes of a store behind: got %q, want the put of b and the delete", missing)
	}
	failing := func(context.Context, string, int64) (bool, string, int64, error) {
		return false, "", 0, errors.New("unavailable")
	}
	if _, err := CheckDurable(t.Context(), h, failing); err == nil {
		t.Fatalf("CheckDurable with a failing reader: got no error")
	}
}
