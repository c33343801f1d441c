//go:build unix

package sandbox

import (
	"os"
	"os/exec"
	"syscall"
)

// setProcessGroup puts the child in a new process group so that killTree
// reaches its descendants too.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// killTree kills the process group led by pid. Errors mean it is already gone.
func killTree(pid int) {
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

func rawWaitStatus(v int) *syscall.WaitStatus {
	ws := syscall.WaitStatus(v)
	return &ws
}

// allocated is the disk space a file takes.
func allocated(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}
