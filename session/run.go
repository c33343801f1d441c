package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/prims-mcp/prims/internal/human"
	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/workspace"
	"github.com/prims-mcp/prims/workspace/pythonenv"
)

// Request is one program to run in a session.
type Request struct {
	Code string // a complete Python program
	// Filename names the program in tracebacks and __file__; "" names the
	// copy of Code the session keeps in logs/, so tracebacks show its lines.
	Filename string
	Argv     []string // the program's sys.argv (see sandbox.Job.Argv); nil: [Filename]
	Files    []Fetch  // downloaded into mounts/ before the run
	// Timeout is the wall-clock limit: 0 takes Config.DefaultTimeout, and
	// one over Config.MaxTimeout is lowered to it, with a note.
	Timeout time.Duration
	// Requirements are installed into a cached environment together with
	// those of the session's earlier runs; "auto" infers them from the
	// imports.
	Requirements []string
	Python       string // a version among those found ("3.12"); "" for the default
	// State names a live interpreter of the session to run in (made on
	// first use): its globals persist from one run to the next, and a run
	// that fails leaves it as it was (see sandbox.StateHost). ForkFrom,
	// with a new State, makes it a copy of that state.
	State, ForkFrom string

	// Status, if set, hears what the run is doing before the program
	// starts (downloads, installs, waiting for a slot).
	Status func(string)
	// Stdout and Stderr, if set, receive the streams as they are written
	// (see sandbox.Job.Stdout), besides the Result and the logs.
	Stdout, Stderr io.Writer
}

// Fetch asks for one URL to be downloaded into mounts/.
type Fetch struct {
	URL  string
	Path string // relative to mounts/
}

// Result is how a run went, with what it printed and wrote.
type Result struct {
	sandbox.Result
	Timeout        time.Duration // the wall-clock limit the run had
	Stdout, Stderr Stream
	// Artifacts are the files under output/ that the run created or changed.
	Artifacts    []workspace.Entry
	Python       pythonenv.Interpreter // the interpreter that ran the code
	Requirements []string              // the whole set installed in the run's environment
	EnvCached    bool                  // the environment came from the cache without an install
	Notes        []string              // what the model should know about how the run was carried out
	Hint         string                // the next step after a run that did not succeed, or ""
	State        *StateOutcome         // what became of Request.State; nil without one
}

// Stream is one output stream of a run.
type Stream struct {
	Text      string // what the budget kept: the head and tail, with a marker between when cut
	Total     int64  // bytes written in all
	Truncated bool   // Text is not the whole stream
	Log       string // workspace path of the complete stream
	LogNote   string // why the log is not complete, or ""
}

// Check reports what is wrong with req before anything is created or run.
func (rt *Runtime) Check(req Request) error {
	if len(req.Code) > rt.cfg.MaxCodeBytes {
		return fmt.Errorf("code is %s, over the %s limit: write large data to a file with mount_file instead of embedding it in the program", human.Bytes(int64(len(req.Code))), human.Bytes(int64(rt.cfg.MaxCodeBytes)))
	}
	return nil
}

// ErrNotRun marks the errors of the steps before the program (downloads,
// the environment): they are written for the model, and the code did not
// run.
var ErrNotRun = errors.New("the code was not run")

// Run downloads the request's files, prepares its environment, waits for a
// run slot and runs the program, keeping its streams in the workspace's
// logs/. The error is non-nil only when the program did not run; a program
// that failed is reported in the Result, with a hint.
func (s *Session) Run(ctx context.Context, req Request) (*Result, error) {
	rt := s.rt
	if err := rt.Check(req); err != nil {
		return nil, err
	}
	status := req.Status
	if status == nil {
		status = func(string) {}
	}
	res := &Result{Timeout: rt.cfg.DefaultTimeout}
	if req.Timeout > 0 {
		res.Timeout = req.Timeout
		if res.Timeout > rt.cfg.MaxTimeout {
			res.Timeout = rt.cfg.MaxTimeout
			res.Notes = append(res.Notes, fmt.Sprintf("timeout_s was lowered to the server's maximum of %s", rt.cfg.MaxTimeout))
		}
	}
	for _, f := range req.Files {
		status(fmt.Sprintf("downloading %s", f.Path))
		if _, err := s.ws.Fetch(ctx, f.URL, f.Path, rt.cfg.Transfer); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotRun, err)
		}
	}

	var env *environment
	var ref *stateRef
	var err error
	if req.State != "" {
		if ref, err = s.openState(ctx, req, status); err != nil {
			return nil, err
		}
		defer ref.done()
		env = ref.env // the state's: its host holds it
	} else {
		if env, err = s.prepareEnvironment(ctx, req, status); err != nil {
			return nil, err
		}
		defer env.release()
	}

	logs, err := s.openLogs(req.Code)
	if err != nil {
		return nil, err
	}
	defer logs.close()
	if logs.diskFull {
		res.Notes = append(res.Notes, "the disk is full, so this run's logs could not be written; the run went ahead, so code that deletes files can free space")
	}

	outCap := sandbox.NewCapture(rt.cfg.OutputBudget)
	errCap := sandbox.NewCapture(rt.cfg.OutputBudget)
	before := s.ws.Snapshot()
	job := s.job(env)
	job.Code, job.Filename, job.Argv, job.Timeout = req.Code, logs.code, req.Argv, res.Timeout
	if req.Filename != "" {
		job.Filename = req.Filename
	}
	job.QuotaUsed = s.ws.MountsUsage()
	job.Stdout = tee(outCap, logs.stdout, req.Stdout)
	job.Stderr = tee(errCap, logs.stderr, req.Stderr)
	var sres sandbox.StateResult
	if ref != nil {
		sres, err = s.executeState(ctx, ref, job, status, outCap, errCap)
		res.Result = sres.Result
	} else {
		res.Result, err = s.execute(ctx, job, status, outCap, errCap)
	}
	if err != nil {
		return nil, err
	}
	if ref != nil {
		var notes []string
		res.State, notes = s.stateOutcome(ref.name, sres)
		res.Notes = append(res.Notes, notes...)
	}

	res.Stdout = Stream{Text: outCap.String(), Total: outCap.Total(), Truncated: outCap.Truncated(), Log: logs.stdoutPath}
	res.Stderr = Stream{Text: errCap.String(), Total: errCap.Total(), Truncated: errCap.Truncated(), Log: logs.stderrPath}
	res.Python, res.Requirements, res.EnvCached = env.python, append([]string{}, env.reqs...), env.cacheHit
	s.ws.AddLogBytes(int64(len(req.Code)) + logs.stdout.written + logs.stderr.written)
	res.Stdout.LogNote = logs.stdout.note(s.ws, logs.stdoutPath, rt.cfg.LogLimit)
	res.Stderr.LogNote = logs.stderr.note(s.ws, logs.stderrPath, rt.cfg.LogLimit)
	res.Artifacts = s.ws.Changes(before)
	res.Hint = rt.hint(ctx, res, req.Code, env.python.Path)
	return res, nil
}

// tee writes to each non-nil writer.
func tee(ws ...io.Writer) io.Writer {
	var out []io.Writer
	for _, w := range ws {
		if w != nil {
			out = append(out, w)
		}
	}
	return io.MultiWriter(out...)
}

// execute runs job in a run slot: the one place where a session starts a
// program. A run that has to wait for a slot says so through status.
func (s *Session) execute(ctx context.Context, job sandbox.Job, status func(string), stdout, stderr *sandbox.Capture) (sandbox.Result, error) {
	return s.inSlot(ctx, status, stdout, stderr, func(ctx context.Context) (sandbox.Result, error) {
		return s.rt.runner.Run(ctx, job)
	})
}

// inSlot waits for a run slot, then calls run, which starts a program whose
// streams go to stdout and stderr, and tells the observer. The run ends
// when the session does.
func (s *Session) inSlot(ctx context.Context, status func(string), stdout, stderr *sandbox.Capture, run func(context.Context) (sandbox.Result, error)) (sandbox.Result, error) {
	if s.gone != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(s.gone, cancel)()
	}
	obs := s.rt.cfg.Observer
	release, err := s.rt.acquire(ctx, s, status)
	if err != nil {
		obs.Refused()
		return sandbox.Result{}, err
	}
	defer release()
	obs.Started()
	res, err := run(ctx)
	// The captures saw every byte the program wrote (Capture.Total).
	obs.Ended(res, err, stdout.Total(), stderr.Total())
	return res, err
}

// runLogs are one run's files in logs/: its source and its two streams.
type runLogs struct {
	code                   string // workspace path of the program's copy
	stdoutPath, stderrPath string
	stdout, stderr         *limitWriter
	closers                []io.Closer
	diskFull               bool // a log could not be written: the run goes ahead without it
}

// openLogs numbers the run and creates its logs. Logs have a budget of
// their own: the oldest runs' logs go first, leaving room for this run's
// streams at their cap.
func (s *Session) openLogs(code string) (*runLogs, error) {
	n := s.runs.Add(1)
	cfg := s.rt.cfg
	s.ws.PruneLogs(cfg.LogBudget - 2*cfg.LogLimit - int64(len(code)))
	l := &runLogs{}
	var err error
	l.code, l.diskFull, err = writeLog(s.ws, fmt.Sprintf("%04d-code.py", n), code)
	if err != nil {
		return nil, err
	}
	out, outPath, err := createLog(s.ws, fmt.Sprintf("%04d-stdout.txt", n), &l.diskFull)
	if err != nil {
		return nil, err
	}
	l.closers = append(l.closers, out)
	errw, errPath, err := createLog(s.ws, fmt.Sprintf("%04d-stderr.txt", n), &l.diskFull)
	if err != nil {
		l.close()
		return nil, err
	}
	l.closers = append(l.closers, errw)
	l.stdoutPath, l.stderrPath = outPath, errPath
	l.stdout = &limitWriter{w: out, n: cfg.LogLimit}
	l.stderr = &limitWriter{w: errw, n: cfg.LogLimit}
	return l, nil
}

func (l *runLogs) close() {
	for _, c := range l.closers {
		c.Close()
	}
}

// limitWriter writes at most n bytes to w, then notes the cut once and
// discards the rest. Its errors are swallowed: a full disk must not fail
// the run, only shorten its log (note says how).
type limitWriter struct {
	w       io.Writer
	n       int64
	written int64
	cut     bool
	err     error // the write error that ended the log
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.err != nil {
		return len(p), nil
	}
	if l.n <= 0 {
		if !l.cut {
			l.cut = true
			fmt.Fprintf(l.w, "\n[PRIMS: log cut here; the rest of the stream was not kept]\n")
		}
		return len(p), nil
	}
	k := min(int64(len(p)), l.n)
	m, err := l.w.Write(p[:k])
	l.written += int64(m)
	if err != nil {
		l.err = err
		return len(p), nil
	}
	l.n -= k
	if k < int64(len(p)) {
		return l.Write(p[k:])
	}
	return len(p), nil
}

// note says why the log does not hold the whole stream, or "" when it
// does, and records it with the workspace so preview_file says it too.
func (l *limitWriter) note(ws *workspace.Workspace, log string, limit int64) string {
	var note string
	switch {
	case l.err != nil && isDiskFull(l.err):
		note = fmt.Sprintf("the disk filled up; it holds only the first %s", human.Bytes(l.written))
	case l.err != nil:
		note = fmt.Sprintf("writing it failed; it holds only the first %s", human.Bytes(l.written))
	case l.cut:
		note = fmt.Sprintf("it holds the first %s, the cap for one stream's log", human.Bytes(limit))
	default:
		return ""
	}
	ws.NoteLog(log, note)
	return note
}

// writeLog writes a whole log (the program's source). On a full disk it
// reports diskFull instead of failing: the run goes ahead without it.
func writeLog(ws *workspace.Workspace, name, text string) (path string, diskFull bool, err error) {
	f, path, err := ws.CreateLog(name)
	if err != nil {
		if isDiskFull(err) {
			return workspace.LogsDir + "/" + name, true, nil
		}
		return "", false, err
	}
	_, err = io.WriteString(f, text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if isDiskFull(err) {
		ws.NoteLog(path, "the disk filled up while it was written")
		return path, true, nil
	}
	return path, false, err
}

// createLog opens a stream's log. On a full disk it sets *diskFull and
// returns a writer that keeps nothing: the run goes ahead without a log.
func createLog(ws *workspace.Workspace, name string, diskFull *bool) (io.WriteCloser, string, error) {
	f, path, err := ws.CreateLog(name)
	if err != nil {
		if isDiskFull(err) {
			*diskFull = true
			path = workspace.LogsDir + "/" + name
			ws.NoteLog(path, "the disk was full; nothing of the stream was kept")
			return nopWriteCloser{io.Discard}, path, nil
		}
		return nil, "", err
	}
	return f, path, nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// isDiskFull reports whether err says the disk (or the user's disk quota)
// is full.
func isDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
