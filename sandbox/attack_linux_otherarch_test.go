//go:build linux && !amd64

package sandbox

// archSyscallAttacks: amd64's own system calls (iopl, ioperm, modify_ldt,
// uselib, _sysctl) do not exist here.
func archSyscallAttacks(bad, nullP uintptr) []syscallAttack { return nil }
