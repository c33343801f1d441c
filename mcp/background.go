package mcp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/session"
)

// maxGetRunWait bounds get_run's wait_s: its answer must come back before
// the client gives up on the request (60 s in the TypeScript SDK).
const maxGetRunWait = 50 * time.Second

// startBackground starts r as a background run of sess: the run outlives
// this request (it ends by itself, by cancel_run, or with the session or
// the server), and progress notifications, which belong to the request,
// are not sent.
func (s *Server) startBackground(ctx context.Context, sess *client, r session.Request) (*sdk.CallToolResult, *RunOutput, error) {
	bctx, done, err := s.track(context.WithoutCancel(ctx))
	if err != nil {
		return nil, nil, err
	}
	id, err := sess.Start(bctx, r, done)
	if err != nil {
		return nil, nil, s.toolError("run_code", err)
	}
	out := &RunOutput{RunID: id, Status: "running", Artifacts: []Artifact{}, Requirements: []string{}, State: r.State}
	text := fmt.Sprintf("Started in the background as run_id %q. Call get_run with this run_id (and wait_s up to %d) for its output so far or its final result; cancel_run stops it. It keeps every limit of a run, its timeout included.", id, int(maxGetRunWait.Seconds()))
	return textResult(text), out, nil
}

// GetRunInput is what get_run accepts.
type GetRunInput struct {
	RunID string  `json:"run_id" jsonschema:"the run_id run_code returned for a background run"`
	WaitS float64 `json:"wait_s,omitempty" jsonschema:"seconds to wait for the run to end before answering (0: answer at once; at most 50)"`
}

// CancelRunInput is what cancel_run accepts.
type CancelRunInput struct {
	RunID string `json:"run_id" jsonschema:"the run_id of the background run to stop"`
}

func (s *Server) getRun(ctx context.Context, req *sdk.CallToolRequest, in GetRunInput) (*sdk.CallToolResult, *RunOutput, error) {
	if in.RunID == "" {
		return nil, nil, errors.New("run_id is empty: pass the run_id run_code returned")
	}
	if in.WaitS < 0 {
		return nil, nil, fmt.Errorf("wait_s %g is negative", in.WaitS)
	}
	sess, err := s.session(req.Session)
	if err != nil {
		return nil, nil, err
	}
	b, err := sess.Poll(ctx, in.RunID, min(time.Duration(in.WaitS*float64(time.Second)), maxGetRunWait))
	if err != nil {
		return nil, nil, s.toolError("get_run", err)
	}
	return s.backgroundResult(ctx, req, sess, b)
}

func (s *Server) cancelRun(ctx context.Context, req *sdk.CallToolRequest, in CancelRunInput) (*sdk.CallToolResult, *RunOutput, error) {
	if in.RunID == "" {
		return nil, nil, errors.New("run_id is empty: pass the run_id run_code returned")
	}
	sess, err := s.session(req.Session)
	if err != nil {
		return nil, nil, err
	}
	b, err := sess.Cancel(ctx, in.RunID, maxGetRunWait)
	if err != nil {
		return nil, nil, s.toolError("cancel_run", err)
	}
	return s.backgroundResult(ctx, req, sess, b)
}

// backgroundResult renders a background run: the final result as run_code
// renders one, or the output so far.
func (s *Server) backgroundResult(ctx context.Context, req *sdk.CallToolRequest, sess *client, b *session.Background) (*sdk.CallToolResult, *RunOutput, error) {
	if !b.Running {
		if b.Err != nil {
			return nil, nil, s.toolError("run_code", b.Err)
		}
		out := runOutput(b.Result)
		out.RunID, out.Status = b.ID, "done"
		files := s.fileContent(sess.Workspace(), out.Artifacts, req.ProtocolVersion())
		result := textResult(summary(out, b.Result))
		result.Content = append(result.Content, files...)
		result.IsError = out.ExitCode != 0 || out.TimedOut || out.Cancelled
		return result, out, nil
	}
	out := &RunOutput{
		RunID:       b.ID,
		Status:      "running",
		Stdout:      b.Stdout.Text,
		Stderr:      b.Stderr.Text,
		StdoutBytes: b.Stdout.Total,
		StderrBytes: b.Stderr.Total,
		DurationMS:  b.Elapsed.Milliseconds(),
		Truncated:   b.Stdout.Truncated || b.Stderr.Truncated,
		Artifacts:   []Artifact{},
	}
	var t strings.Builder
	fmt.Fprintf(&t, "Still running after %s (run_id %q): call get_run again with wait_s for the result, or cancel_run to stop it.\n", b.Elapsed.Round(time.Second), b.ID)
	for _, st := range []struct{ name, text string }{{"stdout so far", out.Stdout}, {"stderr so far", out.Stderr}} {
		if st.text != "" {
			fmt.Fprintf(&t, "\n--- %s ---\n%s", st.name, st.text)
			if !strings.HasSuffix(st.text, "\n") {
				t.WriteString("\n")
			}
		}
	}
	return textResult(t.String()), out, nil
}

func (s *Server) addBackground() {
	sdk.AddTool(s.sdk, &sdk.Tool{
		Name:  "get_run",
		Title: "Follow a background run",
		Description: `Wait up to wait_s seconds (at most 50) for a run started with run_code's background: true. Returns status "running" with the output so far, or status "done" with the run's final result (the same fields as run_code's).
Call it again while the status is running: this is how a job longer than the client's request timeout is followed.`,
		Annotations: &sdk.ToolAnnotations{Title: "Follow a background run", ReadOnlyHint: true, OpenWorldHint: ptr(false)},
	}, s.getRun)
	sdk.AddTool(s.sdk, &sdk.Tool{
		Name:        "cancel_run",
		Title:       "Stop a background run",
		Description: `Stop a run started with run_code's background: true: its whole process tree is killed (a run on a state is rolled back). Returns its final result with what it printed.`,
		Annotations: &sdk.ToolAnnotations{Title: "Stop a background run", DestructiveHint: ptr(true), IdempotentHint: true, OpenWorldHint: ptr(false)},
	}, s.cancelRun)
}
