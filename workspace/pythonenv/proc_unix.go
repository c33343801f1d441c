//go:build unix

package pythonenv

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
)

// killTree makes cmd start in its own process group and, on cancellation,
// kills the whole group: pip re-executes itself under the target
// interpreter and runs build backends, and all of them must go.
func killTree(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
}

// The cache shares its directory with other PRIMS processes on the machine;
// flock(2) on directory descriptors tells them which environments are in
// use and which build directories are still being written. Unlike fcntl
// locks, flock locks belong to the open file, so they also work between two
// Caches in one process.

func lockShared(f *os.File) error {
	return os.NewSyscallError("flock", syscall.Flock(int(f.Fd()), syscall.LOCK_SH))
}

func lockExclusive(f *os.File) error {
	return os.NewSyscallError("flock", syscall.Flock(int(f.Fd()), syscall.LOCK_EX))
}

// tryLockExclusive reports false, nil when someone else holds a lock.
func tryLockExclusive(f *os.File) (bool, error) {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return false, nil
	}
	return err == nil, os.NewSyscallError("flock", err)
}
