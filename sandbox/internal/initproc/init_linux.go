package initproc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// init runs the sandbox init as soon as this package is initialized: every
// run pays for what runs before MaybeInit in the re-executed binary. Go
// initializes packages in import-path order, each as soon as its imports
// are (Go 1.21's rule), so a package that imports little is initialized
// early, before the server's heavy dependencies (cloud SDKs, protobuf
// registries, the MCP SDK): that is why the init lives here and not in
// package sandbox, which imports net/http, os/exec and log/slog. Keep this
// package's imports few (TestInitImportsFew).
func init() { MaybeInit() }

// MaybeInit turns this process into the sandbox init when it was started as
// one, and never returns in that case. Otherwise it returns at once.
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
		// What the server reads as sandbox.initReport.
		b, _ := json.Marshal(struct {
			Err string `json:"err"`
		}{err.Error()})
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
	_ = CloseRangeOnExec(fdTrees + len(cfg.Binds))
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
		// A container runtime that masks parts of the host's /proc (podman's
		// and Docker's defaults mount over /proc/acpi, /proc/kcore, ...)
		// lets the namespaces exist but makes the kernel refuse every fresh
		// /proc, which each run mounts: find that here, not in every run.
		if err := mountProc("/tmp/proc"); err != nil {
			return fmt.Errorf("%w (the host's /proc has masked paths, as a container runtime's defaults give; podman: --security-opt unmask=/proc/*, Docker: --security-opt systempaths=unconfined)", err)
		}
		return probeOK()
	case initModeNS:
		if err := setupNamespaces(&cfg); err != nil {
			return err
		}
	case initModeLL:
		if err := setupLandlockTier(&cfg); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown sandbox mode %q", cfg.Mode)
	}
	if cfg.Zygote {
		if err := prepareZygote(&cfg); err != nil {
			return err
		}
	} else if err := confine(&cfg); err != nil {
		return err
	}
	return reap(&cfg)
}

// setupNamespaces prepares the namespaces tier: the cgroup namespace, the
// root filesystem, the hostname, the network, and no capabilities left.
func setupNamespaces(cfg *initConfig) error {
	if err := newCgroupNS(cfg, true); err != nil {
		return err
	}
	if err := buildRoot(cfg); err != nil {
		return err
	}
	_ = unix.Sethostname([]byte("prims"))
	if !cfg.Network {
		// An empty network namespace: loopback only, for programs
		// that talk to themselves (multiprocessing managers).
		_ = loopbackUp()
		if err := startEgress(cfg); err != nil {
			return err
		}
	}
	trace.mark("hostname, loopback")
	if cfg.Zygote {
		// The zygote keeps the namespace's capabilities: each run's
		// fork makes its own mount and PID namespaces with them, then
		// drops them (zygote.py).
		return nil
	}
	if err := dropCapabilities(); err != nil {
		return err
	}
	trace.mark("capabilities dropped")
	return nil
}

// setupLandlockTier prepares the landlock tier, which has no namespaces of
// its own: a root server's run drops to the sandbox uid, and the init
// guards the run's tree.
func setupLandlockTier(cfg *initConfig) error {
	if cfg.DropTo != 0 {
		// Root may still make a cgroup namespace (nobody else can
		// without a user namespace), unless it lacks CAP_SYS_ADMIN,
		// as in a container: best effort, Landlock hides /proc and
		// /sys from the program anyway.
		if err := newCgroupNS(cfg, false); err != nil {
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
	return nil
}

// confine applies, in this order, what holds in both tiers: the working
// directory, Landlock (after all mounts), no_new_privs, seccomp, and an
// init that the program cannot reach.
func confine(cfg *initConfig) error {
	if err := os.Chdir(cfg.Dir); err != nil {
		return fmt.Errorf("enter the workspace: %w", err)
	}
	if err := restrictLandlock(cfg); err != nil {
		return err
	}
	trace.mark("landlock")
	// Landlock set no_new_privs already, unless the kernel has no Landlock.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return os.NewSyscallError("no_new_privs", err)
	}
	if err := installSeccomp(programFilter(cfg)); err != nil {
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
	return nil
}

// programFilter is the seccomp filter the program runs under.
func programFilter(cfg *initConfig) []unix.SockFilter {
	return seccompFilter(filterOptions{
		denyInet:    cfg.Mode == initModeLL && !cfg.Network && cfg.Egress == nil,
		tcpOnly:     cfg.Mode == initModeLL && !cfg.Network && cfg.Egress != nil,
		denySession: cfg.Mode == initModeLL,
		hostShared:  cfg.Mode == initModeLL,
		// Only the Python runs are held to descriptor forms (bootstrap.py
		// turns the path forms into them); commands (pip) chmod by path.
		denyPathAttr: cfg.Mode == initModeLL && cfg.FDAttrs,
		denyUnix:     cfg.Mode == initModeLL && landlockABI() < 9,
	})
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
	cfg.CgroupFD = 0 // joined: startProgram has nothing left to do
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
func reap(cfg *initConfig) error {
	pid, sigs, err := startProgram(cfg)
	if err != nil {
		return err
	}
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
