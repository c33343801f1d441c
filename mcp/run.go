package mcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/sandbox"
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
	ExitCode    int        `json:"exit_code" jsonschema:"the program's exit status; negative when killed by a signal"`
	Signal      string     `json:"signal,omitempty"`
	Limit       string     `json:"limit,omitempty" jsonschema:"the sandbox limit that ended or broke the run: wall-time, cpu-time, memory, max-procs, max-file-size, max-open-files or workspace-quota"`
	Stdout      string     `json:"stdout"`
	Stderr      string     `json:"stderr"`
	StdoutBytes int64      `json:"stdout_bytes"`
	StderrBytes int64      `json:"stderr_bytes"`
	StdoutLog   string     `json:"stdout_log" jsonschema:"workspace path of the complete stdout"`
	StderrLog   string     `json:"stderr_log" jsonschema:"workspace path of the complete stderr"`
	TimedOut    bool       `json:"timed_out"`
	Cancelled   bool       `json:"cancelled"`
	DurationMS  int64      `json:"duration_ms"`
	Truncated   bool       `json:"truncated" jsonschema:"true when stdout or stderr was cut to fit; see the logs"`
	Artifacts   []Artifact `json:"artifacts"`
	Isolation   string     `json:"isolation" jsonschema:"the sandbox tier that ran the code"`
	Warm        bool       `json:"warm" jsonschema:"true when the run was handed to a sandbox started ahead of time"`
	Python      string     `json:"python" jsonschema:"the Python version that ran the code"`
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
	codeFile, codePath, err := sess.ws.CreateLog(fmt.Sprintf("%04d-code.py", n))
	if err != nil {
		return nil, nil, s.toolError("run_code", err)
	}
	_, err = io.WriteString(codeFile, in.Code)
	if cerr := codeFile.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, nil, s.toolError("run_code", err)
	}
	stdoutLog, stdoutPath, err := sess.ws.CreateLog(fmt.Sprintf("%04d-stdout.txt", n))
	if err != nil {
		return nil, nil, s.toolError("run_code", err)
	}
	defer stdoutLog.Close()
	stderrLog, stderrPath, err := sess.ws.CreateLog(fmt.Sprintf("%04d-stderr.txt", n))
	if err != nil {
		return nil, nil, s.toolError("run_code", err)
	}
	defer stderrLog.Close()

	outCap := sandbox.NewCapture(s.cfg.OutputBudget)
	errCap := sandbox.NewCapture(s.cfg.OutputBudget)
	before := sess.ws.Snapshot()
	watched := sess.subs.stamps(sess.ws)
	job := runJob(sess, env)
	job.Code, job.Filename, job.Timeout = in.Code, codePath, timeout
	job.QuotaUsed = sess.ws.MountsUsage()
	job.Stdout = io.MultiWriter(outCap, &limitWriter{w: stdoutLog, n: s.cfg.LogLimit}, prog.stream("stdout"))
	job.Stderr = io.MultiWriter(errCap, &limitWriter{w: stderrLog, n: s.cfg.LogLimit}, prog.stream("stderr"))
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
	stream := func(name, text string, total int64, log string) {
		if total == 0 {
			return
		}
		fmt.Fprintf(&b, "\n--- %s", name)
		if int64(len(text)) < total || strings.Contains(text, "bytes omitted ...]") {
			fmt.Fprintf(&b, " (%s in all; complete in %s)", humanBytes(total), log)
		}
		b.WriteString(" ---\n")
		b.WriteString(text)
		if !strings.HasSuffix(text, "\n") {
			b.WriteString("\n")
		}
	}
	stream("stdout", o.Stdout, o.StdoutBytes, o.StdoutLog)
	stream("stderr", o.Stderr, o.StderrBytes, o.StderrLog)
	if o.StdoutBytes == 0 && o.StderrBytes == 0 {
		b.WriteString("(no output)\n")
	}
	if len(o.Artifacts) > 0 {
		b.WriteString("\nFiles written to output/:\n")
		for _, a := range o.Artifacts {
			fmt.Fprintf(&b, "  %s (%s, %s)", a.Path, humanBytes(a.Size), a.MIME)
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
// the run, only shorten its log.
type limitWriter struct {
	w   io.Writer
	n   int64
	cut bool
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		if !l.cut {
			l.cut = true
			fmt.Fprintf(l.w, "\n[PRIMS: log cut here; the rest of the stream was not kept]\n")
		}
		return len(p), nil
	}
	k := min(int64(len(p)), l.n)
	if _, err := l.w.Write(p[:k]); err != nil {
		l.n = 0
		return len(p), nil
	}
	l.n -= k
	if k < int64(len(p)) {
		return l.Write(p[k:])
	}
	return len(p), nil
}
