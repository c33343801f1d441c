// Package sandbox runs model-written Python programs as fresh child
// processes, streams their output as it is written, and makes sure that
// nothing they started outlives the run: on exit, timeout or cancellation the
// whole process tree is killed.
//
//	r, err := sandbox.New(sandbox.Config{})
//	if err != nil { ... }
//	res, err := r.Run(ctx, sandbox.Job{
//		Python: "/usr/bin/python3.11",
//		Code:   "print('hello')",
//		Dir:    workDir,
//		Stdout: os.Stdout,
//		Stderr: os.Stderr,
//	})
//	fmt.Println(res.ExitCode)
//
// How strongly a run is isolated from the host depends on the [Tier] the
// host supports; Result.Tier says which one ran it.
package sandbox

import (
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/prims-mcp/prims/sandbox/egress"
)

//go:embed bootstrap.py
var bootstrap string

// Tier names how a run was isolated.
type Tier string

const (
	// TierNamespaces runs the code as an unprivileged user in new user,
	// mount, PID, network, IPC, UTS and cgroup namespaces, in a minimal
	// read-only root that holds only system libraries, the interpreter, the
	// job's read-only paths and the workspace, under no_new_privs, no
	// capabilities, Landlock, a seccomp filter and resource limits. Nothing
	// it starts survives the run.
	TierNamespaces Tier = "namespaces"
	// TierLandlock is the fallback where user namespaces are forbidden: the
	// code sees the host's filesystem, but Landlock lets it read only system
	// directories and the job's paths and write only the workspace; seccomp
	// blocks the dangerous system calls (and sockets when the network is
	// off), resource limits apply, and the process group is killed at the end.
	TierLandlock Tier = "landlock"
	// TierNone runs the child as a plain process in its own process group,
	// with a scrubbed environment. It does not stop the code from reading
	// or writing the user's files.
	TierNone Tier = "none"
)

// Isolation is the operator's policy for choosing a Tier.
type Isolation string

const (
	IsolationAuto   Isolation = "auto"   // the strongest tier the host supports
	IsolationStrict Isolation = "strict" // TierNamespaces or refuse to start
	IsolationOff    Isolation = "off"    // TierNone, for development only
)

// ErrIsolation is wrapped by New's error when IsolationStrict cannot be met.
var ErrIsolation = errors.New("full isolation is not available on this host")

// Limits bound what one run may use. Zero fields take DefaultLimits.
type Limits struct {
	Memory         int64         // bytes of memory the whole run may use (see MemoryEnforcement)
	CPUTime        time.Duration // CPU seconds per process
	MaxProcs       int           // processes and threads the run may have at once
	MaxFileSize    int64         // bytes one file may grow to
	MaxOpenFiles   int           // open descriptors per process
	WorkspaceQuota int64         // bytes the whole workspace may hold while the code runs
}

// DefaultLimits are generous for data work and still keep one run from
// taking the machine.
var DefaultLimits = Limits{
	Memory:         2 << 30,
	CPUTime:        10 * time.Minute,
	MaxProcs:       256,
	MaxFileSize:    1 << 30,
	MaxOpenFiles:   1024,
	WorkspaceQuota: 2 << 30,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.Memory <= 0 {
		l.Memory = d.Memory
	}
	if l.CPUTime <= 0 {
		l.CPUTime = d.CPUTime
	}
	if l.MaxProcs <= 0 {
		l.MaxProcs = d.MaxProcs
	}
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = d.MaxFileSize
	}
	if l.MaxOpenFiles <= 0 {
		l.MaxOpenFiles = d.MaxOpenFiles
	}
	if l.WorkspaceQuota <= 0 {
		l.WorkspaceQuota = d.WorkspaceQuota
	}
	// One file can never be larger than the whole workspace may be.
	l.MaxFileSize = min(l.MaxFileSize, l.WorkspaceQuota)
	return l
}

// Names of the limits, as Result.Limit reports them (they match the flags).
const (
	LimitWallTime       = "wall-time"
	LimitCPUTime        = "cpu-time"
	LimitMemory         = "memory"
	LimitMaxProcs       = "max-procs"
	LimitMaxFileSize    = "max-file-size"
	LimitMaxOpenFiles   = "max-open-files"
	LimitWorkspaceQuota = "workspace-quota"
)

// MemoryEnforcement names how Limits.Memory bounds a run.
type MemoryEnforcement string

const (
	// MemoryCgroupV2 and MemoryCgroupV1: each run gets its own memory
	// cgroup; the kernel bounds all its processes together, and the run is
	// killed when its OOM killer fires.
	MemoryCgroupV2 MemoryEnforcement = "cgroup v2"
	MemoryCgroupV1 MemoryEnforcement = "cgroup v1"
	// MemoryAccounting: no cgroup is available; the server adds up the
	// memory (PSS) of the run's processes while it runs and kills the run
	// once they hold more than the limit together.
	MemoryAccounting MemoryEnforcement = "accounting"
	// MemoryPerProcess: only RLIMIT_DATA, which bounds each process alone.
	MemoryPerProcess MemoryEnforcement = "RLIMIT_DATA per process"
	// MemoryNone: nothing bounds memory (TierNone without /proc, other OSes).
	MemoryNone MemoryEnforcement = "not limited"
)

// Config configures a Runner.
type Config struct {
	// DefaultTimeout applies to jobs that set none.
	DefaultTimeout time.Duration
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
	// Isolation chooses the tier; "" means IsolationAuto.
	Isolation Isolation
	// Network keeps the host's network reachable from the code. By default
	// a run has no network at all.
	Network bool
	// Egress, when it allows any host and Network is off, gives runs a
	// way out: an HTTP proxy in the server (HTTP_PROXY and HTTPS_PROXY
	// point at it) that lets through only the hosts it allows.
	Egress egress.Policy
	// Limits bound each run; zero fields take DefaultLimits.
	Limits Limits
	// Tier, when set, forces a tier instead of detecting one: tests use it
	// to exercise the fallback on hosts that support more.
	Tier Tier
	// Memory, when set, forces how the memory limit is enforced instead of
	// the best way available (MemoryAccounting works wherever a cgroup
	// does); tests use it to exercise the fallback.
	Memory MemoryEnforcement
	// Warm is how many sandboxes to keep started and waiting for code, per
	// interpreter, workspace and set of paths recently used; 0 disables
	// the pool.
	Warm int
	// WarmIdle is how long a waiting sandbox may stay unused before it is
	// stopped, and a recently used key keeps being refilled (5 minutes).
	WarmIdle time.Duration
	// Preload names modules the interpreter imports before it reads the
	// program, so that runs find them already imported. Their import-time
	// state is shared by every run; nothing else is.
	Preload []string
	// NoZygote starts every run's interpreter anew (from the warm pool,
	// when there is one) instead of forking it from a zygote, a sandbox
	// per workspace and environment whose interpreter forks a fresh one
	// for each run (zygote_linux.go). Zygotes exist only in the
	// namespaces tier.
	NoZygote bool
	// ProbeCache, when set, is a directory where the probes of what the
	// host supports record a success, so that a short-lived process
	// (`prims run`) does not start the init twice to find it again.
	ProbeCache string
}

// Runner starts jobs. It is safe for concurrent use.
type Runner struct {
	cfg     Config
	tier    Tier
	limits  Limits
	support Support
	memory  MemoryEnforcement
	// closeCgroups uncounts the runner from runCgroups once.
	closeCgroups sync.Once
	log          *slog.Logger
	pool         *pool

	zygotes zygotes // Linux: zygote_linux.go

	// shared holds the workspaces already handed to the sandbox user
	// (shareWorkspace): after the first run only mounts/ needs it again.
	shared sync.Map
	gate   *gate // the egress proxy of runs (Config.Egress), or nil
}

// New returns a Runner for this host. Host support is probed once per
// process; New fails only when cfg.Isolation is strict and the host cannot
// give full isolation.
func New(cfg Config) (*Runner, error) {
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = 60 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Isolation == "" {
		cfg.Isolation = IsolationAuto
	}
	// What this process inherited is settled by now (everything Go opens
	// is close-on-exec already): mark it once, not at every start.
	closeInheritedOnExec()
	r := &Runner{cfg: cfg, limits: cfg.Limits.withDefaults(), log: log, support: probeCached(cfg.ProbeCache)}
	switch cfg.Isolation {
	case IsolationOff:
		r.tier = TierNone
		log.Warn("ISOLATION IS OFF: model-written code runs with this user's full access to files, network and processes; use only for development")
	case IsolationAuto, IsolationStrict:
		r.tier = r.support.Best
		if cfg.Isolation == IsolationStrict && r.tier != TierNamespaces {
			return nil, fmt.Errorf("%w (best available: %s): %s; run `prims doctor` for the fix", ErrIsolation, r.tier, r.support.Missing())
		}
		if r.tier != TierNamespaces {
			log.Warn("sandbox runs with reduced isolation", "tier", r.tier, "missing", r.support.Missing())
		}
	default:
		return nil, fmt.Errorf("isolation %q: want strict, auto or off", cfg.Isolation)
	}
	if cfg.Tier != "" {
		if cfg.Isolation == IsolationStrict && cfg.Tier != TierNamespaces {
			return nil, fmt.Errorf("%w: tier %s was asked for under strict isolation", ErrIsolation, cfg.Tier)
		}
		if !r.support.Can(cfg.Tier) {
			return nil, fmt.Errorf("tier %s is not supported here: %s", cfg.Tier, r.support.Missing())
		}
		r.tier = cfg.Tier
	}
	mem, memErr := detectMemory()
	switch {
	case cfg.Memory == "" || cfg.Memory == mem:
	case cfg.Memory == MemoryAccounting && (mem == MemoryCgroupV1 || mem == MemoryCgroupV2),
		cfg.Memory == MemoryPerProcess && mem != MemoryNone:
		mem = cfg.Memory
	default:
		return nil, fmt.Errorf("memory enforcement %q is not available here (best: %s): %v", cfg.Memory, mem, memErr)
	}
	if r.tier == TierNone {
		mem = MemoryNone // a plain process, without limits, by design
	}
	r.memory = mem
	if len(cfg.Egress.Allow) > 0 && !cfg.Network && r.tier != TierNone {
		g, err := openGate(cfg.Egress, log)
		if err != nil {
			return nil, err
		}
		r.gate = g
	}
	runCgroups.open()
	r.pool = newPool(r, cfg.Warm, cfg.WarmIdle)
	return r, nil
}

// Close stops the sandboxes waiting in the warm pool and waits until their
// cgroups are removed (the last Runner of the process also removes the one
// made ahead). Runs in flight are not affected; the Runner can still run
// jobs, without a pool.
func (r *Runner) Close() {
	r.closeZygotes()
	r.pool.close()
	r.gate.close()
	r.closeCgroups.Do(runCgroups.close)
}

// warmJob is job as its sandbox starts it (with the preload list for the
// bootstrap), and the pool key of sandboxes that can take it: Run and
// Prewarm must agree on both.
func (r *Runner) warmJob(job Job) (Job, string) {
	if len(r.cfg.Preload) > 0 {
		job.Env = append(slices.Clip(job.Env), "PRIMS_PRELOAD="+strings.Join(r.cfg.Preload, ","))
	}
	return job, warmKey(job)
}

// Tier reports the isolation tier the runner uses.
func (r *Runner) Tier() Tier { return r.tier }

// Limits reports the limits every run gets.
func (r *Runner) Limits() Limits { return r.limits }

// MemoryEnforcement reports how the memory limit bounds runs (a run whose
// cgroup could not be made says so in Result.Memory).
func (r *Runner) MemoryEnforcement() MemoryEnforcement { return r.memory }

// Job is one program to run.
type Job struct {
	Python string // interpreter to execute (host path)
	Code   string // the program's source
	// Filename names the program in tracebacks, relative to Dir. When a
	// file of that name holds the source, tracebacks show its lines.
	Filename string
	// Argv, if set, is the program's sys.argv, as `python FILE ARGS...`
	// would give it (argv[0] as typed, FILE's absolute path in Filename).
	// The program also sees its source in tracebacks when the sandbox
	// cannot read Filename. Default: [Filename].
	Argv []string
	Dir  string // working directory (the workspace), read-write for the code
	// Home and Tmp are the program's HOME and TMPDIR, host paths inside
	// Dir that the caller's workspace layout chooses (workspace.HomeDir and
	// TmpDir); "" takes Dir itself. The sandbox knows no layout.
	Home, Tmp string
	// ReadOnly lists host paths the code needs to read, such as the
	// interpreter's prefix, an environment, and mounted inputs. In the
	// sandbox they appear at the same paths, read-only, even inside Dir.
	ReadOnly []string
	Env      []string // extra KEY=VALUE pairs on top of the minimal environment
	// Stdout and Stderr receive the streams as they are written. They are
	// called from one goroutine each and should not block for long.
	Stdout, Stderr io.Writer
	Timeout        time.Duration // wall-clock limit; 0 means Config.DefaultTimeout
	// QuotaUsed is what the workspace holds against the quota outside
	// Dir (mounted inputs, which the program cannot change): the run may
	// add only what is left.
	QuotaUsed int64

	cmd *Command // RunCommand's: runs instead of the bootstrap
	// zygote makes the sandbox a zygote's (zygote_linux.go): script is
	// the zygote, ctl its fd 3.
	zygote bool
	// script, when set, is the Python program the sandbox starts instead
	// of the bootstrap (the state server), and ctl its fd 3 instead of a
	// code pipe: a unix socket the server keeps talking on.
	script string
	ctl    *os.File
}

// program is the Python source the interpreter is started with (-c).
func (job Job) program() string {
	if job.script != "" {
		return job.script
	}
	return bootstrap
}

// codeHeader is the first line of what the bootstrap reads: the program's
// file name, or with Argv a NUL and the JSON array [Filename, argv...]
// (JSON escapes newlines; argv cannot hold a NUL).
func codeHeader(job Job) string {
	if len(job.Argv) == 0 {
		return strings.ReplaceAll(job.Filename, "\n", " ")
	}
	b, _ := json.Marshal(append([]string{job.Filename}, job.Argv...))
	return "\x00" + string(b)
}

// Result describes how a job ended.
type Result struct {
	ExitCode  int           // the process's exit status; -N when killed by signal N
	Signal    string        // the signal that ended it, if any ("killed")
	TimedOut  bool          // the wall-clock limit ended it
	Cancelled bool          // the caller's context ended it
	Duration  time.Duration // from start to exit
	Tier      Tier
	// Limit names the resource limit that ended or broke the run (one of
	// the Limit* constants), or is empty. Output captured before is kept.
	Limit string
	// Memory says how the memory limit bounded this run.
	Memory MemoryEnforcement
	// Warm reports that the run was handed to a sandbox started ahead of
	// time (Config.Warm).
	Warm bool
}

// ErrStart is wrapped by Run's error when the interpreter could not be started.
var ErrStart = errors.New("cannot start python")

// Run executes job and waits for it and everything it started to end. The
// error is non-nil only when the job could not be started; a program that
// fails, times out or is cancelled is reported in the Result.
//
// With a warm pool (Config.Warm), the job runs in a sandbox that was started
// ahead of time for the same interpreter, workspace and paths and has been
// waiting for its code; otherwise one is started now. Either way the program
// is a brand-new process, and limits, timeout and cancellation count from
// the moment the code is handed over.
func (r *Runner) Run(ctx context.Context, job Job) (Result, error) {
	job, key := r.warmJob(job)
	if res, ok, err := r.runZygote(ctx, job, key); ok {
		return res, err
	}
	c := r.pool.take(ctx, key)
	if c == nil {
		var err error
		if c, err = r.start(job); err != nil {
			return Result{Tier: r.tier}, err
		}
	}
	// The replacement starts once this run is over: started beside it, it
	// would take a CPU from the run it is meant to make faster. A run that
	// comes while it starts waits for it (take) rather than start another.
	defer r.refill(key, job)
	return r.execute(ctx, c, job)
}

// refill gets the next run of key ready in the background: its zygote, or
// the pool's next waiting sandbox.
func (r *Runner) refill(key string, job Job) {
	if !r.prewarmZygote(job, key) {
		r.pool.refill(key, job)
	}
}

// child is a started interpreter (in its sandbox) that waits for its
// program on fd 3.
type child struct {
	l   *launch // nil for a run forked by a zygote
	pid int     // the process whose group is the run: the init, or a zygote's run
	// end reports how a zygote's run ended (zygote_linux.go); nil for
	// the init's children, whose launch knows.
	end func() (childStatus, error)
	// kill9 kills a zygote's run through a pidfd: its PID 1 is not this
	// process's child, so its pid may be reused once it is gone. nil for
	// the init's children, whose process group is killed.
	kill9    func()
	codeW    *os.File
	outR     *os.File
	errR     *os.File
	waitDone chan struct{} // closed once the process has been waited for
	warm     bool          // taken from the pool
	mem      *memGuard     // bounds the memory of the run as a whole
}

// dead reports whether the child exited before it was given code.
func (c *child) dead() bool {
	select {
	case <-c.waitDone:
		return true
	default:
		return false
	}
}

// kill ends a child that will never run code and releases what it holds.
func (c *child) kill() {
	c.stop()
	<-c.waitDone
	c.mem.remove()
	c.codeW.Close()
	c.outR.Close()
	c.errR.Close()
	c.finish()
}

// stop kills the run and everything in it.
func (c *child) stop() {
	if c.kill9 != nil {
		c.kill9()
		return
	}
	killTree(c.pid)
}

// finish reports how the program ended, once the child is gone.
func (c *child) finish() (childStatus, error) {
	if c.end != nil {
		return c.end()
	}
	return c.l.finish(c.l.cmd.ProcessState)
}

// start launches an interpreter for job that blocks until execute hands
// it the program.
func (r *Runner) start(job Job) (*child, error) {
	// The parent-death signal of the child follows the OS thread that
	// started it (ARCHITECTURE.md pitfall 9). A goroutine that unlocks before it
	// ends never takes its thread down, so locking around Start suffices.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	pipe := func() (*os.File, *os.File, error) {
		rd, wr, err := os.Pipe()
		if err == nil {
			files = append(files, rd, wr)
		}
		return rd, wr, err
	}
	codeR, codeW, err := job.ctl, (*os.File)(nil), error(nil)
	if codeR == nil {
		codeR, codeW, err = pipe()
	}
	if err != nil {
		return nil, fmt.Errorf("code pipe: %w", err)
	}
	outR, outW, err := pipe()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := pipe()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	mem := r.newMemGuard()
	p, err := r.prepare(job, codeR, outW, errW, mem)
	if err != nil {
		mem.remove()
		closeAll()
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	mem.attach(p.cmd)
	err = p.cmd.Start()
	// The child has its own copies now; closing ours makes EOF reach the
	// pumps when the last writer in the process tree is gone.
	codeR.Close()
	outW.Close()
	errW.Close()
	p.afterStart()
	if err != nil {
		p.abort()
		mem.remove()
		codeW.Close()
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("%w %s: %w", ErrStart, filepath.Base(job.Python), err)
	}
	// The program is inside the run's cgroup from its first instruction:
	// a cgroup v2 child is born in it, and the init joins a cgroup v1
	// before it starts the program (joinCgroup).
	if err := mem.place(p.cmd.Process.Pid); err != nil {
		r.log.Warn("could not place the run in its memory cgroup; counting its processes instead", "err", err)
		mem.remove()
		mem.mode = MemoryAccounting
	}
	p.sendConfig()
	c := &child{l: p, pid: p.cmd.Process.Pid, codeW: codeW, outR: outR, errR: errR, waitDone: make(chan struct{}), mem: mem}
	go func() {
		_ = p.cmd.Wait()
		close(c.waitDone)
	}()
	return c, nil
}

// execute hands a started child its program, streams its output, and waits
// for it and everything it started to end.
func (r *Runner) execute(ctx context.Context, c *child, job Job) (Result, error) {
	timeout := job.Timeout
	if timeout <= 0 {
		timeout = r.cfg.DefaultTimeout
	}
	res := Result{Tier: r.tier, Warm: c.warm, Memory: c.mem.mode}
	defer c.mem.remove()
	runCtx, cancel := context.WithTimeoutCause(ctx, timeout, errTimeout)
	defer cancel()
	pid := c.pid
	start := time.Now()

	tail := &tailBuffer{}
	var g errgroup.Group
	g.Go(func() error {
		// A program that exits before reading its code closes the pipe;
		// that is the program's business, not an error of ours.
		_, _ = io.Copy(c.codeW, strings.NewReader(codeHeader(job)+"\n"+job.Code))
		c.codeW.Close()
		return nil
	})
	g.Go(func() error { return pump(c.outR, job.Stdout) })
	g.Go(func() error { return pump(c.errR, io.MultiWriter(tail, orDiscard(job.Stderr))) })

	quotaHit := make(chan struct{})
	stopQuota := func() {}
	if job.cmd == nil { // a command (an install) is bounded by its timeout, not the workspace's quota
		stopQuota = watchQuota(job, pid, r.limits.WorkspaceQuota, quotaHit)
	}
	memHit := make(chan struct{})
	c.mem.arm()
	stopMem := c.mem.watch(memHit)
	select {
	case <-c.waitDone:
	case <-quotaHit:
		c.stop()
		<-c.waitDone
		res.Limit = LimitWorkspaceQuota
	case <-memHit:
		c.stop()
		c.mem.killAll()
		<-c.waitDone
		res.Limit = LimitMemory
	case <-runCtx.Done():
		c.stop()
		<-c.waitDone
		if errors.Is(context.Cause(runCtx), errTimeout) {
			res.TimedOut = true
			res.Limit = LimitWallTime
		} else {
			res.Cancelled = true
		}
	}
	stopQuota()
	stopMem()
	res.Duration = time.Since(start)
	// Whatever the program left running in its group, or its cgroup,
	// dies with it.
	c.stop()
	c.mem.killAll()

	// Descendants that escaped the group may still hold the pipes; give
	// the pumps a moment to drain, then cut them off.
	pumpsDone := make(chan struct{})
	go func() { _ = g.Wait(); close(pumpsDone) }()
	select {
	case <-pumpsDone:
	case <-time.After(2 * time.Second):
		r.log.Warn("output pipes still open after the run ended; closing them", "pid", pid)
		c.outR.SetReadDeadline(time.Now())
		c.errR.SetReadDeadline(time.Now())
		c.codeW.Close()
		<-pumpsDone
	}
	c.outR.Close()
	c.errR.Close()

	st, err := c.finish()
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrStart, err)
	}
	res.ExitCode, res.Signal = exitStatus(st.ws)
	if res.Limit == "" && res.ExitCode != 0 && !res.Cancelled && c.mem.exceeded() {
		// The OOM killer ended the run between two polls.
		res.Limit = LimitMemory
	}
	if res.Limit == "" {
		res.Limit = r.limitHit(res, st, tail.String())
	}
	return res, nil
}

// childStatus is how the program itself ended, as the init or Wait saw it.
type childStatus struct {
	ws  *syscall.WaitStatus // nil when it never ran or the status is unknown
	cpu time.Duration       // user + system CPU of the program and its children
}

// limitHit names the resource limit that most likely ended a run that the
// server did not stop itself (wall time, quota and memory are known
// already), from its status, its CPU time and the last lines of its stderr.
func (r *Runner) limitHit(res Result, st childStatus, stderrTail string) string {
	if res.ExitCode == 0 || res.Cancelled {
		return ""
	}
	// RLIMIT_CPU's soft limit ends the program with SIGXCPU, which
	// nothing else sends. One that caught or ignored it is killed at the
	// hard limit, a second later, with a SIGKILL that only its CPU time
	// can tell apart: the kernel checks its tick-sampled CPU time against
	// the limit, while the status reports the scheduler's exact time,
	// which is lower by the ticks charged while the vCPU was stolen (up
	// to 15% here under load), hence the margin.
	if r.tier != TierNone && (res.Signal == "CPU time limit exceeded" ||
		res.Signal == "killed" && st.cpu >= cpuLimit(r.limits)*3/4) {
		return LimitCPUTime
	}
	switch {
	case strings.Contains(stderrTail, "MemoryError"), strings.Contains(stderrTail, "Cannot allocate memory"):
		return LimitMemory
	case strings.Contains(stderrTail, "[Errno 27] File too large"):
		return LimitMaxFileSize
	case strings.Contains(stderrTail, "[Errno 24] Too many open files"):
		return LimitMaxOpenFiles
	case strings.Contains(stderrTail, "[Errno 11] Resource temporarily unavailable"),
		strings.Contains(stderrTail, "can't start new thread"):
		return LimitMaxProcs
	}
	return ""
}

// cpuLimit is the CPU time RLIMIT_CPU enforces for l: whole seconds,
// rounded up, as rlimits sets it.
func cpuLimit(l Limits) time.Duration {
	return (l.CPUTime + time.Second - 1).Truncate(time.Second)
}

var errTimeout = errors.New("wall-clock timeout")

// pump copies a child's stream to w until EOF. Errors writing to w stop the
// copying but keep draining, so a slow or failed consumer never blocks the
// child on a full pipe.
func pump(r io.Reader, w io.Writer) error {
	if w == nil {
		w = io.Discard
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				w = io.Discard
			}
		}
		if err != nil {
			return nil
		}
	}
}

func exitStatus(ws *syscall.WaitStatus) (int, string) {
	switch {
	case ws == nil:
		return -1, ""
	case ws.Signaled():
		return -int(ws.Signal()), ws.Signal().String()
	}
	return ws.ExitStatus(), ""
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// tailBuffer keeps the last 4 KiB written to it, for limitHit.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4<<10 {
		t.b = append(t.b[:0], t.b[len(t.b)-4<<10:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }

// childEnv is the whole environment of the child: nothing of the server's
// own environment (where API keys live) leaks through.
func childEnv(job Job) []string {
	if job.cmd != nil {
		return job.cmd.Env
	}
	home, tmp := cmp.Or(job.Home, job.Dir), cmp.Or(job.Tmp, job.Dir)
	pathDirs := []string{filepath.Dir(job.Python), "/usr/local/bin", "/usr/bin", "/bin"}
	env := []string{
		"PATH=" + strings.Join(pathDirs, string(os.PathListSeparator)),
		"HOME=" + home,
		"TMPDIR=" + tmp,
		"LANG=C.UTF-8",
		"LC_ALL=C.UTF-8",
		"PYTHONUNBUFFERED=1",
		"PYTHONUTF8=1",
		"PYTHONDONTWRITEBYTECODE=1",
		"PYTHONNOUSERSITE=1",
		"MPLBACKEND=Agg",
		"MPLCONFIGDIR=" + filepath.Join(home, ".config", "matplotlib"),
		"XDG_CACHE_HOME=" + filepath.Join(home, ".cache"),
	}
	return append(env, job.Env...)
}
