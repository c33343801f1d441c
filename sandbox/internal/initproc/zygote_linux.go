package initproc

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// A zygote sandbox (initConfig.Zygote) is a namespaces-tier sandbox whose
// program is zygote.py: an interpreter that has started once and forks a
// fresh one for each run. The init builds the root as for any run but does
// not confine itself; it hands the zygote, which never runs a program's
// code, what each run's fork must put on itself before the program's first
// line (zygote.py does it in this same order):
//
//  1. its own mount, PID, IPC and cgroup namespaces, and network namespace
//     unless the sandbox's is the host's or holds the egress proxy; a
//     fresh /tmp, /dev/shm and /proc (with the capabilities the zygote
//     kept);
//  2. no capabilities, no way to regain them (dropCapabilities' steps);
//  3. the workspace as working directory, Landlock through the ruleset
//     built here, no_new_privs, the same seccomp filter as a fresh run's,
//     not dumpable;
//  4. the run's resource limits.
//
// The Landlock ruleset is planned here, with the same plan and rights as a
// fresh run's (planLandlock, narrowed to the kernel's ABI as go-landlock's
// best effort does), and built by each run after its mounts: a rule names
// an inode, and the tmpfs a run mounts over /tmp is its own. (The init
// cannot restrict the zygote instead: Landlock forbids mounts afterwards.)

// zygoteEnv carries zygoteSpec to the zygote, which removes it.
const zygoteEnv = "PRIMS_ZYGOTE"

// zygoteSpec is what each run's fork puts on itself (zygote.py).
type zygoteSpec struct {
	// Seccomp is the program's filter as struct sock_filter bytes.
	Seccomp string `json:"seccomp"`
	// Landlock is the run's ruleset, nil without Landlock.
	Landlock *llSpec `json:"landlock"`
	// Rlimits are [resource, soft, hard]; RLIMIT_NPROC's count the run's
	// own processes only: the fork adds the tasks already there.
	Rlimits [][3]uint64 `json:"rlimits"`
	NProc   int         `json:"nproc"` // RLIMIT_NPROC's resource number
	Dir     string      `json:"dir"`
	LastCap int         `json:"last_cap"`
	// Covered are the binds under /tmp and /dev/shm (the topmost ones;
	// those under them come along), which the fresh tmpfs a run mounts
	// there would hide: the run moves a copy of each onto its own.
	Covered []string `json:"covered"`
	// NetNS gives each run a network namespace of its own (loopback
	// only): when the sandbox has no network and no egress proxy, whose
	// way out is on the sandbox's loopback.
	NetNS bool `json:"netns"`
}

// prepareZygote does what confine does for a program, as far as it can be
// done once for every run: the rest is the spec the zygote's forks apply.
func prepareZygote(cfg *initConfig) error {
	if err := os.Chdir(cfg.Dir); err != nil {
		return fmt.Errorf("enter the workspace: %w", err)
	}
	spec := zygoteSpec{Landlock: landlockSpec(cfg), Dir: cfg.Dir, NProc: unix.RLIMIT_NPROC, LastCap: lastCap(), Covered: coveredBinds(cfg.Binds),
		NetNS: !cfg.Network && cfg.Egress == nil}
	var filter []byte
	for _, ins := range programFilter(cfg) {
		filter = binary.NativeEndian.AppendUint16(filter, ins.Code)
		filter = append(filter, ins.Jt, ins.Jf)
		filter = binary.NativeEndian.AppendUint32(filter, ins.K)
	}
	spec.Seccomp = base64.StdEncoding.EncodeToString(filter)
	for _, l := range rlimits(cfg.Limits, 0) {
		spec.Rlimits = append(spec.Rlimits, [3]uint64{uint64(l.res), l.lim.Cur, l.lim.Max})
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	cfg.Env = append(cfg.Env, zygoteEnv+"="+string(b))
	// The zygote cannot gain privileges by exec either, and what this
	// process holds (the report pipe) stays out of reach (pitfall 15).
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return os.NewSyscallError("no_new_privs", err)
	}
	return os.NewSyscallError("dumpable", unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0))
}

// coveredBinds lists the topmost binds under the tmpfs a run mounts afresh.
func coveredBinds(binds []bind) []string {
	under := func(p, dir string) bool { return strings.HasPrefix(p, dir+"/") }
	var out []string
	for _, b := range binds {
		if !under(b.Path, "/tmp") && !under(b.Path, "/dev/shm") {
			continue
		}
		top := true
		for _, o := range binds {
			if under(b.Path, o.Path) {
				top = false
			}
		}
		if top {
			out = append(out, b.Path)
		}
	}
	return out
}

// lastCap is the highest capability the kernel knows.
func lastCap() int {
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return n
		}
	}
	return unix.CAP_LAST_CAP
}

// landlockABIs are the access rights each Landlock ABI handles, as
// go-landlock's best effort picks them for landlock.V11: filesystem,
// network and scope masks, by ABI version (index).
var landlockABIs = []struct{ fs, net, scoped uint64 }{
	{0, 0, 0},
	{1<<13 - 1, 0, 0},
	{1<<14 - 1, 0, 0},
	{1<<15 - 1, 0, 0},
	{1<<15 - 1, 1<<2 - 1, 0},
	{1<<16 - 1, 1<<2 - 1, 0},
	{1<<16 - 1, 1<<2 - 1, 1<<2 - 1},
	{1<<16 - 1, 1<<2 - 1, 1<<2 - 1},
	{1<<16 - 1, 1<<2 - 1, 1<<2 - 1},
	{1<<17 - 1, 1<<2 - 1, 1<<2 - 1},
	{1<<17 - 1, 1<<4 - 1, 1<<2 - 1},
	{1<<17 - 1, 1<<4 - 1, 1<<2 - 1},
}

// The rights of go-landlock's RODirs, ROFiles, RWDirs and RWFiles.
const (
	llRead  = ll.AccessFSExecute | ll.AccessFSReadFile | ll.AccessFSReadDir
	llWrite = ll.AccessFSWriteFile | ll.AccessFSRemoveDir | ll.AccessFSRemoveFile | ll.AccessFSMakeChar |
		ll.AccessFSMakeDir | ll.AccessFSMakeReg | ll.AccessFSMakeSock | ll.AccessFSMakeFifo |
		ll.AccessFSMakeBlock | ll.AccessFSMakeSym | ll.AccessFSTruncate
	llFile = ll.AccessFSExecute | ll.AccessFSWriteFile | ll.AccessFSTruncate | ll.AccessFSReadFile
)

// llSpec is the Landlock ruleset of a fresh run, as a zygote's run builds
// it for itself after its mounts: a rule names an inode, and the fresh
// tmpfs a run mounts over /tmp is not the one the init could name.
type llSpec struct {
	HandledFS  uint64      `json:"handled_fs"`
	HandledNet uint64      `json:"handled_net"`
	Scoped     uint64      `json:"scoped"`
	Paths      []llPath    `json:"paths"`
	Ports      [][2]uint64 `json:"ports"` // [port, access]
}

type llPath struct {
	Path   string `json:"path"`
	Access uint64 `json:"access"`
}

// landlockSpec is what restrictLandlock enforces for a fresh run: the same
// plan, the same rights, narrowed to what the kernel's ABI handles; nil
// when the kernel has no Landlock.
func landlockSpec(cfg *initConfig) *llSpec {
	abi := min(landlockABI(), len(landlockABIs)-1)
	if abi <= 0 {
		return nil
	}
	h := landlockABIs[abi]
	s := &llSpec{HandledFS: h.fs, HandledNet: h.net, Scoped: h.scoped}
	if cfg.Network {
		s.HandledNet = 0
	}
	p := planLandlock(cfg)
	for _, r := range []struct {
		paths  []string
		access uint64
	}{
		{p.roDirs, llRead},
		{p.roFiles, llRead & llFile},
		{p.rwDirs, llRead | llWrite},
		{p.rwFiles, (llRead | llWrite) & llFile},
	} {
		if access := r.access & s.HandledFS; access != 0 {
			for _, path := range r.paths {
				s.Paths = append(s.Paths, llPath{path, access})
			}
		}
	}
	if s.HandledNet&ll.AccessNetConnectTCP != 0 {
		for _, port := range p.connectTCP {
			s.Ports = append(s.Ports, [2]uint64{uint64(port), ll.AccessNetConnectTCP})
		}
	}
	return s
}
