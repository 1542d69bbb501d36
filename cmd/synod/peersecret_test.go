package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/synod-io/synod/internal/peerauth"
)

func TestPeerSecretCommands(t *testing.T) {
	// new: to stdout, or to a new file only its owner may read.
	code, out, errOut := execute(t.Context(), "", "peer-secret", "new")
	if _, err := peerauth.Parse([]byte(out)); code != 0 || err != nil {
		t.Fatalf("peer-secret new: exit %d, stdout %q (%v), stderr %q; want a secret", code, out, err, errOut)
	}
	file := filepath.Join(t.TempDir(), "secret.hex")
	if code, out, errOut := execute(t.Context(), "", "peer-secret", "new", file); code != 0 || out != "" {
		t.Fatalf("peer-secret new FILE: exit %d, stdout %q, stderr %q; want 0 and nothing", code, out, errOut)
	}
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode: got %v, want -rw-------", st.Mode().Perm())
	}
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := peerauth.Parse(text); err != nil {
		t.Errorf("secret file: got %q (%v), want a secret", text, err)
	}
	if code, _, errOut := execute(t.Context(), "", "peer-secret", "new", file); code == 0 || !strings.Contains(errOut, "file exists") {
		t.Errorf("peer-secret new over an existing file: exit %d, stderr %q; want a failure saying it exists", code, errOut)
	}

	// get: the secret the running cluster's members share.
	c := startCluster(t)
	code, out, errOut = c.run(t, "", "peer-secret", "get")
	if want := string(peerauth.Format(c.secret)); code != 0 || out != want {
		t.Errorf("peer-secret get: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want)
	}
}
