// Package mcp is PRIMS' Model Context Protocol server: the tools that let a
// model run Python in a throw-away workspace (run_code, mount_file, list_dir,
// preview_file, persist_artifact) and the python_programmer prompt, served
// over stdio or streamable HTTP with the official Go SDK. It keeps the
// protocol (schemas, rendering results for the model, sessions of the
// transport); the runs themselves go through package session.
//
//	runner, _ := sandbox.New(sandbox.Config{})
//	srv, err := mcp.New(mcp.Config{Python: "/usr/bin/python3"}, runner)
//	if err != nil { ... }
//	defer srv.Close()
//	err = srv.Serve(ctx, mcp.NewStdioTransport(os.Stdin, os.Stdout))
//
// For HTTP, serve srv.Handler(mcp.HTTPConfig{...}) with net/http.
package mcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/session"
	"github.com/prims-mcp/prims/workspace"
	"github.com/prims-mcp/prims/workspace/artifactstore"
	"github.com/prims-mcp/prims/workspace/pythonenv"
)

// Config configures a Server. Zero fields take the defaults shown.
type Config struct {
	Python string // default interpreter for runs (required)
	// Discover says where to look for the other interpreters a run may ask
	// for by version (run_code's "python").
	Discover pythonenv.DiscoverOptions
	// Envs builds and caches the environments that requirements need; nil
	// refuses requirements.
	Envs *pythonenv.Cache
	// AllowDirectRequirements lets requirements be local paths or URLs.
	AllowDirectRequirements bool
	Workspace               string        // keep the workspace in this directory; "" = temporary, deleted on Close
	DefaultTimeout          time.Duration // per run when the call sets none (60s)
	MaxTimeout              time.Duration // largest timeout_s a call may ask for (600s)
	OutputBudget            int           // bytes of each stream returned inline, head and tail (32 KiB)
	LogLimit                int64         // bytes of each stream kept in logs/ (64 MiB)
	LogBudget               int64         // bytes logs/ may hold in all, oldest runs pruned first (8 × LogLimit)
	MaxCodeBytes            int           // largest program accepted (1 MiB)
	Heartbeat               time.Duration // progress sent at least this often during a silent run (15s)
	Transfer                workspace.Limits
	ImageBudget             int64 // bytes of images returned inline per run result (1 MiB); larger ones become resource links
	SampleFixes             bool  // ask the client's model (sampling) for a fix suggestion when a run fails
	// Artifacts keeps what persist_artifact stores without a presigned
	// URL (--artifact-store); nil: a presigned URL is required. The caller
	// opens and closes it.
	Artifacts *artifactstore.Store
	// PersistOutputs stores each run's new output/ files in Artifacts when
	// the run ends (--persist-outputs).
	PersistOutputs bool
	Version        string
	Logger         *slog.Logger
	// MaxStates and StateIdle bound run_code's states: how many one
	// session may keep (8), and how long one may stay unused (30m).
	MaxStates int
	StateIdle time.Duration
}

// setDefaults fills in the fields the server itself uses; the run's own
// (timeouts, budgets, limits) are filled in by session.New.
func (c *Config) setDefaults() {
	if c.Heartbeat <= 0 {
		c.Heartbeat = 15 * time.Second
	}
	if c.ImageBudget <= 0 {
		c.ImageBudget = 1 << 20
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Server is a PRIMS MCP server.
type Server struct {
	cfg    Config
	rt     *session.Runtime // runs code: the sessions' shared machinery
	runner *sandbox.Runner  // rt's, for what /healthz and /metrics report
	sdk    *sdk.Server
	log    *slog.Logger

	// base is cancelled by Close: every run in flight is killed.
	base     context.Context
	shutdown context.CancelFunc
	runs     sync.WaitGroup

	initialized     chan struct{} // closed by the client's notifications/initialized
	initializedOnce sync.Once

	mu   sync.Mutex
	sess *client // the one session of a stdio server

	fixes fixStore // run results waiting for the client's sampling answer

	table   sessionTable // per-MCP-session workspaces of an HTTP server (sessions.go)
	metrics metrics      // what /metrics reports (metrics.go)
}

// client is one MCP client's session: the workspace and runs
// (session.Session), and the resources it subscribed to.
type client struct {
	*session.Session
	subs subscriptions

	prefixOnce sync.Once
	prefix     string // the client's keys in the artifact store (artifactPrefix)
}

// New returns a Server whose runs are started by runner.
func New(cfg Config, runner *sandbox.Runner) (*Server, error) {
	cfg.setDefaults()
	if cfg.Python == "" {
		return nil, errors.New("mcp: no Python interpreter configured")
	}
	base, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, runner: runner, log: cfg.Logger, base: base, shutdown: cancel, initialized: make(chan struct{})}
	s.rt = session.New(session.Config{
		Python:                  cfg.Python,
		Discover:                cfg.Discover,
		Envs:                    cfg.Envs,
		AllowDirectRequirements: cfg.AllowDirectRequirements,
		DefaultTimeout:          cfg.DefaultTimeout,
		MaxTimeout:              cfg.MaxTimeout,
		OutputBudget:            cfg.OutputBudget,
		LogLimit:                cfg.LogLimit,
		LogBudget:               cfg.LogBudget,
		MaxCodeBytes:            cfg.MaxCodeBytes,
		Transfer:                cfg.Transfer,
		MaxStates:               cfg.MaxStates,
		StateIdle:               cfg.StateIdle,
		Observer:                observer{&s.metrics},
		Logger:                  cfg.Logger,
	}, runner)
	// Mounts count against the workspace quota: the runtime filled it in.
	s.cfg.Transfer = s.rt.Config().Transfer
	s.table.draining = s.rt.Draining()
	s.initMetrics()
	s.sdk = sdk.NewServer(&sdk.Implementation{
		Name:    "prims",
		Title:   "PRIMS: Python sandbox",
		Version: cfg.Version,
	}, &sdk.ServerOptions{
		Instructions:       instructions,
		Logger:             cfg.Logger,
		SubscribeHandler:   s.subscribe,
		UnsubscribeHandler: s.unsubscribe,
		InitializedHandler: func(context.Context, *sdk.InitializedRequest) {
			s.initializedOnce.Do(func() { close(s.initialized) })
		},
	})
	s.addTools()
	s.addPrompts()
	s.addResources()
	s.addStates()
	s.addBackground()
	// Whatever a tool returns, a client gets only the content types its
	// protocol version has (content.go).
	s.sdk.AddReceivingMiddleware(func(next sdk.MethodHandler) sdk.MethodHandler {
		return func(ctx context.Context, method string, req sdk.Request) (sdk.Result, error) {
			res, err := next(ctx, method, req)
			if r, ok := res.(*sdk.CallToolResult); ok && r != nil {
				if cr, ok := req.(*sdk.CallToolRequest); ok {
					r.Content = contentFor(cr.ProtocolVersion(), r.Content)
				}
			}
			return res, err
		}
	})
	return s, nil
}

// SDK returns the underlying go-sdk server, for transports such as the
// streamable HTTP handler.
func (s *Server) SDK() *sdk.Server { return s.sdk }

// Serve runs the server on one transport (stdio, or a pipe in tests) until
// the client disconnects or ctx ends. All calls share one workspace.
func (s *Server) Serve(ctx context.Context, t sdk.Transport) error {
	// The SDK waits for in-flight calls before it returns, so the runs must
	// die first when the server is told to stop.
	stop := context.AfterFunc(ctx, s.shutdown)
	defer stop()
	return s.sdk.Run(ctx, t)
}

// Close kills any run still in flight, waits for it to end, and deletes the
// workspace unless it was named in Config.Workspace.
func (s *Server) Close() error {
	s.shutdown()
	s.runs.Wait()
	herr := s.closeSessions()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess == nil {
		return herr
	}
	err := s.sess.Close()
	s.sess = nil
	return errors.Join(herr, err)
}

// session returns the workspace of the calling client, creating it on first
// use so that a server that is never called costs no directory. Over HTTP
// each MCP session has its own; on stdio there is one.
func (s *Server) session(ss *sdk.ServerSession) (*client, error) {
	if ss != nil && ss.ID() != "" {
		return s.sessionFor(ss)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.base.Err() != nil {
		return nil, errShuttingDown
	}
	if s.sess == nil {
		rs, err := s.rt.Open(s.cfg.Workspace, nil)
		if err != nil {
			s.log.Error("create workspace", "err", err)
			return nil, fmt.Errorf("the server could not create its workspace: %w", err)
		}
		ws := rs.Workspace()
		s.log.Info("workspace ready", "dir", ws.Dir(), "kept", ws.Kept())
		s.sess = &client{Session: rs}
	}
	return s.sess, nil
}

// Workspace returns the directory of the stdio session's workspace, or ""
// when it has not been created yet.
func (s *Server) Workspace() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess == nil {
		return ""
	}
	return s.sess.Workspace().Dir()
}

// track registers a run so Close can wait for it, and derives a context
// that Close cancels.
func (s *Server) track(ctx context.Context) (context.Context, func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.base.Err() != nil {
		return nil, nil, errShuttingDown
	}
	s.runs.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.base, cancel)
	return ctx, func() { stop(); cancel(); s.runs.Done() }, nil
}

const instructions = `PRIMS runs Python 3 code in a sandboxed, throw-away workspace on the user's machine. Use it whenever a task needs computation, data analysis, file conversion or a chart: run the code instead of guessing the result.

- run_code runs one complete program in a fresh process. Workspace files persist between calls; variables, imports and functions do not, so each program imports and defines what it uses.
- When several calls work on the same data that is slow to load (a large CSV, a model), pass state: "NAME": the calls with that name share one live interpreter, so load once and ask many questions. A call that fails leaves the state exactly as it was (state_rolled_back), so a half-done cell never corrupts it; fork_from: "OTHER" starts a new state as a cheap copy to try something risky. A state keeps the requirements it was created with. drop_state frees one you are done with; idle states expire. For a quick one-off computation, leave state out.
- A job longer than about a minute (the client may give up on a request before it ends): run it with background: true, then call get_run with the run_id and wait_s (up to 50) until its status is done; cancel_run stops it. Every limit of a run still applies.
- Declare third-party packages in run_code's requirements with their pip names (["pandas", "matplotlib"]); only the standard library is there otherwise. If a run fails with ModuleNotFoundError, the hint names the package to add.
- print() the results you need to read, briefly. Write files for the user under output/: images there (PNG, JPEG, GIF, WebP) come back to you as images, other files as resource links (prims://workspace/<path>). matplotlib's plt.show() saves the figure to output/.
- Inputs: pass URLs in run_code's files, or call mount_file; they appear read-only under mounts/. Open them with relative paths such as mounts/data.csv.
- When a run fails, read the traceback and the hint, fix the code and run again.
- list_dir and preview_file inspect the workspace; logs/ holds the complete output of every run; persist_artifact keeps a file from output/ beyond the session: uploaded to a presigned URL, or without one in the server's artifact store when it has one.`
