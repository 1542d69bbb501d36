//go:build unix

package server

import (
	"os"
	"syscall"
)

// fileID identifies a file across renames: its device and inode. Zero when
// the file system does not say (an in-memory one in tests); only existence
// is checked then.
type fileID struct{ dev, ino uint64 }

func fileIDOf(fi os.FileInfo) fileID {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)}
	}
	return fileID{}
}

// same reports whether two IDs may name the same file.
func (a fileID) same(b fileID) bool { return a == (fileID{}) || b == (fileID{}) || a == b }
