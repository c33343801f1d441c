package sandbox

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/prims-mcp/prims/sandbox/egress"
)

// Command is a program other than a Python run that must still run
// confined: pip installing requirements, whose source builds run the
// packages' own code. It gets the run's tier, limits and read-only system,
// but its own argv and environment, and may write Dir and Writable only.
type Command struct {
	Args     []string // Args[0] is the executable, a host path
	Env      []string // the whole environment
	Dir      string   // working directory, writable
	Writable []string // other host paths it may write
	ReadOnly []string // host paths it may read besides the system's
	// Network lets it reach the host's network even when the runner's
	// code may not.
	Network bool
	// Egress, when it allows any host, is its way out instead: an HTTP
	// proxy of its own that lets through only those hosts (an install's
	// index).
	Egress  egress.Policy
	Output  io.Writer     // stdout and stderr, in order
	Timeout time.Duration // wall-clock limit; 0 means Config.DefaultTimeout

	gate *gate
}

// RunCommand runs c in a sandbox of its own (never a warm one) and waits for
// it and everything it started. Like Run, the error is non-nil only when it
// could not be started.
func (r *Runner) RunCommand(ctx context.Context, c Command) (Result, error) {
	if len(c.Args) == 0 {
		return Result{Tier: r.tier}, errors.New("run command: no program")
	}
	if err := r.shareWritable(c.Writable); err != nil {
		return Result{Tier: r.tier}, err
	}
	if len(c.Egress.Allow) > 0 && !c.Network && r.tier != TierNone {
		g, err := openGate(c.Egress, r.log)
		if err != nil {
			return Result{Tier: r.tier}, err
		}
		defer g.close()
		c.gate = g
	}
	// Two pumps, one writer: keep their writes apart.
	out := io.Discard
	if c.Output != nil {
		out = &lockedWriter{w: c.Output}
	}
	job := Job{
		Python:   c.Args[0],
		Dir:      c.Dir,
		ReadOnly: c.ReadOnly,
		Stdout:   out,
		Stderr:   out,
		Timeout:  c.Timeout,
		cmd:      &c,
	}
	ch, err := r.start(job)
	if err != nil {
		return Result{Tier: r.tier}, err
	}
	defer r.shared.Delete(c.Dir) // each command's directory is new
	return r.execute(ctx, ch, job)
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
