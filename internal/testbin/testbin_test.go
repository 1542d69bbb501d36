package testbin

import (
	"os"
	"path/filepath"
	"testing"
)

func TestConsultSourcesFindsFiles(t *testing.T) {
	if err := ConsultSources(filepath.Join("..", "..")); err != nil {
		t.Fatalf("consult the module: got %v, want nil", err)
	}
	empty := t.TempDir()
	if err := os.WriteFile(filepath.Join(empty, "notes.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ConsultSources(empty); err == nil {
		t.Fatalf("consult a directory without Go files: got nil, want an error")
	}
}

func TestPresplitKeys(t *testing.T) {
	ks := PresplitKeys()
	if len(ks) < 80 {
		t.Fatalf("got %d split keys, want the printable bytes '/' to 'z' and more", len(ks))
	}
	for i := 1; i < len(ks); i++ {
		if string(ks[i]) <= string(ks[i-1]) {
			t.Fatalf("split keys not sorted and distinct: %q after %q", ks[i], ks[i-1])
		}
	}
	all := map[string]bool{}
	for _, k := range ks {
		all[string(k)] = true
	}
	few := PresplitInProcessKeys()
	for i, k := range few {
		if !all[string(k)] || i > 0 && string(k) <= string(few[i-1]) {
			t.Errorf("in-process split keys %q: want sorted keys of PresplitKeys", few)
		}
	}
	if ks[0][0] <= 0x01 {
		t.Fatalf("first split key %q: want it above the reserved keys", ks[0])
	}
	if got, want := FormatSplitKeys([][]byte{[]byte("/"), []byte(`\`), []byte("a,b"), []byte("\x01z")}), `/,\x5c,a\x2cb,\x01z`; got != want {
		t.Errorf("FormatSplitKeys: got %s, want %s", got, want)
	}
}

func TestPresplitArgs(t *testing.T) {
	t.Setenv(PresplitEnv, "")
	if args := PresplitArgs(); args != nil {
		t.Errorf("PresplitArgs without %s: got %q, want none", PresplitEnv, args)
	}
	t.Setenv(PresplitEnv, "1")
	args := PresplitArgs()
	if len(args) != 4 || args[0] != "--test-data-range-splits" || args[2] != "--range-max-bytes" || args[3] != "1048576" {
		t.Errorf("PresplitArgs with %s=1: got %q", PresplitEnv, args)
	}
}
