//go:build !unix

package fsat

import (
	"errors"
	"io/fs"
	"os"
)

// Stat is empty where there are no directory descriptors.
type Stat struct{ Mode, Blocks, Nlink, Ino, Dev, Size int64 }

var errUnsupported = errors.New("descriptor-relative file operations are not supported on this system")

func OpenDir(path string) (*os.File, error)                             { return nil, errUnsupported }
func OpenDirAt(parent int, name string, opts Options) (*os.File, error) { return nil, errUnsupported }
func Walk(dir *os.File, opts Options, fn func(int, string, string, *Stat) Action) error {
	return errUnsupported
}
func Info(name string, st *Stat) fs.FileInfo  { return nil }
func Allocated(st *Stat) int64                { return st.Blocks * 512 }
func IsDir(st *Stat) bool                     { return false }
func RemoveAll(parent int, name string) error { return errUnsupported }

func Usage(dir *os.File, inode, limit int64) (int64, error) { return 0, errUnsupported }
func InodeBytes(dir *os.File) int64                         { return 4 << 10 }
