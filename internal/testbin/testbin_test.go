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
