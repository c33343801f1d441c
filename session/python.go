package session

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/prims-mcp/prims/workspace/pythonenv"
)

// pythons finds the interpreters runs may use, lazily: the default one on
// the first run (one quick probe), the others only when a run asks for a
// version, so that the server answers initialize without waiting for
// discovery.
type pythons struct {
	def  string
	opts pythonenv.DiscoverOptions

	defOnce sync.Once
	defInfo pythonenv.Interpreter
	defErr  error

	allOnce sync.Once
	all     []pythonenv.Interpreter
	ready   chan struct{}
}

func newPythons(def string, opts pythonenv.DiscoverOptions) *pythons {
	return &pythons{def: def, opts: opts, ready: make(chan struct{})}
}

// get returns the interpreter for a run's "python" argument: "" is the
// server's default, "3.12" or "3.12.1" a version among those found.
func (p *pythons) get(ctx context.Context, version string) (pythonenv.Interpreter, error) {
	if version == "" {
		p.defOnce.Do(func() {
			// The answer is kept for the server's life: a cancelled first
			// call must not make the default interpreter look broken.
			p.defInfo, p.defErr = pythonenv.InspectWith(context.WithoutCancel(ctx), p.def, p.opts)
			if p.defErr != nil {
				p.defErr = fmt.Errorf("the server's %w", p.defErr)
			}
		})
		return p.defInfo, p.defErr
	}
	p.allOnce.Do(func() {
		go func() {
			defer close(p.ready)
			// Discovery belongs to the server, not to the first caller:
			// a cancelled call must not leave the list empty for the rest.
			p.all, _ = pythonenv.Discover(context.WithoutCancel(ctx), p.opts)
		}()
	})
	select {
	case <-p.ready:
	case <-ctx.Done():
		return pythonenv.Interpreter{}, ctx.Err()
	}
	return pythonenv.Select(p.all, version)
}

// environment is what a run needs to start: an interpreter, and an
// environment of packages when the run asked for any.
type environment struct {
	python   pythonenv.Interpreter
	env      *pythonenv.Env // nil without requirements
	reqs     []string       // the normalized set installed
	cacheHit bool
}

// executable is the interpreter to start.
func (e *environment) executable() string {
	if e.env != nil {
		return e.env.Python
	}
	return e.python.Path
}

// readOnly lists the trees a sandbox must expose for this interpreter.
func (e *environment) readOnly() []string {
	var paths []string
	if e.python.BasePrefix != "" {
		paths = append(paths, e.python.BasePrefix)
	}
	if e.env != nil {
		paths = append(paths, e.env.Dir)
	}
	return paths
}

func (e *environment) release() {
	if e.env != nil {
		e.env.Release()
	}
}

// prepareEnvironment resolves the interpreter and installs the session's
// requirements together with the call's, so packages installed by an
// earlier call stay importable without being listed again. The session
// remembers the combined set only once it installed.
func (sess *Session) prepareEnvironment(ctx context.Context, in Request, status func(string)) (*environment, error) {
	s := sess.rt
	py, err := s.pythons.get(ctx, strings.TrimSpace(in.Python))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotRun, err)
	}
	e := &environment{python: py}
	asked, err := expandRequirements(ctx, py.Path, in.Code, in.Requirements, sess.ws)
	if err != nil {
		return nil, fmt.Errorf("%w: inferring requirements from the imports failed: %w", ErrNotRun, err)
	}
	sess.mu.Lock()
	reqs := mergeRequirements(sess.reqs[py.Path], asked)
	sess.mu.Unlock()
	if len(reqs) == 0 {
		return e, nil
	}
	reqs, err = pythonenv.ValidateRequirements(reqs, s.cfg.AllowDirectRequirements)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotRun, err)
	}
	if s.cfg.Envs == nil {
		return nil, fmt.Errorf("%w: this server was started without an environment cache, so requirements cannot be installed", ErrNotRun)
	}
	status(fmt.Sprintf("preparing an environment for Python %s with %s", py.Version, strings.Join(reqs, ", ")))
	env, err := s.cfg.Envs.Acquire(ctx, py, reqs, status)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotRun, err)
	}
	e.env, e.reqs, e.cacheHit = env, reqs, env.Hit
	s.cfg.Observer.EnvCache(env.Hit)
	sess.mu.Lock()
	if sess.reqs == nil {
		sess.reqs = map[string][]string{}
	}
	sess.reqs[py.Path] = reqs
	sess.mu.Unlock()
	return e, nil
}

// mergeRequirements adds a call's requirements to the session's: a name
// the call names again replaces the earlier requirement for it, so asking
// for "pkg==2" after "pkg==1" upgrades instead of conflicting.
func mergeRequirements(earlier, call []string) []string {
	out := slices.Clone(earlier)
	for _, r := range call {
		name := requirementName(r)
		out = slices.DeleteFunc(out, func(o string) bool { return requirementName(o) == name })
		out = append(out, r)
	}
	return out
}
