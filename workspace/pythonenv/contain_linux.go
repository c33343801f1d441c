package pythonenv

import (
	"os"
	"os/exec"
	"runtime"
	"syscall"
)

// startContained starts the command newCmd makes so that nothing it starts
// outlives it, even when the server is killed with SIGKILL: pip runs as the
// first process of its own PID namespace, which the kernel empties when
// that process dies, and it dies with the server (a parent-death signal; a
// signal on pip alone would not do, as pip --python re-runs itself in a
// child). Where the kernel refuses the namespace (user namespaces off for
// this user), the command starts as before, in a process group the server
// kills when it can.
func startContained(newCmd func() *exec.Cmd) (*exec.Cmd, error) {
	cmd := newCmd()
	attr := *cmd.SysProcAttr
	attr.Pdeathsig = syscall.SIGKILL
	attr.Cloneflags = syscall.CLONE_NEWPID
	if uid, gid := os.Getuid(), os.Getgid(); uid != 0 {
		// The same ids inside, so what pip writes is this user's.
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
	}
	cmd.SysProcAttr = &attr
	// The parent-death signal follows the thread that forked (ARCHITECTURE.md
	// pitfall 9); a goroutine that unlocks never takes its thread down.
	runtime.LockOSThread()
	err := cmd.Start()
	runtime.UnlockOSThread()
	if err == nil {
		return cmd, nil
	}
	cmd = newCmd()
	return cmd, cmd.Start()
}
