package testbin

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ConsultSources stats every Go source and module file of the module at
// root (skipping hidden directories, testdata and the separate bench
// module). It must run inside a test (not before m.Run in TestMain), where
// go test records what a test reads.
func ConsultSources(root string) error {
	n := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "bench") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum" {
			n++
			_, err := os.Stat(path)
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("consult sources under %s: %w", root, err)
	}
	if n == 0 {
		return fmt.Errorf("consult sources under %s: no Go files found", root)
	}
	return nil
}
