//go:build !linux

package sandbox

// exited is false where the pool cannot look without reaping: waitDone
// alone tells the pool that a waiting sandbox died.
func exited(int) bool { return false }
