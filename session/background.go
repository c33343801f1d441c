package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/prims-mcp/prims/sandbox"
)

// MaxBackground bounds the background runs a session keeps, finished ones
// included (their results wait to be read); the oldest finished go first.
const MaxBackground = 64

// bgRuns holds a session's background runs.
type bgRuns struct {
	mu     sync.Mutex
	runs   map[string]*bgRun
	order  []string
	closed bool
}

// bgRun is one run started with Start.
type bgRun struct {
	id      string
	started time.Time
	cancel  context.CancelFunc
	done    chan struct{}
	stdout  *sandbox.Capture // output so far, for Poll while it runs
	stderr  *sandbox.Capture

	res *Result // set before done is closed
	err error
}

// Background is a background run as Poll sees it: running, with its
// output so far, or done, with the Result (or the error that kept the
// program from running) Run would have returned.
type Background struct {
	ID             string
	Running        bool
	Elapsed        time.Duration
	Stdout, Stderr Stream // so far, while running (no logs yet)
	Result         *Result
	Err            error
}

// Start runs req like Run, in the background: it returns the run's id at
// once, and the run goes on until it ends, Cancel stops it, ctx ends or the
// session closes. Every limit and run slot applies as to Run. finished, if
// set, is called once the run is over.
func (s *Session) Start(ctx context.Context, req Request, finished func()) (string, error) {
	if err := s.rt.Check(req); err != nil {
		if finished != nil {
			finished()
		}
		return "", err
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	run := &bgRun{
		id:      "run-" + hex.EncodeToString(b[:]),
		started: time.Now(),
		done:    make(chan struct{}),
		stdout:  sandbox.NewCapture(s.rt.cfg.OutputBudget),
		stderr:  sandbox.NewCapture(s.rt.cfg.OutputBudget),
	}
	ctx, run.cancel = context.WithCancel(ctx)
	if err := s.bg.add(run); err != nil {
		run.cancel()
		if finished != nil {
			finished()
		}
		return "", err
	}
	req.Stdout = tee(run.stdout, req.Stdout)
	req.Stderr = tee(run.stderr, req.Stderr)
	go func() {
		defer close(run.done)
		defer run.cancel()
		if finished != nil {
			defer finished()
		}
		run.res, run.err = s.Run(ctx, req)
	}()
	return run.id, nil
}

// Poll waits up to wait for the background run id to end (or ctx), then
// describes it.
func (s *Session) Poll(ctx context.Context, id string, wait time.Duration) (*Background, error) {
	run, err := s.bg.get(id)
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-run.done:
	case <-t.C:
	case <-ctx.Done():
	}
	return run.describe(), nil
}

// Cancel stops the background run id (its whole process tree is killed; a
// run on a state is rolled back) and waits up to wait for it to end.
func (s *Session) Cancel(ctx context.Context, id string, wait time.Duration) (*Background, error) {
	run, err := s.bg.get(id)
	if err != nil {
		return nil, err
	}
	run.cancel()
	return s.Poll(ctx, id, wait)
}

func (r *bgRun) finished() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (r *bgRun) describe() *Background {
	b := &Background{ID: r.id, Elapsed: time.Since(r.started)}
	if r.finished() {
		b.Result, b.Err = r.res, r.err
		return b
	}
	b.Running = true
	b.Stdout = Stream{Text: r.stdout.String(), Total: r.stdout.Total(), Truncated: r.stdout.Truncated()}
	b.Stderr = Stream{Text: r.stderr.String(), Total: r.stderr.Total(), Truncated: r.stderr.Truncated()}
	return b
}

func (t *bgRuns) add(run *bgRun) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrShuttingDown
	}
	if len(t.runs) >= MaxBackground {
		for i, id := range t.order {
			if r := t.runs[id]; r != nil && r.finished() {
				delete(t.runs, id)
				t.order = append(t.order[:i:i], t.order[i+1:]...)
				break
			}
		}
		if len(t.runs) >= MaxBackground {
			return stateErrorf("this session has %d background runs going: wait for one or cancel one first", len(t.runs))
		}
	}
	if t.runs == nil {
		t.runs = map[string]*bgRun{}
	}
	t.runs[run.id] = run
	t.order = append(t.order, run.id)
	return nil
}

// ErrNoRun is wrapped by Poll's and Cancel's error for an unknown run id.
var ErrNoRun = fmt.Errorf("no such background run")

func (t *bgRuns) get(id string) (*bgRun, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := t.runs[id]; r != nil {
		return r, nil
	}
	return nil, fmt.Errorf("%w: there is no background run %q in this session (runs end with their session; the last %d are kept)", ErrNoRun, id, MaxBackground)
}

// close cancels the session's background runs and waits for them.
func (t *bgRuns) close() {
	t.mu.Lock()
	t.closed = true
	runs := make([]*bgRun, 0, len(t.runs))
	for _, r := range t.runs {
		runs = append(runs, r)
	}
	t.mu.Unlock()
	for _, r := range runs {
		r.cancel()
	}
	for _, r := range runs {
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
		}
	}
}
