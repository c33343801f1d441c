package initproc

import (
	"errors"
	"fmt"
	"os"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// What the init gives up before the program starts: capabilities (the
// namespaces tier) or the root uid (the landlock tier), and, in both tiers,
// the filesystem beyond the run's paths (Landlock).

// dropCapabilities leaves the program no capabilities, even in its own
// namespace, and none to regain: it execs as uid 0 of the namespace, which
// would otherwise be granted the bounding set again.
func dropCapabilities() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return os.NewSyscallError("no_new_privs", err)
	}
	for c := 0; c <= unix.CAP_LAST_CAP; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return os.NewSyscallError("drop bounding capability", err)
		}
	}
	_ = unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
	const secbits = 1<<0 | 1<<1 | 1<<2 | 1<<3 // SECBIT_NOROOT(_LOCKED), SECBIT_NO_SETUID_FIXUP(_LOCKED)
	if err := unix.Prctl(unix.PR_SET_SECUREBITS, secbits, 0, 0, 0); err != nil {
		return os.NewSyscallError("securebits", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	return os.NewSyscallError("capset", unix.Capset(&hdr, &data[0]))
}

// dropUser switches a root server's landlock-tier run to an unprivileged
// uid, which also clears every capability.
func dropUser(id int) error {
	if err := unix.Setgroups(nil); err != nil {
		return os.NewSyscallError("setgroups", err)
	}
	if err := unix.Setresgid(id, id, id); err != nil {
		return os.NewSyscallError("setresgid", err)
	}
	if err := unix.Setresuid(id, id, id); err != nil {
		return os.NewSyscallError("setresuid", err)
	}
	// A credential change clears the parent-death signal: set it again.
	return os.NewSyscallError("pdeathsig", unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0))
}

// restrictLandlock confines the filesystem (and, without network, TCP) to
// what the run needs, on top of the mounts: in the namespaces tier it is a
// second wall; in the landlock tier it is the wall. Best effort: the rules
// shrink to what the kernel's ABI knows. It also scopes signals and
// abstract Unix sockets to the sandbox (ABI 6).
func restrictLandlock(cfg *initConfig) error {
	c := landlock.V11.BestEffort()
	if cfg.Network {
		c.HandledAccessNet = 0
	}
	p := planLandlock(cfg)
	rules := []landlock.Rule{
		landlock.RODirs(p.roDirs...).IgnoreIfMissing(),
		landlock.ROFiles(p.roFiles...).IgnoreIfMissing(),
		landlock.RWDirs(p.rwDirs...).IgnoreIfMissing(),
		landlock.RWFiles(p.rwFiles...).IgnoreIfMissing(),
	}
	for _, port := range p.connectTCP {
		rules = append(rules, landlock.ConnectTCP(port))
	}
	if err := c.Restrict(rules...); err != nil {
		return fmt.Errorf("landlock: %w", err)
	}
	return nil
}

// landlockPlan is what a run may reach under Landlock: paths read-only or
// read-write, split into directories and files (whose rights differ), and
// the TCP ports it may connect to when network access is handled.
type landlockPlan struct {
	roDirs, roFiles, rwDirs, rwFiles []string
	connectTCP                       []uint16
}

func planLandlock(cfg *initConfig) landlockPlan {
	var ro, rw []string
	if cfg.Mode == initModeNS {
		ro = []string{"/"}
		rw = []string{"/tmp", "/dev/shm"}
	} else {
		ro = append(ro, systemDirs...)
		for _, e := range etcEntries {
			ro = append(ro, "/etc/"+e)
		}
	}
	for _, b := range cfg.Binds {
		if b.Write {
			rw = append(rw, b.Path)
		} else {
			ro = append(ro, b.Path)
		}
	}
	var p landlockPlan
	for _, path := range ro {
		if fi, err := os.Stat(path); err == nil && fi.IsDir() {
			p.roDirs = append(p.roDirs, path)
		} else if err == nil {
			p.roFiles = append(p.roFiles, path)
		}
	}
	p.rwDirs = rw
	p.rwFiles = []string{"/dev/null", "/dev/zero", "/dev/full"}
	p.roFiles = append(p.roFiles, "/dev/random", "/dev/urandom")
	if cfg.Egress != nil && !cfg.Network {
		p.connectTCP = []uint16{uint16(cfg.Egress.Port)}
	}
	return p
}

// landlockABI is the kernel's Landlock ABI version, 0 without Landlock.
func landlockABI() int {
	v, err := ll.LandlockGetABIVersion()
	if err != nil {
		return 0
	}
	return v
}
