package mcp

//lint:file-ignore SA1019 Sampling is deprecated from protocol 2026-07-28 (SEP-2577) but works through the deprecation window (twelve months or more); --sample-fixes, which alone uses it, is opt-in.

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/workspace/pythonenv"
	"github.com/prims-mcp/prims/workspace/pythonenv/pythonenvtest"
)

// TestInstallAdvice: with --sample-fixes, a requirement pip cannot find
// asks the client's model (an SDK client answering sampling) which
// requirements to use; the answer comes back parsed and marked unverified,
// and nothing is installed on its word. A ModuleNotFoundError asks for the
// requirements line too. A client without sampling gets today's error.
func TestInstallAdvice(t *testing.T) {
	ix := pythonenvtest.NewIndex(t, pythonenvtest.Package{Name: "realpkg", Version: "1.0", Files: map[string]string{"realpkg/__init__.py": "X = 1\n"}})
	envs, err := pythonenv.New(pythonenv.Options{Dir: t.TempDir(), IndexURL: ix.URL, InstallTimeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{SampleFixes: true, Envs: envs}
	const answer = "The project is published as realpkg.\nrequirements: realpkg>=1.0, --index-url=http://evil/, numpy<2,>=1.20"
	want := []string{"realpkg>=1.0", "numpy<2,>=1.20"}

	for _, v := range contentProtocols {
		t.Run(v+"/failed install", func(t *testing.T) {
			smp := &sampler{answer: answer}
			_, cs := startContent(t, cfg, &sdk.ClientOptions{CreateMessageHandler: smp.handle}, v)
			res, out := callRun(t, cs, map[string]any{"code": "import realpkg", "requirements": []string{"real-pkgg"}})
			if !res.IsError || !out.NotRun || smp.calls.Load() != 1 {
				t.Fatalf("isError=%v not_run=%v, %d sampling requests; want an error result, the code not run, one request\n%s", res.IsError, out.NotRun, smp.calls.Load(), resultText(res))
			}
			prompt, _ := smp.prompt.Load().(string)
			for _, w := range []string{"real-pkgg", "not_found", "import realpkg", "requirements:"} {
				if !strings.Contains(prompt, w) {
					t.Errorf("prompt lacks %q:\n%s", w, prompt)
				}
			}
			if diff := cmp.Diff(want, out.SuggestedRequirements); diff != "" {
				t.Errorf("suggested_requirements (-want +got):\n%s", diff)
			}
			text := resultText(res)
			for _, w := range []string{"installing requirements failed (not_found)", "not verified", "realpkg>=1.0"} {
				if !strings.Contains(text, w) {
					t.Errorf("result text lacks %q:\n%s", w, text)
				}
			}
			if n := ix.Pages("realpkg"); n != 0 {
				t.Errorf("the suggestion was installed (%d index pages for realpkg)", n)
			}
		})
		t.Run(v+"/missing module", func(t *testing.T) {
			smp := &sampler{answer: "Declare it.\nrequirements: realpkg"}
			_, cs := startContent(t, cfg, &sdk.ClientOptions{CreateMessageHandler: smp.handle}, v)
			res, out := callRun(t, cs, map[string]any{"code": "import realpkg"})
			prompt, _ := smp.prompt.Load().(string)
			if !res.IsError || out.ExitCode != 1 || !strings.Contains(prompt, "requirements:") {
				t.Fatalf("isError=%v exit=%d; prompt:\n%s", res.IsError, out.ExitCode, prompt)
			}
			if diff := cmp.Diff([]string{"realpkg"}, out.SuggestedRequirements); diff != "" {
				t.Errorf("suggested_requirements (-want +got):\n%s", diff)
			}
		})
		t.Run(v+"/client without sampling", func(t *testing.T) {
			_, cs := startContent(t, cfg, nil, v)
			res, out := callRun(t, cs, map[string]any{"code": "import realpkg", "requirements": []string{"real-pkgg"}})
			if !res.IsError || res.StructuredContent != nil || len(out.SuggestedRequirements) != 0 || !strings.Contains(resultText(res), "installing requirements failed (not_found)") {
				t.Errorf("isError=%v structured %v text:\n%s\nwant today's plain error", res.IsError, res.StructuredContent, resultText(res))
			}
		})
	}
	t.Run("off", func(t *testing.T) {
		smp := &sampler{answer: answer}
		_, cs := startContent(t, Config{Envs: envs}, &sdk.ClientOptions{CreateMessageHandler: smp.handle}, "")
		res, _ := callRun(t, cs, map[string]any{"code": "import realpkg", "requirements": []string{"real-pkgg"}})
		if !res.IsError || smp.calls.Load() != 0 || res.StructuredContent != nil {
			t.Errorf("without --sample-fixes: isError=%v, %d sampling requests, structured %v; want today's plain error", res.IsError, smp.calls.Load(), res.StructuredContent)
		}
	})
}

func TestParseAdvice(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"requirements: pandas, numpy>=1.2,<2", []string{"pandas", "numpy>=1.2,<2"}},
		{"Use this.\n**Requirements:** `opencv-python`", []string{"opencv-python"}},
		{"requirements: requests[socks]==2.31.0", []string{"requests[socks]==2.31.0"}},
		{"requirements: git+https://x/y.git, ./local, -r req.txt, ok", []string{"ok"}},
		{"no line here: pandas", nil},
		{"requirements: " + strings.Repeat("a,", 20), []string{"a", "a", "a", "a", "a", "a", "a", "a", "a", "a"}},
	} {
		if diff := cmp.Diff(tc.want, parseAdvice(tc.in)); diff != "" {
			t.Errorf("parseAdvice(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}
