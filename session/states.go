package session

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prims-mcp/prims/sandbox"
)

// StateInfo describes one live state of a session.
type StateInfo struct {
	Name         string
	Age, Idle    time.Duration // since it was made; since its last call ended (0 while one runs)
	Memory       int64         // bytes its interpreter holds (PSS: pages shared with copies count once)
	Python       string        // version
	Requirements []string      // fixed when it was created
	ForkedFrom   string
}

// StateOutcome is what became of the state a run named.
type StateOutcome struct {
	Name string
	// Committed: the program ended well and the state holds its changes;
	// otherwise the state is exactly as it was before the run.
	Committed bool
	// Warnings say what a fork of the state cannot carry: threads left
	// running, open files and sockets.
	Warnings []string
	States   []StateInfo // the session's states after the run
}

// stateTable holds a session's states: named interpreters in state hosts
// (one sandbox per environment, shared by the states of that environment,
// since fork_from can only copy within one sandbox).
type stateTable struct {
	mu     sync.Mutex
	hosts  map[string]*stateHost
	states map[string]*liveState
	closed bool
	stop   chan struct{} // ends the expiry janitor
}

type stateHost struct {
	h     *sandbox.StateHost
	env   *environment // released when the host closes
	users int          // states living in it
}

type liveState struct {
	name     string
	key      string // its host
	from     string
	created  time.Time
	lastUsed time.Time
	busy     int // calls running on it: never expired meanwhile
}

// stateRef is one call's hold on a state.
type stateRef struct {
	name string
	host *sandbox.StateHost
	env  *environment
	t    *stateTable
}

// done marks the call over: the state's idle time starts again.
func (r *stateRef) done() {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	if st := r.t.states[r.name]; st != nil {
		st.busy--
		st.lastUsed = time.Now()
	}
}

var stateNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$`)

func checkStateName(field, name string) error {
	if !stateNameRE.MatchString(name) {
		return stateErrorf("%s %q is not a valid state name: use up to 64 letters, digits, '_', '-' or '.'", field, name)
	}
	return nil
}

// openState finds or makes the state a run_code call names, checking that
// the call asks for nothing the state cannot give: a state keeps the
// interpreter and requirements it was created with.
func (sess *Session) openState(ctx context.Context, in Request, status func(string)) (*stateRef, error) {
	s := sess.rt
	if err := checkStateName("state", in.State); err != nil {
		return nil, err
	}
	if in.ForkFrom != "" {
		if err := checkStateName("fork_from", in.ForkFrom); err != nil {
			return nil, err
		}
	}
	if s.runner == nil {
		return nil, stateErrorf("this server has no sandbox runner, so it cannot keep states")
	}
	t := &sess.states
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, ErrShuttingDown
	}
	if st := t.states[in.State]; st != nil {
		if in.ForkFrom != "" {
			t.mu.Unlock()
			return nil, stateErrorf("state %q exists already; fork_from only starts a new state: pick a new name, or drop_state %q first", in.State, in.State)
		}
		sh := t.hosts[st.key]
		t.mu.Unlock()
		if err := sameEnvironment(in, sh.env, in.State); err != nil {
			return nil, err
		}
		return t.use(in.State, sh)
	}
	if s.cfg.MaxStates > 0 && len(t.states) >= s.cfg.MaxStates {
		names := t.namesLocked()
		t.mu.Unlock()
		return nil, stateErrorf("this session keeps %d states (%s), as many as it may (--max-states): drop_state one you no longer need, or reuse one", len(names), strings.Join(names, ", "))
	}
	if in.ForkFrom != "" {
		src := t.states[in.ForkFrom]
		if src == nil {
			names := t.namesLocked()
			t.mu.Unlock()
			return nil, stateErrorf("fork_from names state %q, which does not exist (states: %s)", in.ForkFrom, orNone(names))
		}
		sh := t.hosts[src.key]
		t.mu.Unlock()
		if err := sameEnvironment(in, sh.env, in.ForkFrom); err != nil {
			return nil, err
		}
		if err := sh.h.New(ctx, in.State, in.ForkFrom); err != nil {
			return nil, stateError(in.ForkFrom, err)
		}
		if err := t.add(in.State, in.ForkFrom, src.key, sh); err != nil {
			return nil, err
		}
		return t.use(in.State, sh)
	}
	t.mu.Unlock()

	env, err := sess.prepareEnvironment(ctx, in, status)
	if err != nil {
		return nil, err
	}
	job := sess.job(env)
	key := job.Python + "\x00" + strings.Join(job.ReadOnly, "\x00")
	t.mu.Lock()
	sh := t.hosts[key]
	t.mu.Unlock()
	if sh == nil {
		status("starting the state's sandbox")
		h, err := s.runner.OpenStates(job)
		if err != nil {
			env.release()
			if errors.Is(err, sandbox.ErrStatesUnsupported) {
				return nil, stateErrorf("%v: run without state", err)
			}
			return nil, fmt.Errorf("the state could not be started: %w", err)
		}
		sh = &stateHost{h: h, env: env}
		t.mu.Lock()
		if other := t.hosts[key]; other != nil || t.closed {
			// Another call opened one meanwhile (or the session ended).
			t.mu.Unlock()
			h.Close()
			env.release()
			if other == nil {
				return nil, ErrShuttingDown
			}
			sh = other
		} else {
			if t.hosts == nil {
				t.hosts = map[string]*stateHost{}
			}
			t.hosts[key] = sh
			t.mu.Unlock()
		}
	} else {
		env.release() // the host holds its own lease on it
	}
	if err := sh.h.New(ctx, in.State, ""); err != nil {
		t.closeIfUnused(key)
		return nil, stateError(in.State, err)
	}
	if err := t.add(in.State, "", key, sh); err != nil {
		return nil, err
	}
	sess.startExpiry()
	return t.use(in.State, sh)
}

// add records a state just made in sh.
func (t *stateTable) add(name, from, key string, sh *stateHost) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrShuttingDown
	}
	if t.states[name] != nil {
		_ = sh.h.Drop(name)
		return stateErrorf("state %q was made by another call meanwhile: run again", name)
	}
	if t.states == nil {
		t.states = map[string]*liveState{}
	}
	now := time.Now()
	t.states[name] = &liveState{name: name, key: key, from: from, created: now, lastUsed: now}
	sh.users++
	return nil
}

// use marks a call on name begun.
func (t *stateTable) use(name string, sh *stateHost) (*stateRef, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.states[name]
	if st == nil {
		return nil, stateErrorf("state %q ended meanwhile (dropped or expired): run again to start it afresh", name)
	}
	st.busy++
	st.lastUsed = time.Now()
	return &stateRef{name: name, host: sh.h, env: sh.env, t: t}, nil
}

// sameEnvironment refuses a call on a state that asks for an interpreter or
// requirements the state was not created with: its interpreter is running
// already, and what it imported cannot change under it.
func sameEnvironment(in Request, env *environment, name string) error {
	if v := strings.TrimSpace(in.Python); v != "" && v != env.python.Version && !strings.HasPrefix(env.python.Version, v+".") {
		return stateErrorf("state %q runs Python %s, and a state keeps the interpreter it was created with: drop the python argument, or use a new state name for Python %s", name, env.python.Version, v)
	}
	var missing []string
	for _, r := range in.Requirements {
		if r == "auto" {
			continue
		}
		if !slices.ContainsFunc(env.reqs, func(have string) bool { return requirementName(have) == requirementName(r) }) {
			missing = append(missing, r)
		}
	}
	if len(missing) > 0 {
		return stateErrorf("state %q was created with requirements [%s], and a state keeps its environment: %s cannot be added to it. Start a new state with all the requirements it needs (load your data again there), or drop_state %q and create it again", name, strings.Join(env.reqs, ", "), strings.Join(missing, ", "), name)
	}
	return nil
}

// stateError turns a state host's error into one for the model.
func stateError(name string, err error) error {
	switch {
	case errors.Is(err, sandbox.ErrNoState), errors.Is(err, sandbox.ErrStateLost):
		return fmt.Errorf("%w: state %q is gone: its interpreter died outside any call (what it held is lost); run again to start it afresh", ErrStateGone, name)
	}
	return err
}

// drop ends a state; its host closes with its last state.
func (t *stateTable) drop(name string) error {
	t.mu.Lock()
	st := t.states[name]
	if st == nil {
		names := t.namesLocked()
		t.mu.Unlock()
		return fmt.Errorf("%w %q (states: %s)", ErrNoState, name, orNone(names))
	}
	delete(t.states, name)
	sh := t.hosts[st.key]
	sh.users--
	t.mu.Unlock()
	err := sh.h.Drop(name)
	t.closeIfUnused(st.key)
	if errors.Is(err, sandbox.ErrNoState) {
		err = nil // lost already
	}
	return err
}

// forget removes a state its host lost.
func (t *stateTable) forget(name string) {
	t.mu.Lock()
	st := t.states[name]
	if st != nil {
		delete(t.states, name)
		t.hosts[st.key].users--
	}
	t.mu.Unlock()
	if st != nil {
		t.closeIfUnused(st.key)
	}
}

// closeIfUnused closes the host of key once no state lives in it.
func (t *stateTable) closeIfUnused(key string) {
	t.mu.Lock()
	sh := t.hosts[key]
	if sh == nil || sh.users > 0 {
		t.mu.Unlock()
		return
	}
	delete(t.hosts, key)
	t.mu.Unlock()
	sh.h.Close()
	sh.env.release()
}

// close ends every state: the session is over.
func (t *stateTable) close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	hosts := t.hosts
	t.hosts, t.states = nil, nil
	if t.stop != nil {
		close(t.stop)
	}
	t.mu.Unlock()
	for _, sh := range hosts {
		sh.h.Close()
		sh.env.release()
	}
}

func (t *stateTable) namesLocked() []string {
	names := make([]string, 0, len(t.states))
	for n := range t.states {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// list describes the session's states, by name.
func (t *stateTable) list() []StateInfo {
	t.mu.Lock()
	type item struct {
		st *liveState
		sh *stateHost
	}
	var items []item
	for _, st := range t.states {
		items = append(items, item{st, t.hosts[st.key]})
	}
	t.mu.Unlock()
	out := make([]StateInfo, 0, len(items))
	now := time.Now()
	for _, it := range items {
		info := StateInfo{
			Name:         it.st.name,
			Age:          now.Sub(it.st.created),
			Idle:         now.Sub(it.st.lastUsed),
			Memory:       it.sh.h.Memory(it.st.name),
			Python:       it.sh.env.python.Version,
			Requirements: append([]string{}, it.sh.env.reqs...),
			ForkedFrom:   it.st.from,
		}
		if it.st.busy > 0 {
			info.Idle = 0
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// startExpiry starts the session's janitor, which drops states idle for
// longer than Config.StateIdle, once.
func (sess *Session) startExpiry() {
	s := sess.rt
	t := &sess.states
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stop != nil || t.closed {
		return
	}
	t.stop = make(chan struct{})
	stop := t.stop
	every := min(max(s.cfg.StateIdle/4, 10*time.Millisecond), 30*time.Second)
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			t.mu.Lock()
			var idle []string
			for name, st := range t.states {
				if st.busy == 0 && time.Since(st.lastUsed) > s.cfg.StateIdle {
					idle = append(idle, name)
				}
			}
			t.mu.Unlock()
			for _, name := range idle {
				s.cfg.Logger.Info("state expired", "state", name, "idle", s.cfg.StateIdle)
				_ = t.drop(name)
			}
		}
	}()
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// stateErrorf makes an error about states written for the model: what went
// wrong and what to do, nothing of the host.
// They wrap ErrNotRun: the code did not run.
func stateErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrNotRun, fmt.Sprintf(format, args...))
}

// ErrNoState is wrapped by DropState's error for a name that is no state
// of the session; the message is written for the model.
var ErrNoState = errors.New("there is no state")

// ErrStateGone is wrapped by Run's error when the state the request named
// died outside any call's control: the message is written for the model.
var ErrStateGone = errors.New("state lost")

// executeState is execute for a run on a state.
func (s *Session) executeState(ctx context.Context, ref *stateRef, job sandbox.Job, status func(string), stdout, stderr *sandbox.Capture) (sandbox.StateResult, error) {
	var res sandbox.StateResult
	_, err := s.inSlot(ctx, status, stdout, stderr, func(ctx context.Context) (sandbox.Result, error) {
		var err error
		res, err = ref.host.Run(ctx, ref.name, job)
		return res.Result, err
	})
	if errors.Is(err, sandbox.ErrStateLost) || errors.Is(err, sandbox.ErrNoState) {
		ref.t.forget(ref.name)
		return res, stateError(ref.name, err)
	}
	return res, err
}

// stateOutcome says what became of the state, in the result's fields and
// in notes for the model.
func (s *Session) stateOutcome(name string, res sandbox.StateResult) (*StateOutcome, []string) {
	o := &StateOutcome{Name: name, Committed: res.Committed}
	var notes []string
	if res.Committed {
		notes = append(notes, fmt.Sprintf("state %q kept this call's changes", name))
	} else {
		notes = append(notes, fmt.Sprintf("state %q was rolled back: it is exactly as it was before this call", name))
	}
	if len(res.Threads) > 0 {
		o.Warnings = append(o.Warnings, fmt.Sprintf("the state has %d thread(s) running (%s): later calls run in a fork, which carries only the main thread, so they will not see them run; they keep running until the next call that ends well", len(res.Threads), strings.Join(res.Threads, ", ")))
	}
	if res.OpenFiles > 0 || res.Sockets > 0 {
		o.Warnings = append(o.Warnings, fmt.Sprintf("the state holds %d open file(s) and %d socket(s): every later call shares their position with the state, so reading or writing them moves it even in a call that is rolled back; open files inside the call that uses them instead", res.OpenFiles, res.Sockets))
	}
	o.States = s.states.list()
	return o, append(notes, o.Warnings...)
}

// States describes the session's live states, by name.
func (s *Session) States() []StateInfo { return s.states.list() }

// DropState ends the state called name and frees its memory. The error is
// written for the model.
func (s *Session) DropState(name string) error { return s.states.drop(name) }
