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
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

//go:embed bootstrap.py
var bootstrap string

// Tier names how a run was isolated.
type Tier string

const (
	// TierNone runs the child as a plain process in its own process group,
	// with a scrubbed environment. It does not stop the code from reading
	// or writing the user's files.
	TierNone Tier = "none"
)

// Config configures a Runner.
type Config struct {
	// DefaultTimeout applies to jobs that set none.
	DefaultTimeout time.Duration
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

// Runner starts jobs. It is safe for concurrent use.
type Runner struct {
	cfg  Config
	tier Tier
	log  *slog.Logger
}

// New returns a Runner for this host.
func New(cfg Config) (*Runner, error) {
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = 60 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{cfg: cfg, tier: TierNone, log: log}, nil
}

// Tier reports the isolation tier the runner uses.
func (r *Runner) Tier() Tier { return r.tier }

// Job is one program to run.
type Job struct {
	Python string // interpreter to execute (host path)
	Code   string // the program's source
	// Filename names the program in tracebacks, relative to Dir. When a
	// file of that name holds the source, tracebacks show its lines.
	Filename string
	Dir      string // working directory (the workspace), read-write for the code
	// ReadOnly lists host paths the code needs to read, such as the
	// interpreter's prefix, an environment, and mounted inputs.
	ReadOnly []string
	Env      []string // extra KEY=VALUE pairs on top of the minimal environment
	// Stdout and Stderr receive the streams as they are written. They are
	// called from one goroutine each and should not block for long.
	Stdout, Stderr io.Writer
	Timeout        time.Duration // wall-clock limit; 0 means Config.DefaultTimeout
}

// Result describes how a job ended.
type Result struct {
	ExitCode  int           // the process's exit status; -N when killed by signal N
	Signal    string        // the signal that ended it, if any ("killed")
	TimedOut  bool          // the wall-clock limit ended it
	Cancelled bool          // the caller's context ended it
	Duration  time.Duration // from start to exit
	Tier      Tier
}

// ErrStart is wrapped by Run's error when the interpreter could not be started.
var ErrStart = errors.New("cannot start python")

// Run executes job and waits for it and everything it started to end. The
// error is non-nil only when the job could not be started; a program that
// fails, times out or is cancelled is reported in the Result.
func (r *Runner) Run(ctx context.Context, job Job) (Result, error) {
	timeout := job.Timeout
	if timeout <= 0 {
		timeout = r.cfg.DefaultTimeout
	}
	res := Result{Tier: r.tier}
	runCtx, cancel := context.WithTimeoutCause(ctx, timeout, errTimeout)
	defer cancel()

	codeR, codeW, err := os.Pipe()
	if err != nil {
		return res, fmt.Errorf("code pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		codeR.Close()
		codeW.Close()
		return res, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		codeR.Close()
		codeW.Close()
		outR.Close()
		outW.Close()
		return res, fmt.Errorf("stderr pipe: %w", err)
	}

	cmd := exec.Command(job.Python, "-s", "-c", bootstrap)
	cmd.Dir = job.Dir
	cmd.Env = childEnv(job)
	cmd.Stdin = nil // /dev/null
	cmd.Stdout = outW
	cmd.Stderr = errW
	cmd.ExtraFiles = []*os.File{codeR} // fd 3
	setProcessGroup(cmd)

	start := time.Now()
	err = cmd.Start()
	// The child has its own copies now; closing ours makes EOF reach the
	// pumps when the last writer in the process tree is gone.
	codeR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		codeW.Close()
		outR.Close()
		errR.Close()
		return res, fmt.Errorf("%w %s: %w", ErrStart, filepath.Base(job.Python), err)
	}
	pid := cmd.Process.Pid

	var g errgroup.Group
	g.Go(func() error {
		// A program that exits before reading its code closes the pipe;
		// that is the program's business, not an error of ours.
		_, _ = io.Copy(codeW, strings.NewReader(strings.ReplaceAll(job.Filename, "\n", " ")+"\n"+job.Code))
		codeW.Close()
		return nil
	})
	g.Go(func() error { return pump(outR, job.Stdout) })
	g.Go(func() error { return pump(errR, job.Stderr) })

	waitDone := make(chan error, 1)
	go func() { waitDone <- cmd.Wait() }()
	select {
	case <-waitDone:
	case <-runCtx.Done():
		killTree(pid)
		<-waitDone
		if errors.Is(context.Cause(runCtx), errTimeout) {
			res.TimedOut = true
		} else {
			res.Cancelled = true
		}
	}
	res.Duration = time.Since(start)
	// Whatever the program left running in its group dies with it.
	killTree(pid)

	// Descendants that escaped the group may still hold the pipes; give
	// the pumps a moment to drain, then cut them off.
	pumpsDone := make(chan struct{})
	go func() { _ = g.Wait(); close(pumpsDone) }()
	select {
	case <-pumpsDone:
	case <-time.After(2 * time.Second):
		r.log.Warn("output pipes still open after the run ended; closing them", "pid", pid)
		outR.SetReadDeadline(time.Now())
		errR.SetReadDeadline(time.Now())
		codeW.Close()
		<-pumpsDone
	}
	outR.Close()
	errR.Close()

	res.ExitCode, res.Signal = exitStatus(cmd.ProcessState)
	return res, nil
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

func exitStatus(ps *os.ProcessState) (int, string) {
	if ps == nil {
		return -1, ""
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -int(ws.Signal()), ws.Signal().String()
	}
	return ps.ExitCode(), ""
}

// childEnv is the whole environment of the child: nothing of the server's
// own environment (where API keys live) leaks through.
func childEnv(job Job) []string {
	home := filepath.Join(job.Dir, ".home")
	pathDirs := []string{filepath.Dir(job.Python), "/usr/local/bin", "/usr/bin", "/bin"}
	env := []string{
		"PATH=" + strings.Join(pathDirs, string(os.PathListSeparator)),
		"HOME=" + home,
		"TMPDIR=" + filepath.Join(job.Dir, ".tmp"),
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
