//go:build unix

package sandbox

import (
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
