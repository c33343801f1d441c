package session

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// TestRunSlotsHoldUnderChurn: many sessions taking, giving up and
// releasing slots at once never hold more than the slots, nor one session
// more than its share, and every run that waits to the end gets a slot.
func TestRunSlotsHoldUnderChurn(t *testing.T) {
	const slots, sessions, runs = 4, 6, 200
	q := newRunSlots(slots)
	var total atomic.Int64
	held := make([]atomic.Int64, sessions)
	ss := make([]*Session, sessions)
	for i := range ss {
		ss[i] = &Session{}
	}
	var wg sync.WaitGroup
	for i := range sessions * runs {
		s := i % sessions
		wg.Go(func() {
			w, _ := q.enter(ss[s])
			if i%7 == 0 && !w.granted() {
				// Gives up while waiting, as a cancelled call does.
				if q.leave(ss[s], w) {
					q.release(ss[s])
				}
				return
			}
			<-w.ready
			if n := total.Add(1); n > slots {
				t.Errorf("%d slots held, of %d", n, slots)
			}
			if n := held[s].Add(1); n > slots-1 {
				t.Errorf("session %d holds %d slots, more than all but one", s, n)
			}
			runtime.Gosched()
			held[s].Add(-1)
			total.Add(-1)
			q.release(ss[s])
		})
	}
	wg.Wait()
	if q.used != 0 || len(q.line) != 0 || len(q.queue) != 0 || len(q.held) != 0 {
		t.Errorf("left over: used %d, line %d, queues %d, held %v", q.used, len(q.line), len(q.queue), q.held)
	}
}
