package mcp

import (
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/sandbox"
)

// TestRunHints runs failing programs for real, so the hints are checked
// against the tracebacks this Python actually prints.
func TestRunHints(t *testing.T) {
	_, cs := startContent(t, Config{MaxTimeout: time.Minute}, nil, "")
	tests := []struct {
		name string
		args map[string]any
		want []string
	}{
		{"missing module", map[string]any{"code": "import os\nfrom sklearn.linear_model import LinearRegression\n"},
			[]string{`module "sklearn" is not installed`, `Add "scikit-learn" to run_code's requirements`}},
		{"several missing modules", map[string]any{"code": "import cv2\nimport numpy as np\nimport json\n"},
			[]string{`Add "opencv-python"`, `this program's imports need requirements: ["numpy","opencv-python"]`}},
		{"missing module, same pip name", map[string]any{"code": "import nosuchpkg_xyz\n"},
			[]string{`Add "nosuchpkg_xyz" to run_code's requirements and run again (requirements: ["nosuchpkg_xyz"]).`}},
		{"syntax error", map[string]any{"code": "x = 1\nprint((x)\n"},
			[]string{"SyntaxError at line 2 (`print((x)`)", "Nothing ran"}},
		{"indentation", map[string]any{"code": "def f():\nreturn 1\n"},
			[]string{"IndentationError at line 2 (`return 1`)"}},
		{"name error", map[string]any{"code": "total = 0\nfor i in range(3):\n    total += i\nprint(df.head())\n"},
			[]string{"NameError at line 4 (`print(df.head())`)", "name 'df' is not defined", "fresh Python process"}},
		{"error in a function", map[string]any{"code": "def f(d):\n    return d['k']\n\nf({})\n"},
			[]string{"KeyError at line 2 (`return d['k']`)"}},
		{"missing input", map[string]any{"code": "open('mounts/sales.csv')\n"},
			[]string{"FileNotFoundError at line 1", "list_dir"}},
		{"timeout", map[string]any{"code": "while True:\n    pass\n", "timeout_s": 0.5},
			[]string{"wall-clock limit of 500ms ended the run", "larger timeout_s (at most 60)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, out := callRun(t, cs, tt.args)
			if !res.IsError {
				t.Fatalf("run did not fail:\n%s", resultText(res))
			}
			for _, w := range tt.want {
				if !strings.Contains(out.Hint, w) {
					t.Errorf("hint %q lacks %q\nstderr: %s", out.Hint, w, out.Stderr)
				}
			}
			if !strings.Contains(resultText(res), "Hint: "+out.Hint) {
				t.Errorf("the summary does not carry the hint:\n%s", resultText(res))
			}
		})
	}
}

// TestLimitHintsEndToEnd: a run ended by each limit reaches the client,
// through run_code, with that limit in the result's typed field and a hint
// that names it and no other, although most of them end the program with
// the same SIGKILL.
func TestLimitHintsEndToEnd(t *testing.T) {
	if best := sandbox.Probe().Best; best == sandbox.TierNone {
		testenv.Skip(t, testenv.Landlock, "the limits need a sandbox tier: %s", sandbox.Probe().Missing())
	}
	limits := sandbox.Limits{Memory: 256 << 20, CPUTime: time.Second, MaxProcs: 32, WorkspaceQuota: 32 << 20, MaxFileSize: 16 << 20}
	tests := []struct {
		name  string
		code  string
		limit string
		want  string
	}{
		{"cpu time", "while True:\n    pass\n", sandbox.LimitCPUTime, "CPU-time limit of 1s"},
		// Five processes of 120 MiB each: every one under the limit,
		// together over it.
		{"memory", "import os, time\nfor i in range(5):\n    if os.fork() == 0:\n        x = b'x' * (120 << 20)\n        time.sleep(60)\n        os._exit(0)\ntime.sleep(60)\n", sandbox.LimitMemory, "memory limit of 256.0 MiB"},
		{"max procs", "import os, time\nwhile True:\n    if os.fork() == 0:\n        time.sleep(60)\n        os._exit(0)\n", sandbox.LimitMaxProcs, "processes and threads"},
		{"wall time", "import time\ntime.sleep(60)\n", sandbox.LimitWallTime, "wall-clock limit"},
		// Last: its files stay in the session's workspace.
		{"workspace quota", "chunk = b'x' * (4 << 20)\nfor i in range(1000):\n    open('output/f%d' % i, 'wb').write(chunk)\n", sandbox.LimitWorkspaceQuota, "workspace quota of 32.0 MiB"},
	}
	others := map[string]string{
		sandbox.LimitWorkspaceQuota: "workspace quota", sandbox.LimitCPUTime: "CPU-time", sandbox.LimitMemory: "memory limit",
		sandbox.LimitMaxProcs: "processes and threads", sandbox.LimitWallTime: "wall-clock",
	}
	check := func(t *testing.T, cs *sdk.ClientSession, code, limit, want string) {
		args := map[string]any{"code": code}
		if limit == sandbox.LimitWallTime {
			args["timeout_s"] = 1
		}
		res, out := callRun(t, cs, args)
		if !res.IsError || out.Limit != limit {
			t.Fatalf("limit %q, want %q (error %v, exit %d %s)\n%s", out.Limit, limit, res.IsError, out.ExitCode, out.Signal, resultText(res))
		}
		if !strings.Contains(out.Hint, want) {
			t.Errorf("hint %q lacks %q", out.Hint, want)
		}
		for l, n := range others {
			if l != limit && strings.Contains(out.Hint, n) {
				t.Errorf("hint %q names %q", out.Hint, n)
			}
		}
		if !strings.Contains(resultText(res), "Hint: "+out.Hint) {
			t.Errorf("the summary does not carry the hint:\n%s", resultText(res))
		}
	}
	runner, err := sandbox.New(sandbox.Config{Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(runner.Close)
	_, cs := serveWith(t, Config{MaxTimeout: time.Minute, DefaultTimeout: 20 * time.Second}, runner, nil, "")
	for _, tt := range tests {
		t.Run(tt.name+"/"+string(runner.MemoryEnforcement()), func(t *testing.T) {
			check(t, cs, tt.code, tt.limit, tt.want)
		})
	}
	// The memory limit once more, enforced by accounting rather than the
	// cgroup a root server gets here.
	t.Run("memory/accounting", func(t *testing.T) {
		runner, err := sandbox.New(sandbox.Config{Limits: limits, Memory: sandbox.MemoryAccounting})
		if err != nil {
			testenv.Skip(t, testenv.Proc, "no accounting of processes here: %v", err)
		}
		t.Cleanup(runner.Close)
		_, cs := serveWith(t, Config{MaxTimeout: time.Minute, DefaultTimeout: 20 * time.Second}, runner, nil, "")
		if tests[1].limit != sandbox.LimitMemory {
			t.Fatal("tests[1] is no longer the memory case")
		}
		check(t, cs, tests[1].code, sandbox.LimitMemory, "memory limit of 256.0 MiB ended the run: it counts the run's processes together")
	})
}

func TestPythonProgrammerPrompt(t *testing.T) {
	_, cs := startContent(t, Config{}, nil, "")
	res, err := cs.GetPrompt(t.Context(), &sdk.GetPromptParams{Name: "python_programmer", Arguments: map[string]string{
		"task":  "Chart monthly revenue",
		"files": "mounts/sales.csv, https://example.com/q3.csv",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Messages) != 1 {
		t.Fatalf("%d messages, want 1", len(res.Messages))
	}
	text := res.Messages[0].Content.(*sdk.TextContent).Text
	for _, want := range []string{
		"Chart monthly revenue",
		"- mounts/sales.csv (read-only",
		"- https://example.com/q3.csv: not mounted yet",
		"fresh Python process",
		"under output/",
		"requirements",
		"print()",
		"plt.show()",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("prompt lacks %q:\n%s", want, text)
		}
	}
	if _, err := cs.GetPrompt(t.Context(), &sdk.GetPromptParams{Name: "python_programmer", Arguments: map[string]string{}}); err == nil {
		t.Error("a prompt without a task gave no error")
	}
}
