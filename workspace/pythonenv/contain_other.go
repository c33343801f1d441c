//go:build !linux

package pythonenv

import "os/exec"

// startContained starts the command newCmd makes in its process group (see
// killTree); only Linux can tie its descendants' lives to the server's.
func startContained(newCmd func() *exec.Cmd) (*exec.Cmd, error) {
	cmd := newCmd()
	return cmd, cmd.Start()
}
