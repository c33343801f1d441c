package mcp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/human"
	"github.com/prims-mcp/prims/session"
	"github.com/prims-mcp/prims/workspace/artifactstore"
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
	// State, ForkFrom: see session.Request; Background: background.go.
	State      string `json:"state,omitempty" jsonschema:"run in the live interpreter kept under this name (made on first use): globals, imports and loaded data persist between calls with the same state. A call that fails (exception, non-zero exit, timeout, cancel, limit) leaves the state exactly as it was. Requirements are fixed when the state is made"`
	ForkFrom   string `json:"fork_from,omitempty" jsonschema:"with a new state name: start that state as a cheap copy-on-write copy of this existing state"`
	Background bool   `json:"background,omitempty" jsonschema:"return at once with a run_id and status running; follow the run with get_run and stop it with cancel_run. For jobs longer than the client's request timeout"`
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
	// SuggestedRequirements come from the client's model too, after a
	// failed install or a ModuleNotFoundError (--sample-fixes).
	SuggestedRequirements []string `json:"suggested_requirements,omitempty" jsonschema:"requirements the client's model suggests after a failed install or a missing module; not verified and not installed: pass them in requirements to try"`
	// NotRun marks a result whose code never ran (its requirements failed
	// to install); it is returned as a result only to carry the advice.
	NotRun bool `json:"not_run,omitempty" jsonschema:"true when the code did not run because its requirements failed to install"`
	// Persisted are the run's new output/ files kept in the artifact store
	// (--persist-outputs).
	Persisted     []artifactstore.Artifact `json:"persisted,omitempty" jsonschema:"the run's new or changed output/ files, kept in the server's artifact store"`
	PersistErrors []string                 `json:"persist_errors,omitempty" jsonschema:"output/ files that could not be kept in the artifact store, and why"`
	// Stateful runs (state): what became of the state, and the session's states.
	State           string      `json:"state,omitempty" jsonschema:"the state the code ran in"`
	StateRolledBack *bool       `json:"state_rolled_back,omitempty" jsonschema:"true when the call failed and the state was left exactly as it was before it; false when the state kept the call's changes"`
	StateWarnings   []string    `json:"state_warnings,omitempty" jsonschema:"what a fork of the state cannot carry: threads left running, open files and sockets"`
	States          []StateInfo `json:"states,omitempty" jsonschema:"the session's live states, with age and memory"`
	// Background runs (background, get_run, cancel_run).
	RunID  string `json:"run_id,omitempty" jsonschema:"the background run's id, for get_run and cancel_run"`
	Status string `json:"status,omitempty" jsonschema:"a background run's status: running (with the output so far), or done (with the final result's fields)"`
}

func (s *Server) runCode(ctx context.Context, req *sdk.CallToolRequest, in RunInput) (*sdk.CallToolResult, *RunOutput, error) {
	if resuming(req) {
		return s.resumeWithFix(req)
	}
	r, err := s.runRequest(in)
	if err != nil {
		return nil, nil, err
	}
	sess, err := s.session(req.Session)
	if err != nil {
		return nil, nil, err
	}
	if in.Background {
		return s.startBackground(ctx, sess, r)
	}
	ctx, done, err := s.track(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer done()

	prog := newProgress(ctx, req, s.cfg.Heartbeat)
	defer prog.stop()
	r.Status, r.Stdout, r.Stderr = prog.status, prog.stream("stdout"), prog.stream("stderr")
	watched := sess.subs.stamps(sess.Workspace())
	res, err := sess.Run(ctx, r)
	if err != nil {
		return s.notRun(ctx, req, sess, r, err)
	}
	var stored persisted
	if s.cfg.PersistOutputs && s.cfg.Artifacts != nil && !res.Cancelled {
		stored = s.persistOutputs(ctx, sess, res.Artifacts, prog.status)
	}
	prog.stop()

	out := runOutput(res)
	out.Persisted, out.PersistErrors = stored.artifacts, stored.errors
	s.notifyUpdated(ctx, sess, watched)
	files := s.fileContent(sess.Workspace(), out.Artifacts, req.ProtocolVersion())
	result := textResult(summary(out, res))
	if t := stored.text(s.cfg.Artifacts); t != "" {
		result.Content = append(result.Content, &sdk.TextContent{Text: t})
	}
	result.Content = append(result.Content, files...)
	result.IsError = out.ExitCode != 0 || out.TimedOut || out.Cancelled
	if s.cfg.SampleFixes && out.ExitCode != 0 && !out.TimedOut && !out.Cancelled {
		return s.withFix(ctx, req, sess, fixRequest(in.Code, out), result, out)
	}
	return result, out, nil
}

// runRequest checks what the schema cannot and turns run_code's arguments
// into the session's request, before any session or workspace exists.
func (s *Server) runRequest(in RunInput) (session.Request, error) {
	if strings.TrimSpace(in.Code) == "" {
		return session.Request{}, errors.New("code is empty: pass a complete Python program in \"code\"")
	}
	if in.TimeoutS < 0 {
		return session.Request{}, fmt.Errorf("timeout_s %g is negative", in.TimeoutS)
	}
	if in.ForkFrom != "" && in.State == "" {
		return session.Request{}, errors.New("fork_from needs state: the name of the new state to start as a copy")
	}
	r := session.Request{
		Code:         in.Code,
		Timeout:      time.Duration(in.TimeoutS * float64(time.Second)),
		Requirements: in.Requirements,
		Python:       strings.TrimSpace(in.Python),
		State:        in.State,
		ForkFrom:     in.ForkFrom,
	}
	for _, f := range in.Files {
		target, err := f.target()
		if err != nil {
			return session.Request{}, fmt.Errorf("files: %w; the code was not run", err)
		}
		r.Files = append(r.Files, session.Fetch{URL: f.URL, Path: target})
	}
	return r, s.rt.Check(r)
}

// notRun answers a run that never started (err from Session.Run): the
// error for the model, with the client's model asked which requirements to
// use when an install failed and it can be asked.
func (s *Server) notRun(ctx context.Context, req *sdk.CallToolRequest, sess *client, r session.Request, err error) (*sdk.CallToolResult, *RunOutput, error) {
	terr := s.toolError("run_code", err)
	if ie := installAdvised(err); ie != nil && s.cfg.SampleFixes && canSample(req) {
		result, out := notRunResult(terr.Error(), r.Requirements)
		return s.withFix(ctx, req, sess, installAdviceRequest(r.Code, r.Requirements, ie), result, out)
	}
	return nil, nil, terr
}

// runOutput is run_code's structured result for res.
func runOutput(res *session.Result) *RunOutput {
	out := &RunOutput{
		ExitCode:      res.ExitCode,
		Signal:        res.Signal,
		Limit:         res.Limit,
		Stdout:        res.Stdout.Text,
		Stderr:        res.Stderr.Text,
		StdoutBytes:   res.Stdout.Total,
		StderrBytes:   res.Stderr.Total,
		StdoutLog:     res.Stdout.Log,
		StderrLog:     res.Stderr.Log,
		StdoutLogNote: res.Stdout.LogNote,
		StderrLogNote: res.Stderr.LogNote,
		TimedOut:      res.TimedOut,
		Cancelled:     res.Cancelled,
		DurationMS:    res.Duration.Milliseconds(),
		Truncated:     res.Stdout.Truncated || res.Stderr.Truncated,
		Artifacts:     []Artifact{},
		Isolation:     string(res.Tier),
		Warm:          res.Warm,
		Python:        res.Python.Version,
		Requirements:  res.Requirements,
		EnvCached:     res.EnvCached,
		Hint:          res.Hint,
	}
	for _, e := range res.Artifacts {
		out.Artifacts = append(out.Artifacts, Artifact{Path: e.Path, Size: e.Size, MIME: e.MIME, URI: resourceURI(e.Path)})
	}
	if st := res.State; st != nil {
		out.State, out.StateRolledBack, out.StateWarnings = st.Name, ptr(!st.Committed), st.Warnings
		out.States = stateInfos(st.States)
	}
	return out
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
		if err != nil {
			return
		}
		sess.Prewarm(s.base)
	}()
}

// prewarmDelay bounds how long Prewarm waits for the client to initialize.
const prewarmDelay = 100 * time.Millisecond

// summary is the text the model reads: what happened, then the streams.
func summary(o *RunOutput, res *session.Result) string {
	var b strings.Builder
	switch {
	case o.TimedOut:
		fmt.Fprintf(&b, "Timed out after %s: the process tree was killed.", res.Timeout)
	case o.Cancelled:
		b.WriteString("Cancelled: the process tree was killed.")
	case o.Signal != "":
		fmt.Fprintf(&b, "Killed by signal %s (exit code %d) after %d ms.", o.Signal, o.ExitCode, o.DurationMS)
	default:
		fmt.Fprintf(&b, "Exit code %d after %d ms.", o.ExitCode, o.DurationMS)
	}
	fmt.Fprintf(&b, " Isolation: %s.\n", o.Isolation)
	for _, n := range res.Notes {
		fmt.Fprintf(&b, "Note: %s.\n", n)
	}
	stream := func(name string, st session.Stream) {
		text, total, log, logNote := st.Text, st.Total, st.Log, st.LogNote
		if total == 0 {
			return
		}
		fmt.Fprintf(&b, "\n--- %s", name)
		// Cut in the middle, or shortened where invalid UTF-8 was replaced.
		if st.Truncated || int64(len(text)) < total {
			if logNote != "" {
				fmt.Fprintf(&b, " (%s in all; %s is not complete: %s)", human.Bytes(total), log, logNote)
			} else {
				fmt.Fprintf(&b, " (%s in all; complete in %s)", human.Bytes(total), log)
			}
		}
		b.WriteString(" ---\n")
		b.WriteString(text)
		if !strings.HasSuffix(text, "\n") {
			b.WriteString("\n")
		}
	}
	stream("stdout", res.Stdout)
	stream("stderr", res.Stderr)
	if o.StdoutBytes == 0 && o.StderrBytes == 0 {
		b.WriteString("(no output)\n")
	}
	if len(o.Artifacts) > 0 {
		b.WriteString("\nFiles written to output/:\n")
		for _, a := range o.Artifacts {
			fmt.Fprintf(&b, "  %s (%s, %s)", shownName(a.Path), human.Bytes(a.Size), a.MIME)
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
