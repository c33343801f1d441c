package initproc

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The final step of the init: start the program with its limits on.

// startProgram starts the program as the init's child and returns its pid
// once its limits are on and its gate is open, and, in the landlock tier,
// the signals reap waits on.
//
// The limits go on the program, not on this process: under RLIMIT_DATA a Go
// runtime that needs one more span of heap dies ("cannot allocate memory":
// the race detector's runtime alone maps more than a small limit), and a
// limit below the init's own footprint would break every run. The program
// is started, gets its limits with prlimit, and only then is let through a
// gate (a byte on fdGate) before the bootstrap reads its code, so no code
// of the run ever executes without them.
func startProgram(cfg *initConfig) (int, chan os.Signal, error) {
	devnull, err := os.Open("/dev/null")
	if err != nil {
		return 0, nil, err
	}
	gateR, gateW, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	if err := joinCgroup(cfg.CgroupFD); err != nil {
		return 0, nil, err
	}
	tasks := threadsOfSelf()
	if cfg.Mode == initModeLL {
		tasks = hostTasks
	}
	limits := rlimits(cfg.Limits, tasks)
	if cfg.Zygote {
		limits = nil // each run's fork sets its own (zygoteSpec)
	}
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
			return 0, nil, fmt.Errorf("the sandbox user (uid %d) cannot run %s: install Python outside root's home, or enable user namespaces for the full sandbox", cfg.DropTo, cfg.Python)
		}
		return 0, nil, fmt.Errorf("start %s: %w", path.Base(cfg.Python), err)
	}
	gateR.Close()
	devnull.Close()
	unix.Close(fdCode)
	for _, l := range limits {
		if err := unix.Prlimit(pid, l.res, &l.lim, nil); err != nil {
			unix.Kill(pid, unix.SIGKILL)
			return 0, nil, os.NewSyscallError("prlimit", err)
		}
	}
	if _, err := gateW.Write([]byte{gateOpen}); err != nil {
		unix.Kill(pid, unix.SIGKILL)
		return 0, nil, fmt.Errorf("open the program's gate: %w", err)
	}
	gateW.Close()
	return pid, sigs, nil
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
