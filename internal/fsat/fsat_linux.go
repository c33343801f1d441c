package fsat

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// openUp opens a directory its owner made unreadable, after giving the
// owner rwx again. The chmod goes through an O_PATH descriptor of the
// directory itself (by its /proc/self/fd magic link, which names that inode
// and no path), so a symlink swapped in for the name cannot redirect it.
func openUp(parent int, name string) (int, error) {
	p, err := unix.Openat(parent, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(p)
	var st unix.Stat_t
	if err := unix.Fstat(p, &st); err != nil {
		return -1, err
	}
	if int(st.Uid) != unix.Geteuid() {
		return -1, unix.EACCES
	}
	if err := unix.Chmod("/proc/self/fd/"+strconv.Itoa(p), uint32(st.Mode&0o7777)|0o700); err != nil {
		return -1, err
	}
	return unix.Openat(p, ".", dirFlags, 0)
}
