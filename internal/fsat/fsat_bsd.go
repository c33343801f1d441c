//go:build unix && !linux

package fsat

import "golang.org/x/sys/unix"

// openUp gives a directory its owner made unreadable its owner's rwx
// again (fchmodat with AT_SYMLINK_NOFOLLOW: never a link's target) and
// opens it.
func openUp(parent int, name string) (int, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return -1, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != unix.Geteuid() {
		return -1, unix.EACCES
	}
	if err := unix.Fchmodat(parent, name, uint32(st.Mode&0o7777)|0o700, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return -1, err
	}
	return unix.Openat(parent, name, dirFlags, 0)
}
