package initproc

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// deniedSyscalls fail with EPERM in every sandbox tier: they reach kernel
// attack surface or other processes (ptrace, keyrings, BPF, perf, module
// loading), or rebuild the sandbox from inside (mount, namespaces).
var deniedSyscalls = append([]uintptr{
	unix.SYS_PTRACE, unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV,
	unix.SYS_PIDFD_GETFD, unix.SYS_KCMP,
	unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_PIVOT_ROOT, unix.SYS_CHROOT,
	unix.SYS_OPEN_TREE, unix.SYS_MOVE_MOUNT, unix.SYS_FSOPEN, unix.SYS_FSCONFIG,
	unix.SYS_FSMOUNT, unix.SYS_FSPICK, unix.SYS_MOUNT_SETATTR,
	unix.SYS_UNSHARE, unix.SYS_SETNS,
	unix.SYS_KEYCTL, unix.SYS_ADD_KEY, unix.SYS_REQUEST_KEY,
	unix.SYS_BPF, unix.SYS_PERF_EVENT_OPEN, unix.SYS_USERFAULTFD,
	unix.SYS_KEXEC_LOAD, unix.SYS_KEXEC_FILE_LOAD,
	unix.SYS_INIT_MODULE, unix.SYS_FINIT_MODULE, unix.SYS_DELETE_MODULE,
	unix.SYS_OPEN_BY_HANDLE_AT, unix.SYS_NAME_TO_HANDLE_AT,
	unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER,
	unix.SYS_FANOTIFY_INIT, unix.SYS_QUOTACTL, unix.SYS_SWAPON, unix.SYS_SWAPOFF,
	unix.SYS_REBOOT, unix.SYS_SYSLOG, unix.SYS_ACCT, unix.SYS_SETTIMEOFDAY,
	unix.SYS_CLOCK_SETTIME, unix.SYS_CLOCK_ADJTIME, unix.SYS_ADJTIMEX,
	unix.SYS_SETHOSTNAME, unix.SYS_SETDOMAINNAME, unix.SYS_VHANGUP,
	unix.SYS_PERSONALITY,
}, archDeniedSyscalls...)

// modeSyscall is a system call whose argument arg is a file mode.
type modeSyscall struct {
	nr  uintptr
	arg int
}

var modeSyscalls = []modeSyscall{
	{unix.SYS_FCHMOD, 1}, {unix.SYS_FCHMODAT, 2}, {unix.SYS_FCHMODAT2, 2},
	{unix.SYS_OPENAT, 3}, {unix.SYS_MKDIRAT, 2}, {unix.SYS_MKNODAT, 2},
}

// nsCloneFlags are the clone(2) flags that create namespaces.
const nsCloneFlags = unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWNET |
	unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWTIME

// ipcSyscalls reach SysV IPC and POSIX message queues, which only an IPC
// namespace makes private: without one (the landlock tier) host segments
// are readable and what a run creates outlives it.
var ipcSyscalls = []uintptr{
	unix.SYS_SHMGET, unix.SYS_SHMAT, unix.SYS_SHMCTL, unix.SYS_SHMDT,
	unix.SYS_SEMGET, unix.SYS_SEMOP, unix.SYS_SEMCTL, unix.SYS_SEMTIMEDOP,
	unix.SYS_MSGGET, unix.SYS_MSGSND, unix.SYS_MSGRCV, unix.SYS_MSGCTL,
	unix.SYS_MQ_OPEN, unix.SYS_MQ_UNLINK, unix.SYS_MQ_TIMEDSEND, unix.SYS_MQ_TIMEDRECEIVE,
	unix.SYS_MQ_NOTIFY, unix.SYS_MQ_GETSETATTR,
}

// pathAttrSyscalls change a file's mode, owner, times or extended
// attributes by path, which Landlock does not check: in the landlock tier
// they would reach any file the sandbox uid owns. Their descriptor forms
// (fchmod, fchown, fsetxattr, utimensat with no path) stay allowed: they
// act only on files Landlock let the program open. utimensat is checked
// apart, by its path argument.
var pathAttrSyscalls = append([]uintptr{
	unix.SYS_FCHMODAT, unix.SYS_FCHMODAT2, unix.SYS_FCHOWNAT,
	unix.SYS_SETXATTR, unix.SYS_LSETXATTR, unix.SYS_REMOVEXATTR, unix.SYS_LREMOVEXATTR,
	unix.SYS_SETXATTRAT, unix.SYS_REMOVEXATTRAT,
}, archPathAttrSyscalls...)

// filterOptions are the per-run parts of the filter.
type filterOptions struct {
	// hostShared is the landlock tier: no namespace of its own, so SysV
	// IPC, POSIX queues and netlink (sock_diag, rtnetlink) would reach the
	// host's; they are denied.
	hostShared bool
	// denyPathAttr denies changing attributes by path (pathAttrSyscalls).
	denyPathAttr bool
	// denyUnix denies socket(AF_UNIX): where Landlock cannot bound
	// connect() to pathname sockets (ABI < 9), a host socket the uid may
	// write (ssh-agent, the session bus, X11) would be reachable.
	// socketpair stays allowed (asyncio, multiprocessing pipes).
	denyUnix    bool
	denyInet    bool // no AF_INET/AF_INET6 sockets: the landlock tier without network
	denySession bool // no setsid/setpgid: keeps every process in the group the server kills
	// tcpOnly allows AF_INET/AF_INET6 sockets of TCP only: the landlock
	// tier with an egress proxy, where Landlock bounds TCP to its port and
	// cannot see UDP or raw sockets.
	tcpOnly bool
}

// seccompFilter builds the deny-list program. Its first instructions kill any
// system call made through another architecture's entry point (i386 `int
// 0x80`, x32): a deny-list written for x86_64 numbers says nothing about
// them (ARCHITECTURE.md pitfall 3).
func seccompFilter(o filterOptions) []unix.SockFilter {
	const (
		offNr   = 0
		offArch = 4
		offArg0 = 16
		offArg1 = 24 // low 32 bits on little-endian machines
		ld      = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq     = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jge     = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		jset    = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
		ja      = unix.BPF_JMP | unix.BPF_JA
		ret     = unix.BPF_RET | unix.BPF_K
		allow   = unix.SECCOMP_RET_ALLOW
		kill    = unix.SECCOMP_RET_KILL_PROCESS
		eperm   = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
		enosys  = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	)
	s := func(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
	j := func(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
		return unix.SockFilter{Code: code, K: k, Jt: jt, Jf: jf}
	}
	// denyEither ends the filter for syscall nr: EPERM when the low 32 bits
	// of the argument at off are a or b, allowed otherwise. Any other
	// syscall jumps past it.
	denyEither := func(nr, off, a, b uint32) []unix.SockFilter {
		return []unix.SockFilter{
			j(jeq, nr, 0, 5),
			s(ld, off),
			j(jeq, a, 2, 0),
			j(jeq, b, 1, 0),
			s(ret, allow),
			s(ret, eperm),
		}
	}
	f := []unix.SockFilter{
		s(ld, offArch),
		j(jeq, auditArch, 1, 0),
		s(ret, kill),
		s(ld, offNr),
	}
	if archSyscallBit != 0 {
		f = append(f, j(jge, archSyscallBit, 0, 1), s(ret, kill))
	}
	deny := deniedSyscalls
	if o.denySession {
		deny = append(deny[:len(deny):len(deny)], unix.SYS_SETSID, unix.SYS_SETPGID)
	}
	if o.hostShared {
		deny = append(deny[:len(deny):len(deny)], ipcSyscalls...)
	}
	if o.denyPathAttr {
		deny = append(deny[:len(deny):len(deny)], pathAttrSyscalls...)
	}
	for _, nr := range deny {
		f = append(f, j(jeq, uint32(nr), 0, 1), s(ret, eperm))
	}
	if o.denyPathAttr {
		// utimensat(fd, NULL, ...) is futimens: allowed. Any path, even
		// "" with AT_EMPTY_PATH (which reaches O_PATH descriptors that
		// Landlock never checked), is not.
		f = append(f,
			j(jeq, unix.SYS_UTIMENSAT, 0, 6),
			s(ld, offArg1), // the path pointer, low half
			j(jeq, 0, 0, 3),
			s(ld, offArg1+4), // high half
			j(jeq, 0, 0, 1),
			s(ret, allow),
			s(ret, eperm),
		)
	}
	// Socket families that reach outside the sandbox whatever the tier
	// (AF_VSOCK is not namespaced at all), or without namespaces.
	families := []uint32{unix.AF_VSOCK}
	if o.hostShared {
		families = append(families, unix.AF_NETLINK)
	}
	if o.denyUnix {
		families = append(families, unix.AF_UNIX)
	}
	n := uint8(len(families))
	f = append(f, j(jeq, unix.SYS_SOCKET, 0, n+4), s(ld, offArg0))
	for i, fam := range families {
		f = append(f, j(jeq, fam, n+1-uint8(i), 0))
	}
	f = append(f, s(ld, offNr), s(ja, 1), s(ret, eperm))
	// No setuid or setgid files: a file the run leaves behind must not
	// carry privileges for whoever runs it on the host later.
	for _, m := range append(modeSyscalls[:len(modeSyscalls):len(modeSyscalls)], archModeSyscalls...) {
		f = append(f,
			j(jeq, uint32(m.nr), 0, 5),
			s(ld, offArg0+uint32(m.arg)*8),
			j(jset, unix.S_ISUID|unix.S_ISGID, 2, 0),
			s(ld, offNr),
			s(ja, 1),
			s(ret, eperm),
		)
	}
	// openat2 passes its mode in memory: make it unavailable (libc and
	// Python fall back to openat).
	f = append(f, j(jeq, unix.SYS_OPENAT2, 0, 1), s(ret, enosys))
	// clone3 passes its flags in memory, where a filter cannot look: make
	// it unavailable so libc falls back to clone, whose flags we can check.
	f = append(f, j(jeq, unix.SYS_CLONE3, 0, 1), s(ret, enosys))
	f = append(f,
		j(jeq, unix.SYS_CLONE, 0, 4),
		s(ld, offArg0+cloneFlagsArg*8),
		j(jset, nsCloneFlags, 1, 0),
		s(ret, allow),
		s(ret, eperm),
	)
	// TIOCSTI pushes input into the controlling terminal; compare the
	// request on its low 32 bits only, as the kernel does.
	f = append(f, denyEither(unix.SYS_IOCTL, offArg1, unix.TIOCSTI, unix.TIOCLINUX)...)
	if o.denyInet {
		f = append(f, denyEither(unix.SYS_SOCKET, offArg0, unix.AF_INET, unix.AF_INET6)...)
	}
	if o.tcpOnly {
		f = append(f,
			j(jeq, unix.SYS_SOCKET, 0, 11),
			s(ld, offArg0),
			j(jeq, unix.AF_INET, 1, 0),
			j(jeq, unix.AF_INET6, 0, 6),
			s(ld, offArg1), // the type, with SOCK_NONBLOCK and SOCK_CLOEXEC
			s(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, 0xf),
			j(jeq, unix.SOCK_STREAM, 0, 4),
			s(ld, offArg0+16), // the protocol: 0 or TCP, not SCTP or MPTCP
			j(jeq, 0, 1, 0),
			j(jeq, unix.IPPROTO_TCP, 0, 1),
			s(ret, allow),
			s(ret, eperm),
		)
	}
	return append(f, s(ret, allow))
}

// installSeccomp loads the filter on every thread of this process, so the
// program inherits it whichever thread starts it.
func installSeccomp(f []unix.SockFilter) error {
	prog := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	_, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog)))
	if e != 0 {
		return os.NewSyscallError("seccomp", e)
	}
	return nil
}
