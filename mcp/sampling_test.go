package mcp

//lint:file-ignore SA1019 Sampling is deprecated from protocol 2026-07-28 (SEP-2577) but works through the deprecation window (twelve months or more); --sample-fixes, which alone uses it, is opt-in.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

const failingCode = "import json\nimport cv2\n"

// sampler is a client's sampling handler that records what it was asked.
type sampler struct {
	calls  atomic.Int32
	prompt atomic.Value // string
	answer string
	err    error
}

func (s *sampler) handle(_ context.Context, req *sdk.CreateMessageRequest) (*sdk.CreateMessageResult, error) {
	s.calls.Add(1)
	if len(req.Params.Messages) > 0 {
		if tc, ok := req.Params.Messages[0].Content.(*sdk.TextContent); ok {
			s.prompt.Store(tc.Text)
		}
	}
	if s.err != nil {
		return nil, s.err
	}
	return &sdk.CreateMessageResult{Role: "assistant", Model: "test-model", Content: &sdk.TextContent{Text: s.answer}}, nil
}

func TestFixSuggestion(t *testing.T) {
	const answer = "Add \"opencv-python\" to requirements."
	for _, v := range contentProtocols {
		t.Run(v+"/client samples", func(t *testing.T) {
			smp := &sampler{answer: answer}
			_, cs := startContent(t, Config{SampleFixes: true}, &sdk.ClientOptions{CreateMessageHandler: smp.handle}, v)

			res, out := callRun(t, cs, map[string]any{"code": "print('fine')"})
			if res.IsError || smp.calls.Load() != 0 {
				t.Fatalf("a successful run: isError=%v, %d sampling requests; want none", res.IsError, smp.calls.Load())
			}

			res, out = callRun(t, cs, map[string]any{"code": failingCode})
			if !res.IsError {
				t.Errorf("failed run not marked isError")
			}
			if smp.calls.Load() != 1 {
				t.Fatalf("%d sampling requests, want 1", smp.calls.Load())
			}
			prompt, _ := smp.prompt.Load().(string)
			for _, want := range []string{"import cv2", "ModuleNotFoundError", "opencv-python"} {
				if !strings.Contains(prompt, want) {
					t.Errorf("sampling prompt lacks %q:\n%s", want, prompt)
				}
			}
			if out.FixSuggestion != answer {
				t.Errorf("fix_suggestion = %q, want %q", out.FixSuggestion, answer)
			}
			if text := resultText(res); !strings.Contains(text, "Suggested fix") || !strings.Contains(text, answer) || !strings.Contains(text, "ModuleNotFoundError") {
				t.Errorf("result text lacks the error or the suggestion:\n%s", text)
			}
		})
		t.Run(v+"/client without sampling", func(t *testing.T) {
			_, cs := startContent(t, Config{SampleFixes: true}, nil, v)
			res, out := callRun(t, cs, map[string]any{"code": failingCode})
			if !res.IsError || out.ExitCode != 1 || out.FixSuggestion != "" || !strings.Contains(out.Hint, "opencv-python") {
				t.Errorf("got isError=%v exit=%d fix=%q hint=%q; want the plain failed result with its hint", res.IsError, out.ExitCode, out.FixSuggestion, out.Hint)
			}
		})
	}
	t.Run("2025-11-25/client declines", func(t *testing.T) {
		smp := &sampler{err: errors.New("user declined")}
		_, cs := startContent(t, Config{SampleFixes: true}, &sdk.ClientOptions{CreateMessageHandler: smp.handle}, "2025-11-25")
		res, out := callRun(t, cs, map[string]any{"code": failingCode})
		if smp.calls.Load() != 1 || !res.IsError || out.FixSuggestion != "" || !strings.Contains(resultText(res), "ModuleNotFoundError") {
			t.Errorf("got %d sampling requests, isError=%v, fix=%q; want the run's own result", smp.calls.Load(), res.IsError, out.FixSuggestion)
		}
	})
	t.Run("off by default", func(t *testing.T) {
		smp := &sampler{answer: answer}
		_, cs := startContent(t, Config{}, &sdk.ClientOptions{CreateMessageHandler: smp.handle}, "")
		if _, out := callRun(t, cs, map[string]any{"code": failingCode}); smp.calls.Load() != 0 || out.FixSuggestion != "" {
			t.Errorf("without SampleFixes: %d sampling requests, fix %q", smp.calls.Load(), out.FixSuggestion)
		}
	})
}

// TestFixInputRequests drives the 2026-07-28 multi-round-trip by hand, as a
// client without the SDK's automatic handling would: the first call runs
// the code and asks for input, the second returns the stored result, and the
// code never runs twice.
func TestFixInputRequests(t *testing.T) {
	srv, cs := startContent(t, Config{SampleFixes: true}, &sdk.ClientOptions{
		CreateMessageHandler: (&sampler{}).handle, // advertises sampling
		MultiRoundTrip:       &sdk.MultiRoundTripOptions{Disabled: true},
	}, "2026-07-28")
	params := &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{
		"code": "open('output/runs.txt', 'a').write('run\\n')\n" + failingCode,
	}}
	first, err := cs.CallTool(t.Context(), params)
	if err != nil {
		t.Fatal(err)
	}
	if !first.NeedsInput() || len(first.Content) != 0 || first.RequestState == "" {
		t.Fatalf("first round: needsInput=%v, %d content blocks, state %q; want an input-required result", first.NeedsInput(), len(first.Content), first.RequestState)
	}
	if _, ok := first.InputRequests[fixInputID].(*sdk.CreateMessageWithToolsParams); !ok {
		t.Fatalf("input requests = %#v, want a sampling request %q", first.InputRequests, fixInputID)
	}

	retry := &sdk.CallToolParams{
		Name:      "run_code",
		Arguments: params.Arguments,
		InputResponses: sdk.InputResponseMap{fixInputID: &sdk.CreateMessageResult{
			Role: "assistant", Model: "m", Content: &sdk.TextContent{Text: "pip name is opencv-python"},
		}},
		RequestState: first.RequestState,
	}
	second, err := cs.CallTool(t.Context(), retry)
	if err != nil {
		t.Fatal(err)
	}
	if second.NeedsInput() || !second.IsError || !strings.Contains(resultText(second), "pip name is opencv-python") || !strings.Contains(resultText(second), "ModuleNotFoundError") {
		t.Errorf("second round: needsInput=%v isError=%v text:\n%s", second.NeedsInput(), second.IsError, resultText(second))
	}

	// The state is single-use: a replay gets an error, not a second run.
	third, err := cs.CallTool(t.Context(), retry)
	if err != nil {
		t.Fatal(err)
	}
	if !third.IsError || !strings.Contains(resultText(third), "no longer available") {
		t.Errorf("replayed state: isError=%v text %q", third.IsError, resultText(third))
	}
	runs, _ := os.ReadFile(filepath.Join(srv.Workspace(), "output", "runs.txt"))
	if string(runs) != "run\n" {
		t.Errorf("the code ran %d times, want once", strings.Count(string(runs), "run"))
	}
}
