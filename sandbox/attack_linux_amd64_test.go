package sandbox

import "golang.org/x/sys/unix"

// archSyscallAttacks are the attacks on system calls only amd64 has.
func archSyscallAttacks(bad, nullP uintptr) []syscallAttack {
	return []syscallAttack{
		{"iopl", unix.SYS_IOPL, []uintptr{4}},
		{"ioperm", unix.SYS_IOPERM, []uintptr{bad, 1, 1}},
		{"modify_ldt", unix.SYS_MODIFY_LDT, []uintptr{99, nullP, 0}},
		{"uselib", unix.SYS_USELIB, []uintptr{nullP}},
		{"_sysctl", unix.SYS__SYSCTL, []uintptr{nullP}},
	}
}
