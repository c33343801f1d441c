package mcp

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// queueEvent is a queued or dequeued notice a run's client received.
type queueEvent struct{ run, msg string }

// queueClients are HTTP sessions whose runs report queue notices on one
// channel. Each run blocks until the test creates its release file, so the
// test decides when each slot frees, and at most as many runs as there are
// slots are past the queue: the order in which runs leave it is the order
// of their "dequeued" notices, whichever stream carries them.
type queueClients struct {
	f      *httpFixture
	events chan queueEvent
}

func newQueueClients(t *testing.T, maxRuns int) *queueClients {
	return &queueClients{f: newHTTPFixture(t, HTTPConfig{MaxRuns: maxRuns}), events: make(chan queueEvent, 256)}
}

// session opens a session and its workspace.
func (q *queueClients) session(t *testing.T) (*sdk.ClientSession, string) {
	cs := q.f.mustConnect(t, clientOpts{progress: func(r *sdk.ProgressNotificationClientRequest) {
		if m := r.Params.Message; strings.HasPrefix(m, "queued") || strings.HasPrefix(m, "dequeued") {
			q.events <- queueEvent{fmt.Sprint(r.Params.ProgressToken), m}
		}
	}})
	call(t, cs, "list_dir", nil)
	return cs, q.f.workspaceDir(cs.ID())
}

// start calls run_code in cs with a program that waits for the file named
// run in its workspace; the returned channel gets its stdout.
func (q *queueClients) start(t *testing.T, cs *sdk.ClientSession, run string) <-chan string {
	done := make(chan string, 1)
	go func() {
		params := &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{
			"code": fmt.Sprintf("import os, time\nwhile not os.path.exists(%q): time.sleep(0.01)\nprint(%q)", run, run),
		}}
		params.SetProgressToken(run)
		res, err := cs.CallTool(context.Background(), params)
		switch {
		case err != nil:
			done <- err.Error()
		case res.StructuredContent != nil:
			done <- fmt.Sprint(res.StructuredContent.(map[string]any)["stdout"])
		default:
			done <- "no result"
		}
	}()
	return done
}

// next waits for the next queue notice.
func (q *queueClients) next(t *testing.T) queueEvent {
	t.Helper()
	select {
	case e := <-q.events:
		return e
	case <-time.After(time.Minute):
		// Patience, not a measurement: a notice is due long before.
		t.Fatal("no queue notice came")
	}
	return queueEvent{}
}

func release(t *testing.T, dir, run string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, run), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRunQueueRoundRobin: with one run slot, a session with four runs
// queued and a session with one queued behind them take turns: the second
// session's run starts after one of the first's, not after all four.
func TestRunQueueRoundRobin(t *testing.T) {
	q := newQueueClients(t, 1)
	a, aDir := q.session(t)
	b, bDir := q.session(t)
	dirs := map[string]string{}
	done := map[string]<-chan string{}
	done["a1"] = q.start(t, a, "a1")
	dirs["a1"] = aDir
	eventually(t, "a1 in flight", func() bool { return q.f.srv.metrics.inFlight.Load() == 1 })
	// One at a time, so that the line's order is known.
	for _, run := range []string{"a2", "a3", "a4", "a5", "b1"} {
		cs, dir := a, aDir
		if run[0] == 'b' {
			cs, dir = b, bDir
		}
		done[run], dirs[run] = q.start(t, cs, run), dir
		if e := q.next(t); e.run != run || !strings.HasPrefix(e.msg, "queued") {
			t.Fatalf("%s: notice %+v, want it queued", run, e)
		}
	}
	// a2 got in line before b1; then the sessions alternate, and the
	// first session's other runs follow once the second has none waiting.
	running := "a1"
	for _, want := range []string{"a2", "b1", "a3", "a4", "a5"} {
		release(t, dirs[running], running)
		if out := <-done[running]; out != running+"\n" {
			t.Fatalf("%s: stdout %q", running, out)
		}
		e := q.next(t)
		if e.run != want || !strings.HasPrefix(e.msg, "dequeued") {
			t.Fatalf("after %s ended: %+v started, want %s", running, e, want)
		}
		running = want
	}
	release(t, dirs[running], running)
	<-done[running]
}

// TestRunQueueLeavesASlot: one session cannot take every run slot, so a
// second session's run starts at once while the first session's runs
// wait, however many it has.
func TestRunQueueLeavesASlot(t *testing.T) {
	q := newQueueClients(t, 2)
	a, aDir := q.session(t)
	b, bDir := q.session(t)
	a1 := q.start(t, a, "a1")
	eventually(t, "a1 in flight", func() bool { return q.f.srv.metrics.inFlight.Load() == 1 })
	a2 := q.start(t, a, "a2")
	if e := q.next(t); e.run != "a2" || !strings.Contains(e.msg, "this session already runs 1 programs") {
		t.Fatalf("a2: notice %+v, want it queued behind its own session's run", e)
	}
	// b1 must start although a1 holds a slot and a2 waits (its release
	// file is there already: it ends as soon as it starts).
	release(t, bDir, "b1")
	b1 := q.start(t, b, "b1")
	select {
	case out := <-b1:
		if out != "b1\n" {
			t.Fatalf("b1: %q", out)
		}
	case e := <-q.events:
		t.Fatalf("b1 waited behind the other session's runs: %+v", e)
	}
	// a2 still waits: its session holds all the slots but one already.
	if n := q.f.srv.metrics.queued.Load(); n != 1 {
		t.Errorf("%d runs queued after b1 ended, want a2's", n)
	}
	release(t, aDir, "a1")
	if out := <-a1; out != "a1\n" {
		t.Fatalf("a1: %q", out)
	}
	if e := q.next(t); e.run != "a2" || !strings.HasPrefix(e.msg, "dequeued") {
		t.Fatalf("after a1: %+v, want a2 started", e)
	}
	release(t, aDir, "a2")
	if out := <-a2; out != "a2\n" {
		t.Fatalf("a2: %q", out)
	}
	select {
	case e := <-q.events:
		t.Errorf("unexpected queue notice %+v", e)
	default:
	}
}
