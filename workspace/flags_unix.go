//go:build unix

package workspace

import "syscall"

// oNoFollow and oNonBlock keep a final-component symlink or a FIFO planted by
// the code from redirecting or blocking the server.
const (
	oNoFollow = syscall.O_NOFOLLOW
	oNonBlock = syscall.O_NONBLOCK
)

// oDirectory makes an open fail on anything but a directory, without
// blocking on a FIFO.
const oDirectory = syscall.O_DIRECTORY

// allocatedOf is the disk space a file takes.
func allocatedOf(fi interface {
	Sys() any
	Size() int64
}) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}
