package mcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/workspace"
)

// RunInput is what run_code accepts.
type RunInput struct {
	Code     string       `json:"code" jsonschema:"a complete Python 3 program"`
	Files    []MountInput `json:"files,omitempty" jsonschema:"files to download into mounts/ before the run"`
	TimeoutS float64      `json:"timeout_s,omitempty" jsonschema:"wall-clock limit in seconds (server default if omitted)"`
	// Requirements are installed once per machine into a cached
	// environment; later calls in the session keep them.
	Requirements []string `json:"requirements,omitempty" jsonschema:"pip requirements (PEP 508, e.g. pandas or numpy>=2) the code needs; [\"auto\"] infers them from the imports. Installed once and cached; packages from earlier calls stay available"`
	Python       string   `json:"python,omitempty" jsonschema:"Python version to use, e.g. 3.12 (default: the server's interpreter)"`
}

// Artifact is a file under output/ that a run created or changed.
type Artifact struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
	MIME string `json:"mime"`
	URI  string `json:"uri" jsonschema:"the file as an MCP resource, readable with resources/read"`
	Note string `json:"note,omitempty" jsonschema:"how the file is returned: as an image in the result, or as a resource link and why"`
}

// RunOutput is run_code's structured result.
type RunOutput struct {
	ExitCode    int    `json:"exit_code" jsonschema:"the program's exit status; negative when killed by a signal"`
	Signal      string `json:"signal,omitempty"`
	Limit       string `json:"limit,omitempty" jsonschema:"the sandbox limit that ended or broke the run: wall-time, cpu-time, memory, max-procs, max-file-size, max-open-files or workspace-quota"`
	Stdout      string `json:"stdout"`
	Stderr      string `json:"stderr"`
	StdoutBytes int64  `json:"stdout_bytes"`
	StderrBytes int64  `json:"stderr_bytes"`
	StdoutLog   string `json:"stdout_log" jsonschema:"workspace path of the complete stdout"`
	StderrLog   string `json:"stderr_log" jsonschema:"workspace path of the complete stderr"`
	// The notes say why a log does not hold the whole stream.
	StdoutLogNote string     `json:"stdout_log_note,omitempty" jsonschema:"set when the stdout log is not complete, and why"`
	StderrLogNote string     `json:"stderr_log_note,omitempty" jsonschema:"set when the stderr log is not complete, and why"`
	TimedOut      bool       `json:"timed_out"`
	Cancelled     bool       `json:"cancelled"`
	DurationMS    int64      `json:"duration_ms"`
	Truncated     bool       `json:"truncated" jsonschema:"true when stdout or stderr was cut to fit; see the logs"`
	Artifacts     []Artifact `json:"artifacts"`
	Isolation     string     `json:"isolation" jsonschema:"the sandbox tier that ran the code"`
	Warm          bool       `json:"warm" jsonschema:"true when the run was handed to a sandbox started ahead of time"`
	Python        string     `json:"python" jsonschema:"the Python version that ran the code"`
	// Requirements is the whole set installed in the run's environment.
	Requirements []string `json:"requirements" jsonschema:"the requirements installed in the run's environment (this call's and earlier calls')"`
	EnvCached    bool     `json:"env_cached" jsonschema:"true when the environment came from the cache without an install"`
	Hint         string   `json:"hint,omitempty"`
	// FixSuggestion comes from the client's own model (sampling), only with
	// --sample-fixes and a client that supports sampling.
	FixSuggestion string `json:"fix_suggestion,omitempty" jsonschema:"a fix suggested by the client's model for a failed run; not verified"`
}

func (s *Server) runCode(ctx context.Context, req *sdk.CallToolRequest, in RunInput) (*sdk.CallToolResult, *RunOutput, error) {
	if resuming(req) {
		return s.resumeWithFix(req)
	}
	if strings.TrimSpace(in.Code) == "" {
		return nil, nil, errors.New("code is empty: pass a complete Python program in \"code\"")
	}
	if len(in.Code) > s.cfg.MaxCodeBytes {
		return nil, nil, fmt.Errorf("code is %s, over the %s limit: write large data to a file with mount_file instead of embedding it in the program", humanBytes(int64(len(in.Code))), humanBytes(int64(s.cfg.MaxCodeBytes)))
	}
	timeout := s.cfg.DefaultTimeout
	var notes []string
	if in.TimeoutS < 0 {
		return nil, nil, fmt.Errorf("timeout_s %g is negative", in.TimeoutS)
	}
	if in.TimeoutS > 0 {
		timeout = time.Duration(in.TimeoutS * float64(time.Second))
		if timeout > s.cfg.MaxTimeout {
			timeout = s.cfg.MaxTimeout
			notes = append(notes, fmt.Sprintf("timeout_s was lowered to the server's maximum of %s", s.cfg.MaxTimeout))
		}
	}
	sess, err := s.session(req.Session)
	if err != nil {
		return nil, nil, err
	}
	ctx, done, err := s.track(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer done()

	prog := newProgress(ctx, req, s.cfg.Heartbeat)
	defer prog.stop()
	for _, f := range in.Files {
		prog.status(fmt.Sprintf("downloading %s", f.MountPath))
		if _, err := sess.ws.Fetch(ctx, f.URL, f.MountPath, s.cfg.Transfer); err != nil {
			return nil, nil, s.toolError("run_code", fmt.Errorf("the code was not run: %w", err))
		}
	}

	env, err := s.prepareEnvironment(ctx, sess, in, prog.status)
	if err != nil {
		return nil, nil, s.toolError("run_code", err)
	}
	defer env.release()

	n := sess.runs.Add(1)
	// Logs have a budget of their own: the oldest runs' logs go first,
	// leaving room for this run's streams at their cap.
	sess.ws.PruneLogs(s.cfg.LogBudget - 2*s.cfg.LogLimit - int64(len(in.Code)))
	codePath, diskFull, err := writeLog(sess.ws, fmt.Sprintf("%04d-code.py", n), in.Code)
	if err != nil {
		return nil, nil, s.toolError("run_code", err)
	}
	stdoutLog, stdoutPath, err := createLog(sess.ws, fmt.Sprintf("%04d-stdout.txt", n), &diskFull)
	if err != nil {
		return nil, nil, s.toolError("run_code", err)
	}
	defer stdoutLog.Close()
	stderrLog, stderrPath, err := createLog(sess.ws, fmt.Sprintf("%04d-stderr.txt", n), &diskFull)
	if err != nil {
		return nil, nil, s.toolError("run_code", err)
	}
	defer stderrLog.Close()
	if diskFull {
		notes = append(notes, "the disk is full, so this run's logs could not be written; the run went ahead, so code that deletes files can free space")
	}
	outLog := &limitWriter{w: stdoutLog, n: s.cfg.LogLimit}
	errLog := &limitWriter{w: stderrLog, n: s.cfg.LogLimit}

	outCap := sandbox.NewCapture(s.cfg.OutputBudget)
	errCap := sandbox.NewCapture(s.cfg.OutputBudget)
	before := sess.ws.Snapshot()
	watched := sess.subs.stamps(sess.ws)
	job := runJob(sess, env)
	job.Code, job.Filename, job.Timeout = in.Code, codePath, timeout
	job.QuotaUsed = sess.ws.MountsUsage()
	job.Stdout = io.MultiWriter(outCap, outLog, prog.stream("stdout"))
	job.Stderr = io.MultiWriter(errCap, errLog, prog.stream("stderr"))
	res, err := s.execute(ctx, sess, prog, job)
	if err != nil {
		return nil, nil, s.toolError("run_code", err)
	}
	prog.stop()

	out := &RunOutput{
		ExitCode:     res.ExitCode,
		Signal:       res.Signal,
		Limit:        res.Limit,
		Stdout:       outCap.String(),
		Stderr:       errCap.String(),
		StdoutBytes:  outCap.Total(),
		StderrBytes:  errCap.Total(),
		StdoutLog:    stdoutPath,
		StderrLog:    stderrPath,
		TimedOut:     res.TimedOut,
		Cancelled:    res.Cancelled,
		DurationMS:   res.Duration.Milliseconds(),
		Truncated:    outCap.Truncated() || errCap.Truncated(),
		Artifacts:    []Artifact{},
		Isolation:    string(res.Tier),
		Warm:         res.Warm,
		Python:       env.python.Version,
		Requirements: append([]string{}, env.reqs...),
		EnvCached:    env.cacheHit,
	}
	sess.ws.AddLogBytes(int64(len(in.Code)) + outLog.written + errLog.written)
	out.StdoutLogNote = outLog.note(sess.ws, stdoutPath, s.cfg.LogLimit)
	out.StderrLogNote = errLog.note(sess.ws, stderrPath, s.cfg.LogLimit)
	for _, e := range sess.ws.Changes(before) {
		out.Artifacts = append(out.Artifacts, Artifact{Path: e.Path, Size: e.Size, MIME: e.MIME, URI: resourceURI(e.Path)})
	}
	s.notifyUpdated(ctx, sess, watched)
	files := s.fileContent(sess.ws, out.Artifacts, req.ProtocolVersion())
	out.Hint = s.hint(ctx, out, timeout, in.Code, env.python.Path)
	result := textResult(summary(out, timeout, notes))
	result.Content = append(result.Content, files...)
	result.IsError = out.ExitCode != 0 || out.TimedOut || out.Cancelled
	if s.cfg.SampleFixes && out.ExitCode != 0 && !out.TimedOut && !out.Cancelled {
		return s.withFix(ctx, req, sess, in.Code, result, out)
	}
	return result, out, nil
}

// runJob is what a run in sess with env starts: everything that decides
// which waiting sandbox can take it (see Prewarm), without the program.
func runJob(sess *session, env *environment) sandbox.Job {
	return sandbox.Job{
		Python:   env.executable(),
		Dir:      sess.ws.Dir(),
		ReadOnly: append(env.readOnly(), sess.ws.ReadOnly()...),
	}
}

// Prewarm starts, in the background, a sandbox for the stdio session's
// first run without requirements: the workspace, the default interpreter
// and the sandbox are made ready while the client's model thinks, so even
// the first run_code is handed to a waiting interpreter. It begins once the
// client has initialized (or after prewarmDelay, for clients of protocols
// without initialization), not to slow the initialize response. Without a
// warm pool it only creates the workspace early.
func (s *Server) Prewarm() {
	s.runs.Add(1)
	go func() {
		defer s.runs.Done()
		select {
		case <-s.initialized:
		case <-time.After(prewarmDelay):
		case <-s.base.Done():
			return
		}
		sess, err := s.session(nil)
		if err != nil || s.runner == nil {
			return
		}
		py, err := s.pythons.get(s.base, "")
		if err != nil {
			return // the first run reports it
		}
		s.runner.Prewarm(runJob(sess, &environment{python: py}))
	}()
}

// prewarmDelay bounds how long Prewarm waits for the client to initialize.
const prewarmDelay = 100 * time.Millisecond

// summary is the text the model reads: what happened, then the streams.
func summary(o *RunOutput, timeout time.Duration, notes []string) string {
	var b strings.Builder
	switch {
	case o.TimedOut:
		fmt.Fprintf(&b, "Timed out after %s: the process tree was killed.", timeout)
	case o.Cancelled:
		b.WriteString("Cancelled: the process tree was killed.")
	case o.Signal != "":
		fmt.Fprintf(&b, "Killed by signal %s (exit code %d) after %d ms.", o.Signal, o.ExitCode, o.DurationMS)
	default:
		fmt.Fprintf(&b, "Exit code %d after %d ms.", o.ExitCode, o.DurationMS)
	}
	fmt.Fprintf(&b, " Isolation: %s.\n", o.Isolation)
	for _, n := range notes {
		fmt.Fprintf(&b, "Note: %s.\n", n)
	}
	stream := func(name, text string, total int64, log, logNote string) {
		if total == 0 {
			return
		}
		fmt.Fprintf(&b, "\n--- %s", name)
		if int64(len(text)) < total || strings.Contains(text, "bytes omitted ...]") {
			if logNote != "" {
				fmt.Fprintf(&b, " (%s in all; %s is not complete: %s)", humanBytes(total), log, logNote)
			} else {
				fmt.Fprintf(&b, " (%s in all; complete in %s)", humanBytes(total), log)
			}
		}
		b.WriteString(" ---\n")
		b.WriteString(text)
		if !strings.HasSuffix(text, "\n") {
			b.WriteString("\n")
		}
	}
	stream("stdout", o.Stdout, o.StdoutBytes, o.StdoutLog, o.StdoutLogNote)
	stream("stderr", o.Stderr, o.StderrBytes, o.StderrLog, o.StderrLogNote)
	if o.StdoutBytes == 0 && o.StderrBytes == 0 {
		b.WriteString("(no output)\n")
	}
	if len(o.Artifacts) > 0 {
		b.WriteString("\nFiles written to output/:\n")
		for _, a := range o.Artifacts {
			fmt.Fprintf(&b, "  %s (%s, %s)", shownName(a.Path), humanBytes(a.Size), a.MIME)
			if a.Note != "" {
				fmt.Fprintf(&b, ": %s", a.Note)
			}
			b.WriteString("\n")
		}
	}
	if o.Hint != "" {
		fmt.Fprintf(&b, "\nHint: %s\n", o.Hint)
	}
	return b.String()
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
		note = fmt.Sprintf("the disk filled up; it holds only the first %s", humanBytes(l.written))
	case l.err != nil:
		note = fmt.Sprintf("writing it failed; it holds only the first %s", humanBytes(l.written))
	case l.cut:
		note = fmt.Sprintf("it holds the first %s, the cap for one stream's log", humanBytes(limit))
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
