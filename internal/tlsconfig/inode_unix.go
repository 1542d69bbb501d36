//go:build unix

package tlsconfig

import (
	"os"
	"syscall"
)

// inode identifies the file behind fi, so that a file replaced by rename
// (as certificate tools do) is seen as changed even when its time and size
// happen to match the old one's.
func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino) // not a uint64 on every platform
	}
	return 0
}
