package mcp

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// watchReaderGone calls gone when nobody reads f any more: the reader of a
// pipe closed its end (POLLERR) or a socket or terminal hung up (POLLHUP).
// It returns without calling gone once stop is closed. A regular file or
// /dev/null never reports either, so the watch just waits for stop.
func watchReaderGone(f *os.File, stop <-chan struct{}, gone func()) {
	var fd int = -1
	if sc, err := f.SyscallConn(); err == nil {
		sc.Control(func(p uintptr) { fd = int(p) })
	}
	if fd < 0 {
		return
	}
	// A pipe of our own wakes the poll when stop closes.
	var wake [2]int
	if err := unix.Pipe2(wake[:], unix.O_CLOEXEC); err != nil {
		return
	}
	defer unix.Close(wake[0])
	go func() {
		<-stop
		unix.Close(wake[1])
	}()
	fds := []unix.PollFd{{Fd: int32(fd)}, {Fd: int32(wake[0]), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || fds[1].Revents != 0 {
			return
		}
		if fds[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
			select {
			case <-stop:
			default:
				gone()
			}
			return
		}
	}
}
