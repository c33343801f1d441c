package mcp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/session"
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

	draining <-chan struct{} // closed when the server stops taking new work (session.Runtime.Draining)
}

// liveSession is one MCP session of an HTTP server.
type liveSession struct {
	id    string
	ss    *sdk.ServerSession
	owner string // auth.TokenInfo.UserID of the client that opened it; "" without OAuth
	// tracked is set when the HTTP handler registered the session with its
	// owner. Only tracked sessions are reachable through /artifacts.
	tracked bool
	sess    *client
	// gone is cancelled when the session ends: its runs are killed.
	gone   context.Context
	cancel context.CancelFunc
	ended  chan struct{} // closed once the workspace is removed
}

func (t *sessionTable) init(maxSessions int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.maxSessions = maxSessions
}

func (t *sessionTable) isDraining() bool {
	select {
	case <-t.draining:
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
	if t.isDraining() {
		return nil, errShuttingDown
	}
	if t.maxSessions > 0 && len(t.entries)+t.pending >= t.maxSessions {
		return nil, errTooManySessions
	}
	t.pending++
	return &reservation{t: t}, nil
}

var (
	errShuttingDown    = session.ErrShuttingDown
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
func (s *Server) sessionFor(ss *sdk.ServerSession) (*client, error) {
	s.table.mu.Lock()
	defer s.table.mu.Unlock()
	if s.base.Err() != nil {
		return nil, errShuttingDown
	}
	e := s.liveLocked(ss, "")
	if e.sess == nil {
		rs, err := s.rt.Open("", e.gone)
		if err != nil {
			s.log.Error("create workspace", "session", e.id, "err", err)
			return nil, fmt.Errorf("the server could not create a workspace: %w", err)
		}
		s.log.Info("workspace ready", "session", e.id)
		e.sess = &client{Session: rs}
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
	if err := e.sess.Close(); err != nil {
		s.log.Error("remove workspace", "session", id, "err", err)
	}
	s.log.Info("session ended; workspace removed", "session", id, "why", why, "runs", e.sess.Runs())
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
			if err := e.sess.Close(); err != nil {
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

// Drain stops taking new sessions and new runs, then waits until the runs
// in flight have ended or ctx is done. Close afterwards kills what is left
// and deletes every workspace.
func (s *Server) Drain(ctx context.Context) error {
	// New sessions and new runs are refused from here on.
	s.rt.Drain()
	done := make(chan struct{})
	go func() { s.runs.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("drain: %d runs still in flight: %w", s.metrics.inFlight.Load(), ctx.Err())
	}
}
