package sandbox

import "github.com/prims-mcp/prims/sandbox/internal/initproc"

const fdDir = "/proc/self/fd"

// closeRangeOnExec sets close-on-exec on every descriptor from first up.
func closeRangeOnExec(first int) error { return initproc.CloseRangeOnExec(first) }
