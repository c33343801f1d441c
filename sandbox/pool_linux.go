package sandbox

import "golang.org/x/sys/unix"

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
