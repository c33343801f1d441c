// Package session is the one home of a PRIMS run, beneath the protocol: a
// Session owns a workspace and everything a run in it needs (the choice of
// interpreter, the memory of installed requirements, logs and output
// capture, run slots, artifacts, and the hint built from the limit that
// fired). The MCP server (package mcp) and the CLI (prims run, prims doctor)
// both run code through it, so neither builds a sandbox.Job itself.
//
//	runner, _ := sandbox.New(sandbox.Config{})
//	rt := session.New(session.Config{Python: "/usr/bin/python3"}, runner)
//	sess, err := rt.Open("", nil) // a temporary workspace
//	if err != nil { ... }
//	defer sess.Close()
//	res, err := sess.Run(ctx, session.Request{Code: "print(6 * 7)"})
//	fmt.Print(res.Stdout.Text) // 42
//
// A Runtime is what all sessions of one process share: the sandbox runner,
// the interpreters found, the environment cache and the run slots.
package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/workspace"
	"github.com/prims-mcp/prims/workspace/pythonenv"
)

// Config configures a Runtime. Zero fields take the defaults shown.
type Config struct {
	Python string // default interpreter for runs (required)
	// Discover says where to look for the other interpreters a run may ask
	// for by version (Request.Python).
	Discover pythonenv.DiscoverOptions
	// Envs builds and caches the environments that requirements need; nil
	// refuses requirements.
	Envs *pythonenv.Cache
	// AllowDirectRequirements lets requirements be local paths or URLs.
	AllowDirectRequirements bool
	DefaultTimeout          time.Duration // per run when the request sets none (60s)
	MaxTimeout              time.Duration // largest timeout a request may ask for (600s)
	OutputBudget            int           // bytes of each stream kept in the Result, head and tail (32 KiB)
	LogLimit                int64         // bytes of each stream kept in logs/ (64 MiB)
	LogBudget               int64         // bytes logs/ may hold in all, oldest runs pruned first (8 × LogLimit)
	MaxCodeBytes            int           // largest program accepted (1 MiB)
	Transfer                workspace.Limits
	MaxStates               int           // states (Request.State) one session may keep (8)
	StateIdle               time.Duration // a state unused this long ends (30m)
	Observer                Observer      // hears about runs, for metrics; nil = nobody
	Logger                  *slog.Logger
}

func (c *Config) setDefaults() {
	if c.DefaultTimeout <= 0 {
		c.DefaultTimeout = 60 * time.Second
	}
	if c.MaxTimeout <= 0 {
		c.MaxTimeout = 600 * time.Second
	}
	if c.DefaultTimeout > c.MaxTimeout {
		c.DefaultTimeout = c.MaxTimeout
	}
	if c.OutputBudget <= 0 {
		c.OutputBudget = 32 << 10
	}
	if c.LogLimit <= 0 {
		c.LogLimit = 64 << 20
	}
	if c.LogBudget <= 0 {
		c.LogBudget = 8 * c.LogLimit
	}
	if c.MaxCodeBytes <= 0 {
		c.MaxCodeBytes = 1 << 20
	}
	if c.MaxStates <= 0 {
		c.MaxStates = 8
	}
	if c.StateIdle <= 0 {
		c.StateIdle = 30 * time.Minute
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Observer hears what happens to runs, for metrics. Its methods are called
// from many goroutines and must return quickly.
type Observer interface {
	Refused()                                                  // a run never started: no slot (shutdown, or cancelled while queued)
	Queued(delta int)                                          // runs waiting for a slot went up or down by delta
	Waited(d time.Duration)                                    // a run got its slot after d (0 when it did not wait)
	Started()                                                  // a program is starting
	Ended(res sandbox.Result, err error, stdout, stderr int64) // it ended (err: it could not start); bytes of each stream
	EnvCache(hit bool)                                         // a run needed an environment: from the cache, or built
}

type nopObserver struct{}

func (nopObserver) Refused()                                  {}
func (nopObserver) Queued(int)                                {}
func (nopObserver) Waited(time.Duration)                      {}
func (nopObserver) Started()                                  {}
func (nopObserver) Ended(sandbox.Result, error, int64, int64) {}
func (nopObserver) EnvCache(bool)                             {}

// Runtime is what the sessions of one process share.
type Runtime struct {
	cfg     Config
	runner  *sandbox.Runner
	pythons *pythons

	mu    sync.Mutex
	slots *runSlots // nil = unlimited

	drainOnce sync.Once
	draining  chan struct{} // closed when no new run may start
}

// New returns a Runtime whose runs are started by runner.
func New(cfg Config, runner *sandbox.Runner) *Runtime {
	cfg.setDefaults()
	if cfg.Transfer.Quota == 0 && runner != nil {
		// Mounted files count against the workspace quota too.
		cfg.Transfer.Quota = runner.Limits().WorkspaceQuota
	}
	return &Runtime{
		cfg:      cfg,
		runner:   runner,
		pythons:  newPythons(cfg.Python, cfg.Discover),
		draining: make(chan struct{}),
	}
}

// Config returns the runtime's configuration, defaults filled in.
func (rt *Runtime) Config() Config { return rt.cfg }

// LimitRuns shares n run slots between the sessions (see runSlots); 0 or
// less leaves runs unlimited. Call it before the first run.
func (rt *Runtime) LimitRuns(n int) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.slots = nil
	if n > 0 {
		rt.slots = newRunSlots(n)
	}
}

// Drain stops new runs from starting: runs waiting for a slot give up with
// ErrShuttingDown; runs already started go on.
func (rt *Runtime) Drain() { rt.drainOnce.Do(func() { close(rt.draining) }) }

// Draining is closed once Drain was called.
func (rt *Runtime) Draining() <-chan struct{} { return rt.draining }

// ErrShuttingDown is returned for a run refused because the process is
// shutting down.
var ErrShuttingDown = errors.New("the server is shutting down")

// Session is one client's workspace and what PRIMS remembers for it.
type Session struct {
	rt   *Runtime
	ws   *workspace.Workspace
	runs atomic.Int64
	gone context.Context // ends with the client's session, killing its runs; nil: never

	mu   sync.Mutex
	reqs map[string][]string // interpreter path -> requirements installed so far

	states stateTable // named live interpreters (Request.State)
	bg     bgRuns     // runs started with Start
}

// Open creates a session in the workspace at dir ("" for a temporary one,
// deleted by Close). Runs are killed when gone ends, if it is not nil.
func (rt *Runtime) Open(dir string, gone context.Context) (*Session, error) {
	ws, err := workspace.New(dir)
	if err != nil {
		return nil, fmt.Errorf("create workspace: %w", err)
	}
	return &Session{rt: rt, ws: ws, gone: gone}, nil
}

// Workspace returns the session's workspace.
func (s *Session) Workspace() *workspace.Workspace { return s.ws }

// Runs reports how many runs the session has started.
func (s *Session) Runs() int64 { return s.runs.Load() }

// Close stops the warm sandboxes started for the session's workspace, then
// deletes it (unless it was named in Open).
func (s *Session) Close() error {
	s.bg.close()
	s.states.close()
	if s.rt.runner != nil {
		s.rt.runner.ForgetDir(s.ws.Dir())
	}
	return s.ws.Close()
}

// Prewarm starts, in the background, a sandbox for the session's next run
// with the default interpreter and no requirements, so that run is handed
// to a waiting interpreter. Without a warm pool it does nothing.
func (s *Session) Prewarm(ctx context.Context) {
	if s.rt.runner == nil {
		return
	}
	py, err := s.rt.pythons.get(ctx, "")
	if err != nil {
		return // the first run reports it
	}
	s.rt.runner.Prewarm(s.job(&environment{python: py}))
}

// job is what a run in s with env starts: everything that decides which
// waiting sandbox can take it (see Prewarm), without the program.
func (s *Session) job(env *environment) sandbox.Job {
	return sandbox.Job{
		Python:   env.executable(),
		Dir:      s.ws.Dir(),
		Home:     filepath.Join(s.ws.Dir(), workspace.HomeDir),
		Tmp:      filepath.Join(s.ws.Dir(), workspace.TmpDir),
		ReadOnly: append(env.readOnly(), s.ws.ReadOnly()...),
	}
}
