//go:build !unix

package pythonenv

import (
	"os"
	"os/exec"
)

// killTree kills only the direct child: there are no process groups here.
func killTree(cmd *exec.Cmd) {}

// Without flock, pins and builds are protected only within one process.
func lockShared(f *os.File) error               { return nil }
func lockExclusive(f *os.File) error            { return nil }
func tryLockExclusive(f *os.File) (bool, error) { return true, nil }
