package sandbox

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// fileID names the file or directory at path now: device, inode and birth
// time, which no change of its contents alters, and which a new directory
// at the same path never shares (a reused inode number has a new birth
// time). "" when path cannot be looked up.
func fileID(path string) string {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_INO|unix.STATX_BTIME, &st); err != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d:%d:%d:%d.%d", st.Dev_major, st.Dev_minor, st.Ino, st.Mask&unix.STATX_BTIME, st.Btime.Sec, st.Btime.Nsec)
}

// exited reports whether the child pid has ended, without reaping it (the
// goroutine in cmd.Wait does that): the pool's last look before it hands
// a waiting sandbox to a run, closer to the moment than waitDone, which
// trails the exit by a goroutine's wake-up.
func exited(pid int) bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	// ECHILD: cmd.Wait already reaped it.
	return err != nil || info.Signo != 0
}
