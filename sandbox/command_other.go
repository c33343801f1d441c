//go:build !linux

package sandbox

// shareWritable has nothing to do where there is no sandbox user.
func (r *Runner) shareWritable([]string) error { return nil }
