package session

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// acquire waits for a run slot for sess. Waiting ends when the call is
// cancelled or the runtime starts draining.
func (rt *Runtime) acquire(ctx context.Context, sess *Session, status func(string)) (func(), error) {
	rt.mu.Lock()
	slots := rt.slots
	rt.mu.Unlock()
	select {
	case <-rt.draining:
		return nil, ErrShuttingDown
	default:
	}
	if slots == nil {
		return func() {}, nil
	}
	obs := rt.cfg.Observer
	w, why := slots.enter(sess)
	if w.granted() {
		obs.Waited(0)
		return func() { slots.release(sess) }, nil
	}
	start := time.Now()
	obs.Queued(1)
	status("queued: " + why + "; the program starts when a slot is free")
	var err error
	select {
	case <-w.ready:
	case <-ctx.Done():
		err = ctx.Err()
	case <-rt.draining:
		err = ErrShuttingDown
	}
	if err != nil && slots.leave(sess, w) {
		// Granted as it gave up: the slot goes to the next in line.
		slots.release(sess)
	}
	obs.Queued(-1)
	obs.Waited(time.Since(start))
	switch {
	case errors.Is(err, ErrShuttingDown):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("the run was waiting for a slot: %w", err)
	}
	status("dequeued: starting the program")
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
	held map[*Session]int // slots held, per session
	// line holds the sessions with runs waiting, in the order they are
	// served: a session served goes to the back.
	line  []*Session
	queue map[*Session][]*slotWaiter
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
	return &runSlots{max: n, cap: max(1, n-1), held: map[*Session]int{}, queue: map[*Session][]*slotWaiter{}}
}

// enter takes a slot for sess at once, or puts it in line; why says, for
// the client, what it waits for.
func (q *runSlots) enter(sess *Session) (w *slotWaiter, why string) {
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

func (q *runSlots) grant(sess *Session, w *slotWaiter) {
	q.used++
	q.held[sess]++
	close(w.ready)
}

// release gives back a slot of sess and hands free slots on.
func (q *runSlots) release(sess *Session) {
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
		i := slices.IndexFunc(q.line, func(s *Session) bool { return q.held[s] < q.cap })
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
func (q *runSlots) leave(sess *Session, w *slotWaiter) bool {
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
