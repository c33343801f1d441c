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
