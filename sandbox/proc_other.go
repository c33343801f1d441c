//go:build !unix

package sandbox

import (
	"os"
	"os/exec"
	"syscall"
)

func setProcessGroup(cmd *exec.Cmd) {}

// closeInheritedOnExec has nothing to do: Windows handles are inherited
// only when marked inheritable, and os/exec passes only the ones it names.
func closeInheritedOnExec() {}

// killTree kills the direct child only: without process groups the portable
// runner cannot reach grandchildren, as `prims doctor` reports.
func killTree(pid int) {
	if p, err := os.FindProcess(pid); err == nil {
		_ = p.Kill()
	}
}

// rawWaitStatus is never called here: only the Linux sandbox init reports
// raw wait statuses.
func rawWaitStatus(int) *syscall.WaitStatus { return nil }
