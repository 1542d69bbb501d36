//go:build !unix

package server

import "os"

// fileID identifies a file; on this platform only existence is checked.
type fileID struct{}

func fileIDOf(os.FileInfo) fileID { return fileID{} }

func (fileID) same(fileID) bool { return true }
