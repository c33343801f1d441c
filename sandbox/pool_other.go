//go:build !linux

package sandbox

// fileID is empty where there is no pool to key: sandboxes start cold.
func fileID(string) string { return "" }

// exited is false where the pool cannot look without reaping: waitDone
// alone tells the pool that a waiting sandbox died.
func exited(int) bool { return false }
