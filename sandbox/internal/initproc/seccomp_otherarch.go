//go:build linux && !amd64 && !arm64

package initproc

// The filter's syscall table is written for amd64 and arm64 only. Elsewhere
// the filter kills every system call from a foreign arch value (none match),
// which makes the sandbox tiers unusable: Probe reports seccomp as missing.
const (
	auditArch      = 0
	archSyscallBit = 0
	cloneFlagsArg  = 0
)

var archDeniedSyscalls []uintptr

var archModeSyscalls []modeSyscall
var archPathAttrSyscalls []uintptr
