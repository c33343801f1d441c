package sandbox

import (
	"fmt"
	"strings"
	"sync"
)

// Support is what this host offers the sandbox, probed once per process.
// `prims doctor` prints it.
type Support struct {
	OS     string // runtime.GOOS
	Best   Tier   // the strongest tier that works here
	Root   bool   // the server runs as root: the sandbox maps to an unprivileged uid
	Init   error  // nil when this binary can re-execute itself as the sandbox init
	UserNS error  // nil when unprivileged user namespaces (with mounts) work
	// Landlock is the kernel's Landlock ABI version, 0 when unavailable.
	Landlock    int
	LandlockErr error
	Seccomp     error  // nil when seccomp filters can be installed
	Memory      string // how the memory limit is enforced
	Procs       string // how the process limit is enforced
}

// Can reports whether tier t can run here.
func (s Support) Can(t Tier) bool {
	switch t {
	case TierNone:
		return true
	case TierLandlock:
		return s.Init == nil && s.Landlock > 0 && s.Seccomp == nil
	case TierNamespaces:
		return s.Init == nil && s.UserNS == nil && s.Seccomp == nil
	}
	return false
}

// Missing says, in one line, what keeps the host from full isolation.
func (s Support) Missing() string {
	var m []string
	for _, e := range []struct {
		what string
		err  error
	}{{"sandbox init", s.Init}, {"user namespaces", s.UserNS}, {"Landlock", s.LandlockErr}, {"seccomp", s.Seccomp}} {
		if e.err != nil {
			m = append(m, fmt.Sprintf("%s: %v", e.what, e.err))
		}
	}
	if len(m) == 0 {
		return "nothing"
	}
	return strings.Join(m, "; ")
}

var probed struct {
	once sync.Once
	s    Support
}

// Probe reports what this host supports. The first call starts a short-lived
// child; later calls return the same answer.
func Probe() Support { return probeCached("") }

// probeCached is Probe, which on its first call may take a success
// recorded in cacheDir instead of starting the init (Config.ProbeCache).
func probeCached(cacheDir string) Support {
	probed.once.Do(func() { probed.s = probe(cacheDir) })
	return probed.s
}

// KnownLimits says, one line each, what the kernel offers no way to stop in
// tier t on this host, and what the sandbox refuses there instead; `prims
// doctor` and the README's tier table say the same (TestKnownLimits).
func (s Support) KnownLimits(t Tier) []string {
	if t != TierLandlock {
		return nil
	}
	l := []string{
		"SysV IPC, POSIX message queues and netlink sockets are refused (without an IPC or network namespace they would reach the host's), and /dev/shm is the host's, out of Landlock's rules: multiprocessing's locks, queues and pools (POSIX semaphores) fail.",
		"chmod, chown, utime and setxattr by path are refused (Landlock does not check them); Python's os functions fall back to a descriptor, so shutil.copy and tarfile work, while other programs (tar, cp -p) get EPERM for those calls. Installs (pip) keep the path forms.",
	}
	l = append(l, "A cgroup namespace only under a root server with CAP_SYS_ADMIN (root in most containers lacks it); Landlock keeps /proc/self/cgroup unreadable all the same.")
	if s.Landlock < 9 {
		l = append(l, fmt.Sprintf("Unix sockets cannot be created (socketpair works): Landlock ABI %d cannot keep connect() away from host sockets such as ssh-agent's (ABI 9 can). (multiprocessing managers and its forkserver start method need one.)", s.Landlock))
	}
	if !s.Root {
		l = append(l, "The code runs as this user, who owns the read-only inputs, interpreter and environments: it can change their mode, times and extended attributes through a descriptor (not their contents). Run as root or allow user namespaces to close this.")
	}
	return l
}
