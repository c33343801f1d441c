//go:build unix

package sandbox

import (
	"os"
	"os/exec"
	"strconv"
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

// closeInheritedOnExec marks every descriptor above stderr close-on-exec.
// Go opens its own descriptors that way, but not the ones this process
// inherited (an agent that launched the server may leak a pipe or a file
// into it), and a child would inherit those in turn: the program would hold
// a host file the sandbox otherwise hides. A child gets exactly its stdio
// and the files the runner hands it (exec.Cmd dups those past the flag).
func closeInheritedOnExec() {
	if closeRangeOnExec(3) == nil {
		return
	}
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}
