//go:build !unix

package sandbox

import (
	"os"
	"os/exec"
)

func setProcessGroup(cmd *exec.Cmd) {}

// killTree kills the direct child only: without process groups the portable
// runner cannot reach grandchildren, as `prims doctor` reports.
func killTree(pid int) {
	if p, err := os.FindProcess(pid); err == nil {
		_ = p.Kill()
	}
}
