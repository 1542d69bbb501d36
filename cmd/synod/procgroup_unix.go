//go:build unix

package main

import (
	"os/exec"
	"syscall"
)

// ownProcessGroup starts c in a process group of its own, so that signals
// sent to synod's group (a ^C at the terminal) do not reach it.
func ownProcessGroup(c *exec.Cmd) { c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }
