package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// init runs the sandbox init as soon as this package is initialized, before
// the packages that import it (the MCP server, its schemas, the CLI) spend
// their own init time: every run pays for what runs before MaybeInit in the
// re-executed binary. Only the standard library and this package's few
// dependencies are initialized by then, as runc does with its own init.
func init() { MaybeInit() }

// MaybeInit turns this process into the sandbox init when it was started as
// one, and never returns in that case. Otherwise it returns at once. This
// package's init function calls it already; calling it again first thing in
// main and in TestMain keeps that visible and costs nothing.
func MaybeInit() {
	if os.Getenv(initEnv) == "" || len(os.Args) == 0 || os.Args[0] != initArg0 {
		return
	}
	// Every per-thread attribute set below (capabilities, no_new_privs,
	// Landlock, the parent-death signal) must be on the thread that forks
	// or execs the program: stay on this one for good.
	runtime.LockOSThread()
	trace.start = monotonic()
	report := os.NewFile(fdReport, "report")
	err := runInit()
	if err != nil {
		b, _ := json.Marshal(initReport{Err: err.Error()})
		report.Write(b)
		os.Exit(125)
	}
	os.Exit(0)
}

// runInit is the init step, in the order DESIGN.md requires: namespaces
// are already in place (clone flags); build the root and mount /proc while
// the old root is visible; then no_new_privs, capabilities, Landlock (after
// all mounts), seccomp; resource limits last; then the program.
func runInit() error {
	var cfg initConfig
	cfgFile := os.NewFile(fdConfig, "config")
	if err := json.NewDecoder(io.LimitReader(cfgFile, 16<<20)).Decode(&cfg); err != nil {
		return fmt.Errorf("read sandbox config: %w", err)
	}
	cfgFile.Close()
	trace.enable(cfg.TraceT0)
	trace.mark("config read")
	// The program must inherit only stdio and its code.
	unix.CloseOnExec(fdReport)
	for i := range cfg.Binds {
		unix.CloseOnExec(fdTrees + i)
	}
	// And nothing the server did not mean to hand over (it marks what it
	// inherited close-on-exec before starting an init; this is the same
	// rule kept where it matters).
	_ = closeRangeOnExec(fdTrees + len(cfg.Binds))
	if cfg.CgroupFD != 0 {
		unix.CloseOnExec(cfg.CgroupFD) // the run's cgroup: see joinCgroup
	}

	switch cfg.Mode {
	case initProbe + "-" + initModeLL:
		return probeOK()
	case initProbe + "-" + initModeNS:
		// A user namespace can exist and still be stripped of its
		// capabilities (Ubuntu's AppArmor rule): try what a run needs.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return os.NewSyscallError("make mounts private", err)
		}
		if err := unix.Mount("tmpfs", "/tmp", "tmpfs", 0, "size=4k"); err != nil {
			return os.NewSyscallError("mount tmpfs", err)
		}
		return probeOK()
	case initModeNS:
		if err := newCgroupNS(&cfg, true); err != nil {
			return err
		}
		if err := buildRoot(&cfg); err != nil {
			return err
		}
		_ = unix.Sethostname([]byte("prims"))
		if !cfg.Network {
			// An empty network namespace: loopback only, for programs
			// that talk to themselves (multiprocessing managers).
			_ = loopbackUp()
			if err := startEgress(&cfg); err != nil {
				return err
			}
		}
		trace.mark("hostname, loopback")
		if err := dropCapabilities(); err != nil {
			return err
		}
		trace.mark("capabilities dropped")
	case initModeLL:
		if cfg.DropTo != 0 {
			// Root may still make a cgroup namespace (nobody else can
			// without a user namespace), unless it lacks CAP_SYS_ADMIN,
			// as in a container: best effort, Landlock hides /proc and
			// /sys from the program anyway.
			if err := newCgroupNS(&cfg, false); err != nil {
				return err
			}
			if err := dropUser(cfg.DropTo); err != nil {
				return err
			}
		}
		if err := guardTree(); err != nil {
			return err
		}
		// Without a user namespace RLIMIT_NPROC counts every task of
		// this uid on the host: count them now, as the uid the program
		// runs as, while Landlock still lets this process read /proc.
		hostTasks = userTasks()
	default:
		return fmt.Errorf("unknown sandbox mode %q", cfg.Mode)
	}
	if err := os.Chdir(cfg.Dir); err != nil {
		return fmt.Errorf("enter the workspace: %w", err)
	}
	if err := restrictLandlock(&cfg); err != nil {
		return err
	}
	trace.mark("landlock")
	// Landlock set no_new_privs already, unless the kernel has no Landlock.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return os.NewSyscallError("no_new_privs", err)
	}
	if err := installSeccomp(seccompFilter(filterOptions{
		denyInet:    cfg.Mode == initModeLL && !cfg.Network && cfg.Egress == nil,
		tcpOnly:     cfg.Mode == initModeLL && !cfg.Network && cfg.Egress != nil,
		denySession: cfg.Mode == initModeLL,
		hostShared:  cfg.Mode == initModeLL,
		// Only the Python runs are held to descriptor forms (bootstrap.py
		// turns the path forms into them); commands (pip) chmod by path.
		denyPathAttr: cfg.Mode == initModeLL && cfg.FDAttrs,
		denyUnix:     cfg.Mode == initModeLL && landlockABI() < 9,
	})); err != nil {
		return err
	}
	trace.mark("seccomp")
	// The program must not reach what this process holds (the report
	// pipe, as /proc/1/fd/N, where it could forge its own exit status:
	// DESIGN.md pitfall 15) or its memory: a process that is not dumpable
	// is open to ptrace-mode access only with CAP_SYS_PTRACE, which the
	// program never has.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return os.NewSyscallError("dumpable", err)
	}
	return reap(&cfg)
}

// newCgroupNS joins the run's cgroup (v2 runs were born in it) and then
// makes a cgroup namespace, whose root is the cgroup the caller is in at
// that moment (DESIGN.md pitfall 5): the program sees "/" and no host
// cgroup path. The join comes this early, on the thread that will start the
// program, because seccomp forbids unshare later.
// Unless required, a namespace the kernel refuses (EPERM) is left out.
func newCgroupNS(cfg *initConfig, required bool) error {
	if err := joinCgroup(cfg.CgroupFD); err != nil {
		return err
	}
	cfg.CgroupFD = 0 // joined: reap has nothing left to do
	err := unix.Unshare(unix.CLONE_NEWCGROUP)
	if err != nil && !errors.Is(err, unix.EINVAL) && (required || !errors.Is(err, unix.EPERM)) {
		return os.NewSyscallError("unshare cgroup namespace", err)
	}
	return nil
}

// guardTree keeps a landlock-tier run from outliving the server: there is
// no PID namespace to take the tree down, and the server's process-group
// kill never comes when the server itself is killed. The init stays the
// program's parent (reap), becomes a child subreaper so that orphans of
// the run stay below it, and asks for a signal it can catch when the
// server dies: then reap kills its process group, which holds every
// process of the run (setsid and setpgid are denied to the program),
// itself included. The clone-time SIGKILL covers the moments before, and
// a SIGTERM before reap listens ends this process before any program.
func guardTree() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return os.NewSyscallError("child subreaper", err)
	}
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGTERM), 0, 0, 0); err != nil {
		return os.NewSyscallError("pdeathsig", err)
	}
	// The server may have died before the signal was changed, after the
	// clone-time SIGKILL would have fired: then this process is already
	// gone, so there is nothing else to check.
	return nil
}

// traceEnv, set to 1 in the server's environment, makes the init write how
// long each of its stages took to the run's stderr, in milliseconds since
// the server prepared the run (CLOCK_MONOTONIC is shared with the host).
const traceEnv = "PRIMS_SANDBOX_TRACE"

// trace records the init's stages when the server asked for it.
var trace stageTrace

type stageTrace struct {
	start, t0 int64 // when MaybeInit began; when the server prepared the run
	buf       []byte
	out       int // a copy of stderr, which outlives the init's own
}

func (t *stageTrace) enable(t0 int64) {
	if t0 == 0 {
		return
	}
	t.t0 = t0
	t.out, _ = unix.FcntlInt(2, unix.F_DUPFD_CLOEXEC, 0)
	t.buf = fmt.Appendf(t.buf, "prims-sandbox-trace: %7.3f ms  init started (Go runtime and package init done)\n", float64(t.start-t0)/1e6)
}

func (t *stageTrace) mark(stage string) {
	if t.t0 == 0 {
		return
	}
	t.buf = fmt.Appendf(t.buf, "prims-sandbox-trace: %7.3f ms  %s\n", float64(monotonic()-t.t0)/1e6, stage)
}

func (t *stageTrace) flush() {
	if t.t0 == 0 || len(t.buf) == 0 {
		return
	}
	unix.Write(t.out, t.buf)
	t.buf = t.buf[:0]
}

func monotonic() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// landlockABI is the kernel's Landlock ABI version, 0 without Landlock.
func landlockABI() int {
	v, err := ll.LandlockGetABIVersion()
	if err != nil {
		return 0
	}
	return v
}

func probeOK() error {
	_, err := os.NewFile(fdReport, "report").Write([]byte(`{"ok":true}`))
	return err
}

// reap starts the program as PID 2 and stays PID 1 of the namespace: a
// program as PID 1 would ignore signals it has no handler for (DESIGN.md
// pitfall 2), and orphans must be reaped by someone. When the program
// exits, the init reports its status and exits too, and the kernel kills
// whatever is left in the namespace: nothing outlives the run. In the
// landlock tier there is no namespace: the init is the program's parent
// all the same, so that it can take the run down with the server
// (guardTree), and the server kills the process group at the end.
//
// The limits go on the program, not on this process: under RLIMIT_DATA a Go
// runtime that needs one more span of heap dies ("cannot allocate memory":
// the race detector's runtime alone maps more than a small limit), and a
// limit below the init's own footprint would break every run. The program
// is started, gets its limits with prlimit, and only then is let through a
// gate (a byte on fdGate) before the bootstrap reads its code, so no code
// of the run ever executes without them.
func reap(cfg *initConfig) error {
	devnull, err := os.Open("/dev/null")
	if err != nil {
		return err
	}
	gateR, gateW, err := os.Pipe()
	if err != nil {
		return err
	}
	if err := joinCgroup(cfg.CgroupFD); err != nil {
		return err
	}
	tasks := threadsOfSelf()
	if cfg.Mode == initModeLL {
		tasks = hostTasks
	}
	limits := rlimits(cfg.Limits, tasks)
	env := append(cfg.Env, gateEnv+"="+strconv.Itoa(fdGate))
	// In the landlock tier, children are reaped, and the server's death
	// handled, on this thread as signals come; asked for before the first
	// child exists. The namespaces tier blocks in wait4 (cheaper), since
	// the kernel takes its tree down with it.
	var sigs chan os.Signal
	if cfg.Mode == initModeLL {
		sigs = make(chan os.Signal, 8)
		signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM)
	}
	trace.mark("fork")
	trace.flush()
	pid, err := syscall.ForkExec(cfg.Python, cfg.Args, &syscall.ProcAttr{
		Dir:   cfg.Dir,
		Env:   env,
		Files: []uintptr{devnull.Fd(), 1, 2, fdCode, gateR.Fd()},
		Sys:   &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		if cfg.DropTo != 0 && errors.Is(err, unix.EACCES) {
			return fmt.Errorf("the sandbox user (uid %d) cannot run %s: install Python outside root's home, or enable user namespaces for the full sandbox", cfg.DropTo, cfg.Python)
		}
		return fmt.Errorf("start %s: %w", filepath.Base(cfg.Python), err)
	}
	gateR.Close()
	devnull.Close()
	unix.Close(fdCode)
	for _, l := range limits {
		if err := unix.Prlimit(pid, l.res, &l.lim, nil); err != nil {
			unix.Kill(pid, unix.SIGKILL)
			return os.NewSyscallError("prlimit", err)
		}
	}
	if _, err := gateW.Write([]byte{gateOpen}); err != nil {
		unix.Kill(pid, unix.SIGKILL)
		return fmt.Errorf("open the program's gate: %w", err)
	}
	gateW.Close()
	unix.Close(1)
	unix.Close(2)
	report := os.NewFile(fdReport, "report")
	for {
		for {
			var ws unix.WaitStatus
			var ru unix.Rusage
			opts := 0
			if sigs != nil {
				opts = unix.WNOHANG
			}
			got, err := unix.Wait4(-1, &ws, opts, &ru)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return os.NewSyscallError("wait4", err)
			}
			if got <= 0 && sigs != nil {
				break
			}
			if got == pid {
				trace.mark("program exited")
				trace.flush()
				cpu := ru.Utime.Nano() + ru.Stime.Nano()
				_, err := fmt.Fprintf(report, `{"status":%d,"cpu_ns":%d}`, int(ws), cpu)
				return err
			}
		}
		if <-sigs == unix.SIGTERM {
			// The server died (guardTree). This goroutine is locked to
			// the thread that started the program: Landlock scopes
			// signals by domain, and that thread's domain is the
			// program's (another thread's may be a sibling, which
			// may not signal it).
			unix.Kill(0, unix.SIGKILL)
		}
	}
}

// buildRoot makes the minimal root in two pivot_root steps: first a scratch
// tmpfs becomes "/" with the host's root under /oldroot, so every host path
// stays reachable while the new root is assembled in /newroot; then /newroot
// becomes "/" and the old root is detached.
func buildRoot(cfg *initConfig) error {
	// Nothing mounted here may propagate back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return os.NewSyscallError("make mounts private", err)
	}
	if err := unix.Mount("tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=64k"); err != nil {
		return os.NewSyscallError("mount scratch tmpfs", err)
	}
	for _, d := range []string{"/tmp/oldroot", "/tmp/newroot"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if err := unix.PivotRoot("/tmp", "/tmp/oldroot"); err != nil {
		return os.NewSyscallError("pivot_root to scratch", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	trace.mark("scratch root")
	const nr = "/newroot"
	if err := unix.Mount("tmpfs", nr, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=1m"); err != nil {
		return os.NewSyscallError("mount root tmpfs", err)
	}

	for _, d := range systemDirs {
		if err := bindHost(d, nr+d, true, true); err != nil {
			return err
		}
	}
	trace.mark("system dirs bound")
	if err := os.Mkdir(nr+"/etc", 0o755); err != nil {
		return err
	}
	for _, e := range etcEntries {
		if e == "resolv.conf" && !cfg.Network {
			continue
		}
		if err := bindHost("/etc/"+e, nr+"/etc/"+e, true, true); err != nil {
			return err
		}
	}
	home := filepath.Join(cfg.Dir, ".home")
	if err := os.WriteFile(nr+"/etc/passwd", []byte("sandbox:x:0:0:sandbox:"+home+":/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(nr+"/etc/group", []byte("sandbox:x:0:\nnogroup:x:65534:\n"), 0o644); err != nil {
		return err
	}
	trace.mark("/etc")
	if err := buildDev(nr + "/dev"); err != nil {
		return err
	}
	trace.mark("/dev")
	// A fresh /proc for the new PID namespace, mounted while the old
	// root's /proc is still visible (the kernel refuses otherwise);
	// subset=pid leaves out /proc/sys and the other host-wide files.
	if err := os.Mkdir(nr+"/proc", 0o555); err != nil {
		return err
	}
	const procFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := unix.Mount("proc", nr+"/proc", "proc", procFlags, "subset=pid"); err != nil {
		if err := unix.Mount("proc", nr+"/proc", "proc", procFlags, ""); err != nil {
			return os.NewSyscallError("mount /proc", err)
		}
	}
	trace.mark("/proc")
	if err := mountTmpfs(nr+"/tmp", "mode=1777,size=64m"); err != nil {
		return err
	}
	for i, b := range cfg.Binds {
		dst := nr + b.Path
		if b.Tree {
			if err := attachTree(fdTrees+i, dst); err != nil {
				return err
			}
			continue
		}
		if err := bindHost(b.Src, dst, !b.Write, false); err != nil {
			return err
		}
	}
	trace.mark("/tmp, workspace and trees")
	if err := unix.Mount("", nr, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return os.NewSyscallError("make root read-only", err)
	}

	if err := os.Chdir(nr); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return os.NewSyscallError("pivot_root", err)
	}
	trace.mark("pivot_root")
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return os.NewSyscallError("detach old root", err)
	}
	trace.mark("old root detached")
	return os.Chdir("/")
}

// bindHost binds the host path src (seen under /oldroot) at dst. A missing
// src is skipped when optional; a symlink is copied as a symlink, so merged
// /usr layouts and /etc/localtime keep working.
func bindHost(src, dst string, readOnly, optional bool) error {
	host := "/oldroot" + src
	fi, err := os.Lstat(host)
	if err != nil {
		if optional {
			return nil
		}
		return fmt.Errorf("sandbox path %s: %w", src, err)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		target, err := os.Readlink(host)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.Symlink(target, dst)
	}
	if err := mountpoint(dst, fi.IsDir()); err != nil {
		return err
	}
	if err := unix.Mount(host, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return os.NewSyscallError("bind "+src, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if readOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(unix.AT_FDCWD, dst, unix.AT_RECURSIVE, &attr); err != nil {
		return remountBind(dst, readOnly)
	}
	return nil
}

// remountBind is the pre-5.12 way to make a bind read-only: a remount that
// keeps the flags the kernel locked on the source mount.
func remountBind(dst string, readOnly bool) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dst, &st); err != nil {
		return os.NewSyscallError("statfs "+dst, err)
	}
	flags := uintptr(unix.MS_REMOUNT|unix.MS_BIND|unix.MS_NOSUID|unix.MS_NODEV) |
		uintptr(st.Flags)&(unix.MS_NOEXEC|unix.MS_NOATIME|unix.MS_NODIRATIME|unix.MS_RELATIME|unix.MS_RDONLY)
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	return os.NewSyscallError("remount "+dst, unix.Mount("", dst, "", flags, ""))
}

// attachTree attaches a detached mount tree the server cloned for us.
func attachTree(fd int, dst string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return os.NewSyscallError("fstat tree", err)
	}
	if err := mountpoint(dst, st.Mode&unix.S_IFMT == unix.S_IFDIR); err != nil {
		return err
	}
	err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH)
	unix.Close(fd)
	return os.NewSyscallError("move_mount "+dst, err)
}

// mountpoint makes sure dst exists as a directory or a file to mount on.
func mountpoint(dst string, dir bool) error {
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	if dir {
		return os.MkdirAll(dst, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

func mountTmpfs(dst, opts string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	return os.NewSyscallError("mount tmpfs "+dst, unix.Mount("tmpfs", dst, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts))
}

// buildDev makes a /dev with only the harmless devices, a private /dev/shm
// for multiprocessing, and the usual fd links; no tty, so TIOCSTI has no
// terminal to type into.
func buildDev(dev string) error {
	if err := mountTmpfs(dev, "mode=0755,size=64k"); err != nil {
		return err
	}
	for _, n := range []string{"null", "zero", "full", "random", "urandom"} {
		if err := mountpoint(dev+"/"+n, false); err != nil {
			return err
		}
		if err := unix.Mount("/oldroot/dev/"+n, dev+"/"+n, "", unix.MS_BIND, ""); err != nil {
			return os.NewSyscallError("bind /dev/"+n, err)
		}
	}
	for link, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, dev+"/"+link); err != nil {
			return err
		}
	}
	if err := mountTmpfs(dev+"/shm", "mode=1777,size=64m"); err != nil {
		return err
	}
	return os.NewSyscallError("make /dev read-only", unix.Mount("", dev, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID, ""))
}

// loopbackUp brings up lo in the run's empty network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_UP | unix.IFF_RUNNING)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

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
	var wsRules []landlock.Rule
	for _, b := range cfg.Binds {
		if b.Write {
			rw = append(rw, b.Path)
		} else {
			ro = append(ro, b.Path)
		}
	}
	var rodirs, rofiles []string
	for _, p := range ro {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			rodirs = append(rodirs, p)
		} else if err == nil {
			rofiles = append(rofiles, p)
		}
	}
	rules := append(wsRules,
		landlock.RODirs(rodirs...).IgnoreIfMissing(),
		landlock.ROFiles(rofiles...).IgnoreIfMissing(),
		landlock.RWDirs(rw...).IgnoreIfMissing(),
		landlock.RWFiles("/dev/null", "/dev/zero", "/dev/full").IgnoreIfMissing(),
		landlock.ROFiles("/dev/random", "/dev/urandom").IgnoreIfMissing(),
	)
	rules = append(rules, egressRules(cfg)...)
	if err := c.Restrict(rules...); err != nil {
		return fmt.Errorf("landlock: %w", err)
	}
	return nil
}

// rlimit is one resource limit to set.
type rlimit struct {
	res int
	lim unix.Rlimit
}

// rlimits lists the run's limits, never above what this process was given.
// tasks is how many tasks already count against RLIMIT_NPROC.
func rlimits(l Limits, tasks int) []rlimit {
	cpu := uint64((l.CPUTime + time.Second - 1) / time.Second)
	var out []rlimit
	for _, r := range []struct {
		res int
		val uint64
	}{
		{unix.RLIMIT_CORE, 0},
		// The soft limit, below, ends the program with SIGXCPU (it is
		// never PID 1, which would ignore it): a signal nothing else
		// sends, so the server can tell this limit from every other.
		{unix.RLIMIT_CPU, cpu},
		{unix.RLIMIT_FSIZE, uint64(l.MaxFileSize)},
		{unix.RLIMIT_NOFILE, uint64(l.MaxOpenFiles)},
		{unix.RLIMIT_NPROC, uint64(l.MaxProcs + tasks)},
		// RLIMIT_DATA, not RLIMIT_AS: address-space reservations (thread
		// stacks, numpy, the Go runtime) are not memory in use. Last,
		// because it is the one that can break this process.
		{unix.RLIMIT_DATA, uint64(l.Memory)},
	} {
		v := r.val
		var cur unix.Rlimit
		if err := unix.Getrlimit(r.res, &cur); err == nil && cur.Max < v {
			v = cur.Max
		}
		lim := unix.Rlimit{Cur: v, Max: v}
		if r.res == unix.RLIMIT_CPU && v < cur.Max {
			// The hard limit, a second later, kills a program that
			// catches or ignores SIGXCPU.
			lim.Max = v + 1
		}
		out = append(out, rlimit{r.res, lim})
	}
	return out
}

// threadsOfSelf counts this process's threads, which RLIMIT_NPROC counts too.
func threadsOfSelf() int {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 16
	}
	return len(ents)
}

// hostTasks is what userTasks counted in the landlock tier before
// Landlock hid /proc from the init.
var hostTasks int

// userTasks counts the tasks of this uid across the host: without a user
// namespace, RLIMIT_NPROC counts them all against the limit. One stat of
// /proc/PID/task each (owned by the process's uid; procfs gives it 2 + its
// threads as link count) instead of reading every status file: about 0.2
// ms for a hundred processes instead of 1.5-2 ms.
func userTasks() int {
	uid := os.Getuid()
	f, err := os.Open("/proc")
	if err != nil {
		return 0
	}
	names, _ := f.Readdirnames(-1)
	f.Close()
	n := 0
	for _, name := range names {
		if name == "" || name[0] < '0' || name[0] > '9' {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+name+"/task", &st) != nil || int(st.Uid) != uid {
			continue
		}
		n += max(int(st.Nlink)-2, 1)
	}
	return n
}
