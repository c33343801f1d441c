package initproc

import "golang.org/x/sys/unix"

const (
	auditArch      = unix.AUDIT_ARCH_AARCH64
	archSyscallBit = 0
	cloneFlagsArg  = 0
)

var archDeniedSyscalls []uintptr

var archModeSyscalls []modeSyscall
var archPathAttrSyscalls []uintptr
