package sandbox

import "github.com/prims-mcp/prims/sandbox/internal/initproc"

// The init runs from package initproc, whose few imports let it start
// before most of this binary's package initialization (see its doc); these
// are its names as the server side spells them.
const (
	initArg0   = initproc.Arg0
	initEnv    = initproc.Env
	initModeNS = initproc.ModeNS
	initModeLL = initproc.ModeLL
	initProbe  = initproc.Probe
	fdCode     = initproc.FDCode
	fdConfig   = initproc.FDConfig
	fdReport   = initproc.FDReport
	fdTrees    = initproc.FDTrees
	fdGate     = initproc.FDGate
	gateEnv    = initproc.GateEnv
	gateOpen   = initproc.GateOpen
	traceEnv   = initproc.TraceEnv
	auditArch  = initproc.AuditArch

	nsCloneFlags = initproc.NSCloneFlags // the attack tests' probe filter
)

type (
	initConfig   = initproc.Config
	bind         = initproc.Bind
	egressConfig = initproc.Egress
)

var systemDirs = initproc.SystemDirs

// MaybeInit turns this process into the sandbox init when it was started as
// one, and never returns in that case; otherwise it returns at once.
// Package initproc's init function calls it already, before the packages
// that import this one initialize; calling it again first thing in main and
// in TestMain keeps that visible and costs nothing.
func MaybeInit() { initproc.MaybeInit() }

func monotonic() int64 { return initproc.Monotonic() }

// initLimits are the limits the init sets on the program.
func initLimits(l Limits) initproc.Limits {
	return initproc.Limits{Memory: l.Memory, CPUTime: l.CPUTime, MaxProcs: l.MaxProcs, MaxFileSize: l.MaxFileSize, MaxOpenFiles: l.MaxOpenFiles}
}
