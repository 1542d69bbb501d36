//go:build !linux

package chaos

import "os/exec"

// dieWithParent does nothing where the kernel cannot tie a child's life to
// its parent's: a test binary that dies without its cleanups leaves its synod
// processes running.
func dieWithParent(*exec.Cmd) {}
