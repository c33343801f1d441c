package initproc

import "golang.org/x/sys/unix"

// What the server side (package sandbox) needs to start an init and talk to
// it: the marker, the descriptors, the configuration.
const (
	Arg0     = initArg0
	Env      = initEnv
	ModeNS   = initModeNS
	ModeLL   = initModeLL
	Probe    = initProbe
	FDCode   = fdCode
	FDConfig = fdConfig
	FDReport = fdReport
	FDTrees  = fdTrees
	FDGate   = fdGate
	GateEnv  = gateEnv
	GateOpen = gateOpen
	TraceEnv = traceEnv

	// AuditArch is the seccomp audit arch the filter is written for, 0
	// where there is none.
	AuditArch = auditArch

	// NSCloneFlags are the namespace flags the filter refuses to clone.
	NSCloneFlags = nsCloneFlags
)

type (
	Config = initConfig
	Bind   = bind
	Egress = egressConfig
)

// SystemDirs are the host directories every sandbox sees.
var SystemDirs = systemDirs

// Monotonic is CLOCK_MONOTONIC in nanoseconds, shared with the host: the
// trace's time origin.
func Monotonic() int64 { return monotonic() }

// CloseRangeOnExec marks every descriptor from first up close-on-exec, in
// one system call (Linux 5.11); the server does it before starting an init.
func CloseRangeOnExec(first int) error {
	return unix.CloseRange(uint(first), ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
}
