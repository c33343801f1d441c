package mcp

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/workspace"
)

// sessionTable holds what a Server serving streamable HTTP keeps per MCP
// session: one workspace each, created on first use and deleted when the
// session ends (DELETE, idle timeout, shutdown). It also bounds how many
// sessions may live and how many programs may run at once. Its zero value
// serves stdio: no entries, no limits.
//
// Session IDs are map keys only: they never become part of a path.
type sessionTable struct {
	mu          sync.Mutex
	entries     map[string]*liveSession
	pending     int // new-session requests in flight, counted against maxSessions
	maxSessions int // 0 = unlimited

	slots *runSlots // nil = unlimited

	drainOnce sync.Once
	draining  chan struct{} // closed when the server stops taking new work
}

// liveSession is one MCP session of an HTTP server.
type liveSession struct {
	id    string
	ss    *sdk.ServerSession
	owner string // auth.TokenInfo.UserID of the client that opened it; "" without OAuth
	// tracked is set when the HTTP handler registered the session with its
	// owner. Only tracked sessions are reachable through /artifacts.
	tracked bool
	sess    *session
	// gone is cancelled when the session ends: its runs are killed.
	gone   context.Context
	cancel context.CancelFunc
	ended  chan struct{} // closed once the workspace is removed
}

func (t *sessionTable) init(maxSessions, maxRuns int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.maxSessions = maxSessions
	if maxRuns > 0 {
		t.slots = newRunSlots(maxRuns)
	}
}

// drainChLocked returns the channel closed by beginDrain. Callers hold t.mu.
func (t *sessionTable) drainChLocked() chan struct{} {
	if t.draining == nil {
		t.draining = make(chan struct{})
	}
	return t.draining
}

func (t *sessionTable) isDraining() bool {
	t.mu.Lock()
	ch := t.drainChLocked()
	t.mu.Unlock()
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// reservation is room for one session being opened.
type reservation struct {
	t    *sessionTable
	done bool // released, or turned into an entry; guarded by t.mu
}

// release gives the room back if the session did not become live.
func (r *reservation) release() {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	r.releaseLocked()
}

func (r *reservation) releaseLocked() {
	if !r.done {
		r.done = true
		r.t.pending--
	}
}

// reserve claims room for one new session, or reports that the server is
// full or shutting down.
func (t *sessionTable) reserve() (*reservation, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-t.drainChLocked():
		return nil, errShuttingDown
	default:
	}
	if t.maxSessions > 0 && len(t.entries)+t.pending >= t.maxSessions {
		return nil, errTooManySessions
	}
	t.pending++
	return &reservation{t: t}, nil
}

var (
	errShuttingDown    = errors.New("the server is shutting down")
	errTooManySessions = errors.New("the server has as many sessions as it allows; close one or try again later")
)

// liveLocked returns the entry for ss, creating it (and a watcher that removes it
// when the session ends) if needed. Callers hold s.table.mu.
func (s *Server) liveLocked(ss *sdk.ServerSession, owner string) *liveSession {
	t := &s.table
	id := ss.ID()
	if e := t.entries[id]; e != nil {
		return e
	}
	if t.entries == nil {
		t.entries = map[string]*liveSession{}
	}
	gone, cancel := context.WithCancel(context.Background())
	e := &liveSession{id: id, ss: ss, owner: owner, gone: gone, cancel: cancel, ended: make(chan struct{})}
	t.entries[id] = e
	go func() {
		_ = ss.Wait()
		s.endSession(id, "closed")
	}()
	return e
}

// trackSession registers a session that the HTTP handler just opened, with
// the identity of the client that opened it. It runs as the response to the
// opening request starts, when the SDK has handled initialize. The
// reservation becomes the entry in the same critical section, so the
// session is never counted twice against the cap.
func (s *Server) trackSession(id, owner string, r *reservation) {
	var ss *sdk.ServerSession
	for c := range s.sdk.Sessions() {
		if c.ID() == id {
			ss = c
			break
		}
	}
	if ss == nil || ss.InitializeParams() == nil {
		// Not a session the client will use: initialization failed, or
		// this was a 2026-07-28 client's probe, which the SDK answers
		// with a version error and closes. Its room is free as soon as
		// the answer starts, when the client may already try again.
		r.release()
		return
	}
	s.table.mu.Lock()
	defer s.table.mu.Unlock()
	r.releaseLocked()
	if s.base.Err() != nil {
		return
	}
	e := s.liveLocked(ss, owner)
	e.owner = owner
	e.tracked = true
}

// dropUninitialized ends the session id at once if it never completed
// initialization: the SDK closes such sessions when their first request
// ends, and they must not hold room under the cap until the watcher runs.
func (s *Server) dropUninitialized(id string) {
	s.table.mu.Lock()
	e := s.table.entries[id]
	s.table.mu.Unlock()
	if e != nil && e.ss.InitializeParams() == nil {
		s.endSession(id, "not initialized")
	}
}

// sessionFor is session() for a client with an MCP session ID: its own
// workspace, created on first use.
func (s *Server) sessionFor(ss *sdk.ServerSession) (*session, error) {
	s.table.mu.Lock()
	defer s.table.mu.Unlock()
	if s.base.Err() != nil {
		return nil, errShuttingDown
	}
	e := s.liveLocked(ss, "")
	if e.sess == nil {
		ws, err := workspace.New("")
		if err != nil {
			s.log.Error("create workspace", "session", e.id, "err", err)
			return nil, fmt.Errorf("the server could not create a workspace: %w", err)
		}
		s.log.Info("workspace ready", "session", e.id)
		e.sess = &session{ws: ws, gone: e.gone}
	}
	return e.sess, nil
}

// lookup returns the live session id if the caller (identified by user, the
// token's UserID) may use it. A missing session and someone else's session
// look the same.
func (s *Server) lookup(id, user string) *liveSession {
	s.table.mu.Lock()
	defer s.table.mu.Unlock()
	e := s.table.entries[id]
	if e == nil || !e.tracked || (e.owner != "" && e.owner != user) {
		return nil
	}
	return e
}

// endSession kills the session's runs and deletes its workspace. It is
// idempotent: the session's watcher, DELETE and Close may all call it.
func (s *Server) endSession(id, why string) {
	s.table.mu.Lock()
	e := s.table.entries[id]
	delete(s.table.entries, id)
	s.table.mu.Unlock()
	if e == nil {
		return
	}
	defer close(e.ended)
	e.cancel()
	if e.sess == nil {
		s.log.Debug("session ended", "session", id, "why", why)
		return
	}
	// The SDK has waited for the session's handlers to return before the
	// session counts as closed, so no run still uses the directory.
	if err := s.closeWorkspace(e.sess); err != nil {
		s.log.Error("remove workspace", "session", id, "err", err)
	}
	s.log.Info("session ended; workspace removed", "session", id, "why", why, "runs", e.sess.runs.Load())
}

// closeSessions is Close's part for HTTP sessions: every workspace is
// removed, and every SDK session closed so that streams end.
func (s *Server) closeSessions() error {
	s.table.mu.Lock()
	entries := s.table.entries
	s.table.entries = nil
	s.table.mu.Unlock()
	var errs []error
	for id, e := range entries {
		e.cancel()
		if e.sess != nil {
			if err := s.closeWorkspace(e.sess); err != nil {
				errs = append(errs, fmt.Errorf("session %s: %w", id, err))
			}
		}
		close(e.ended)
	}
	// ServerSession.Close waits for the session's handlers; runs were
	// killed already, but a download may take until its own time limit.
	var wg sync.WaitGroup
	for ss := range s.sdk.Sessions() {
		wg.Go(func() { _ = ss.Close() })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.log.Warn("some sessions did not close within 5s")
	}
	return errors.Join(errs...)
}

// beginDrain stops the server from taking new sessions or starting new
// programs; runs already started go on.
func (s *Server) beginDrain() {
	s.table.mu.Lock()
	ch := s.table.drainChLocked()
	s.table.mu.Unlock()
	s.table.drainOnce.Do(func() { close(ch) })
}

// Drain stops taking new sessions and new runs, then waits until the runs
// in flight have ended or ctx is done. Close afterwards kills what is left
// and deletes every workspace.
func (s *Server) Drain(ctx context.Context) error {
	s.beginDrain()
	done := make(chan struct{})
	go func() { s.runs.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("drain: %d runs still in flight: %w", s.metrics.inFlight.Load(), ctx.Err())
	}
}

// execute runs job in a run slot and records it in the metrics: the one
// place where run_code starts a program. A run that has to wait for a slot
// tells the client it is queued.
func (s *Server) execute(ctx context.Context, sess *session, prog *progress, job sandbox.Job) (sandbox.Result, error) {
	if sess.gone != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(sess.gone, cancel)()
	}
	release, err := s.acquire(ctx, sess, prog)
	if err != nil {
		s.metrics.countRun(outcomeRefused)
		return sandbox.Result{}, err
	}
	defer release()

	stdout := &countWriter{w: job.Stdout}
	stderr := &countWriter{w: job.Stderr}
	job.Stdout, job.Stderr = stdout, stderr
	s.metrics.inFlight.Add(1)
	res, err := s.runner.Run(ctx, job)
	s.metrics.inFlight.Add(-1)
	s.metrics.observeRun(res, err, stdout.n, stderr.n)
	return res, err
}

// acquire waits for a run slot for sess. Waiting ends when the call is
// cancelled or the server starts shutting down.
func (s *Server) acquire(ctx context.Context, sess *session, prog *progress) (func(), error) {
	s.table.mu.Lock()
	slots := s.table.slots
	draining := s.table.drainChLocked()
	s.table.mu.Unlock()
	select {
	case <-draining:
		return nil, errShuttingDown
	default:
	}
	if slots == nil {
		return func() {}, nil
	}
	w, why := slots.enter(sess)
	if w.granted() {
		s.metrics.queueWait.Observe(0)
		return func() { slots.release(sess) }, nil
	}
	start := time.Now()
	s.metrics.queued.Add(1)
	prog.status("queued: " + why + "; the program starts when a slot is free")
	var err error
	select {
	case <-w.ready:
	case <-ctx.Done():
		err = ctx.Err()
	case <-draining:
		err = errShuttingDown
	}
	if err != nil && slots.leave(sess, w) {
		// Granted as it gave up: the slot goes to the next in line.
		slots.release(sess)
	}
	s.metrics.queued.Add(-1)
	s.metrics.queueWait.Observe(time.Since(start).Seconds())
	switch {
	case errors.Is(err, errShuttingDown):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("the run was waiting for a slot: %w", err)
	}
	prog.status("dequeued: starting the program")
	return func() { slots.release(sess) }, nil
}

// runSlots shares the server's run slots (--max-runs) between sessions, so
// that one client's long runs cannot stall everyone else's:
//
//   - A session holds at most all slots but one (when there are two or
//     more): one slot is always left for the other sessions. Runs cannot be
//     preempted, so this is the only way a print(1) from a second session
//     starts at once however many long runs the first has going, rather
//     than after the shortest of them.
//   - A freed slot goes to the waiting sessions in turn (round robin), not
//     to the run that waited longest: a session with ten runs queued gets
//     one of them started, then it is another session's turn. Within a
//     session, runs start in the order they came.
type runSlots struct {
	mu   sync.Mutex
	max  int              // slots in all
	cap  int              // slots one session may hold
	used int              // slots held
	held map[*session]int // slots held, per session
	// line holds the sessions with runs waiting, in the order they are
	// served: a session served goes to the back.
	line  []*session
	queue map[*session][]*slotWaiter
}

// slotWaiter is one run waiting for a slot: ready is closed when it gets one.
type slotWaiter struct {
	ready chan struct{}
}

func (w *slotWaiter) granted() bool {
	select {
	case <-w.ready:
		return true
	default:
		return false
	}
}

func newRunSlots(n int) *runSlots {
	return &runSlots{max: n, cap: max(1, n-1), held: map[*session]int{}, queue: map[*session][]*slotWaiter{}}
}

// enter takes a slot for sess at once, or puts it in line; why says, for
// the client, what it waits for.
func (q *runSlots) enter(sess *session) (w *slotWaiter, why string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	w = &slotWaiter{ready: make(chan struct{})}
	if len(q.queue[sess]) == 0 && q.used < q.max && q.held[sess] < q.cap {
		q.grant(sess, w)
		return w, ""
	}
	if len(q.queue[sess]) == 0 {
		q.line = append(q.line, sess)
	}
	q.queue[sess] = append(q.queue[sess], w)
	if q.used < q.max {
		return w, fmt.Sprintf("this session already runs %d programs, as many as one session may while others can come (%d run slots in all)", q.held[sess], q.max)
	}
	return w, fmt.Sprintf("all %d run slots of the server are busy", q.max)
}

func (q *runSlots) grant(sess *session, w *slotWaiter) {
	q.used++
	q.held[sess]++
	close(w.ready)
}

// release gives back a slot of sess and hands free slots on.
func (q *runSlots) release(sess *session) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.used--
	if q.held[sess]--; q.held[sess] <= 0 {
		delete(q.held, sess)
	}
	q.dispatch()
}

// dispatch gives free slots to the first sessions in line that may take
// one more, each then going to the back of the line. Called with q.mu held.
func (q *runSlots) dispatch() {
	for q.used < q.max {
		i := slices.IndexFunc(q.line, func(s *session) bool { return q.held[s] < q.cap })
		if i < 0 {
			return
		}
		sess := q.line[i]
		ws := q.queue[sess]
		q.grant(sess, ws[0])
		q.line = slices.Delete(q.line, i, i+1)
		if ws = ws[1:]; len(ws) > 0 {
			q.queue[sess] = ws
			q.line = append(q.line, sess)
		} else {
			delete(q.queue, sess)
		}
	}
}

// leave takes a run that gives up out of line. It reports true when the
// run had been granted a slot meanwhile, which the caller must release.
func (q *runSlots) leave(sess *session, w *slotWaiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if w.granted() {
		return true
	}
	ws := q.queue[sess]
	if i := slices.Index(ws, w); i >= 0 {
		ws = slices.Delete(ws, i, i+1)
	}
	if len(ws) > 0 {
		q.queue[sess] = ws
		return false
	}
	delete(q.queue, sess)
	if i := slices.Index(q.line, sess); i >= 0 {
		q.line = slices.Delete(q.line, i, i+1)
	}
	return false
}
