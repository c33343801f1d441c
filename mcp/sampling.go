package mcp

//lint:file-ignore SA1019 Sampling is deprecated from protocol 2026-07-28 (SEP-2577) but works through the deprecation window (twelve months or more); --sample-fixes, which alone uses it, is opt-in.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/human"
)

// Fix suggestions (--sample-fixes): when a run fails and the client supports
// sampling, PRIMS asks the client's model for a short fix and returns it
// beside the error.
//
// On protocol 2026-07-28 and later a server may not send requests of its
// own, so the tool result carries the sampling request as an input request
// (SEP-2322): the first tools/call runs the code and answers "input
// required"; the client asks its model and calls again with the answer and
// the request state; the second call returns the stored result with the
// suggestion, without running the code again.
//
// On older protocols the SDK would fulfil such input requests itself, but a
// declined or failed sampling request would then fail the whole tools/call
// and lose the run's result, and nothing would bound the wait. So there
// PRIMS sends sampling/createMessage directly, with a time limit, and
// returns the result without a suggestion if anything goes wrong.
const (
	fixInputID   = "fix"            // the input request's ID
	fixTimeout   = 90 * time.Second // how long an older-protocol client may take to answer
	fixStateTTL  = 10 * time.Minute // how long a stored result waits for the client's second call
	maxFixStates = 64
	maxFixChars  = 2000
)

// fixStore keeps failed runs' results until the client comes back with its
// model's suggestion. The request state is an unguessable token into it, so
// the state the client echoes needs no signing.
type fixStore struct {
	mu sync.Mutex
	m  map[string]*pendingFix
}

type pendingFix struct {
	sess    *client
	res     *sdk.CallToolResult
	out     *RunOutput
	expires time.Time
}

func (st *fixStore) put(p *pendingFix) string {
	var b [16]byte
	rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.m == nil {
		st.m = map[string]*pendingFix{}
	}
	now := time.Now()
	for k, v := range st.m {
		if now.After(v.expires) {
			delete(st.m, k)
		}
	}
	// Under a flood of calls whose clients never come back, drop the entry
	// closest to expiry.
	for len(st.m) >= maxFixStates {
		var oldest string
		for k, v := range st.m {
			if oldest == "" || v.expires.Before(st.m[oldest].expires) {
				oldest = k
			}
		}
		delete(st.m, oldest)
	}
	p.expires = now.Add(fixStateTTL)
	st.m[token] = p
	return token
}

// take removes and returns the entry for token if it belongs to sess.
func (st *fixStore) take(token string, sess *client) *pendingFix {
	st.mu.Lock()
	defer st.mu.Unlock()
	p := st.m[token]
	if p == nil || p.sess != sess || time.Now().After(p.expires) {
		return nil
	}
	delete(st.m, token)
	return p
}

// resuming reports whether a tools/call is the second round of a
// multi-round-trip call.
func resuming(req *sdk.CallToolRequest) bool {
	return req.Params != nil && (req.Params.RequestState != "" || req.Params.InputResponses != nil)
}

// usesInputRequests reports whether the session's protocol forbids
// server-initiated requests, as the SDK decides it.
func usesInputRequests(ss *sdk.ServerSession) bool {
	v := "2026-07-28"
	if p := ss.InitializeParams(); p != nil && p.ProtocolVersion != "" {
		v = p.ProtocolVersion
	}
	return v >= "2026-07-28"
}

// canSample reports whether the client of req can answer sampling.
func canSample(req *sdk.CallToolRequest) bool {
	caps := req.ClientCapabilities()
	return caps != nil && caps.Sampling != nil && req.Session != nil
}

// withFix asks for a fix suggestion for a failed run, or returns the result
// unchanged when the client cannot sample.
// params is the request: fixRequest, or installAdviceRequest for code that
// did not run.
func (s *Server) withFix(ctx context.Context, req *sdk.CallToolRequest, sess *client, params *sdk.CreateMessageParams, res *sdk.CallToolResult, out *RunOutput) (*sdk.CallToolResult, *RunOutput, error) {
	if !canSample(req) {
		return res, out, nil
	}
	if usesInputRequests(req.Session) {
		token := s.fixes.put(&pendingFix{sess: sess, res: res, out: out})
		return &sdk.CallToolResult{
			InputRequests: sdk.InputRequestMap{fixInputID: params},
			RequestState:  token,
		}, nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, fixTimeout)
	defer cancel()
	//lint:ignore SA1019 sampling is deprecated from 2026-07-28 on; this path serves older protocols.
	r, err := req.Session.CreateMessage(ctx, params)
	if err != nil {
		s.log.Debug("fix suggestion", "err", err)
		return res, out, nil
	}
	addFix(res, out, contentText(r.Content))
	return res, out, nil
}

// resumeWithFix answers the second round of a multi-round-trip run_code:
// the stored result, with the client model's suggestion when there is one.
func (s *Server) resumeWithFix(req *sdk.CallToolRequest) (*sdk.CallToolResult, *RunOutput, error) {
	sess, err := s.session(req.Session)
	if err != nil {
		return nil, nil, err
	}
	p := s.fixes.take(req.Params.RequestState, sess)
	if p == nil {
		return nil, nil, errors.New("the result of this run_code call is no longer available (it waits 10 minutes for the client's answer). The code did run; its files are in the workspace. Call run_code again to see its output")
	}
	var text string
	switch r := req.Params.InputResponses[fixInputID].(type) {
	case *sdk.CreateMessageResult:
		text = contentText(r.Content)
	case *sdk.CreateMessageWithToolsResult:
		for _, c := range r.Content {
			if t := contentText(c); t != "" {
				text = t
				break
			}
		}
	}
	addFix(p.res, p.out, text)
	return p.res, p.out, nil
}

func contentText(c sdk.Content) string {
	if t, ok := c.(*sdk.TextContent); ok {
		return strings.TrimSpace(t.Text)
	}
	return ""
}

func addFix(res *sdk.CallToolResult, out *RunOutput, text string) {
	if text == "" {
		return
	}
	if r := []rune(text); len(r) > maxFixChars {
		text = string(r[:maxFixChars]) + " [...]"
	}
	out.FixSuggestion = text
	res.Content = append(res.Content, &sdk.TextContent{
		Text: "Suggested fix (from the client's model via sampling; not verified by running it):\n" + text,
	})
	addAdvice(res, out, text)
}

// fixRequest is the sampling request: the program, the end of its error
// output and PRIMS' hint, with a request for a short answer.
func fixRequest(code string, out *RunOutput) *sdk.CreateMessageParams {
	var b strings.Builder
	b.WriteString("This Python program failed in PRIMS, a sandbox where each run is a fresh python3 process in a workspace directory (inputs under mounts/, results written to output/, third-party packages declared in run_code's requirements).\n\n")
	fmt.Fprintf(&b, "Program:\n```python\n%s\n```\n\n", human.Tail(code, 8<<10))
	fmt.Fprintf(&b, "Exit code %d. End of stderr:\n```\n%s\n```\n", out.ExitCode, human.Tail(out.Stderr, 3<<10))
	if out.Hint != "" {
		fmt.Fprintf(&b, "\nPRIMS' hint: %s\n", out.Hint)
	}
	b.WriteString("\nIn at most five sentences, or a short code change, say how to fix it.")
	if missingModule.MatchString(out.Stderr) {
		// Install advice: the model names the requirements too.
		b.WriteString(" " + adviceAsk)
	}
	return &sdk.CreateMessageParams{
		SystemPrompt:   "You review failed Python runs for a coding agent. Answer with the fix only: no preamble, no restating the error.",
		Messages:       []*sdk.SamplingMessage{{Role: "user", Content: &sdk.TextContent{Text: b.String()}}},
		MaxTokens:      400,
		IncludeContext: "none",
		ModelPreferences: &sdk.ModelPreferences{
			SpeedPriority:        0.8,
			IntelligencePriority: 0.5,
		},
	}
}
