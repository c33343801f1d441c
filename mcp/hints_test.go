package mcp

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/sandbox/pyenv"
	"github.com/prims-mcp/prims/workspace"
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

func TestSignalAndLimitHints(t *testing.T) {
	s := &Server{cfg: Config{MaxTimeout: time.Minute}}
	tests := []struct {
		name string
		out  RunOutput
		want string
	}{
		{"ok", RunOutput{}, ""},
		{"cancelled", RunOutput{Cancelled: true, ExitCode: -9, Signal: "killed"}, ""},
		{"cpu", RunOutput{ExitCode: -24, Signal: "CPU time limit exceeded"}, "CPU-time limit"},
		{"fsize", RunOutput{ExitCode: -25, Signal: "file size limit exceeded"}, "file-size limit"},
		{"oom kill", RunOutput{ExitCode: -9, Signal: "killed"}, "memory limit"},
		{"timeout at max", RunOutput{TimedOut: true, ExitCode: -9, Signal: "killed"}, "server's maximum timeout"},
		{"MemoryError", RunOutput{ExitCode: 1, Stderr: "Traceback (most recent call last):\n  File \"<code>\", line 1, in <module>\nMemoryError\n"}, "MemoryError at line 1 (`x = [0] * 10**12`): the program hit the memory limit"},
		{"read-only mounts", RunOutput{ExitCode: 1, Stderr: "  File \"<code>\", line 1, in <module>\nOSError: [Errno 30] Read-only file system: 'mounts/a.csv'\n"}, "mounts/ is read-only"},
		{"no traceback", RunOutput{ExitCode: 3, Stderr: "bye\n"}, ""},
		{"exit", RunOutput{ExitCode: 2, Stderr: "Traceback (most recent call last):\n  File \"<code>\", line 1, in <module>\nSystemExit: 2\n"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := s.hint(t.Context(), &tt.out, time.Minute, "x = [0] * 10**12\n", s.cfg.Python)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("hint = %q, want it to contain %q", got, tt.want)
			}
		})
	}
}

func TestDistributionFor(t *testing.T) {
	for mod, want := range map[string]string{"cv2": "opencv-python", "sklearn": "scikit-learn", "PIL": "pillow", "yaml": "pyyaml", "bs4": "beautifulsoup4", "numpy": "numpy"} {
		if got := pyenv.DistributionFor(mod); got != want {
			t.Errorf("DistributionFor(%q) = %q, want %q", mod, got, want)
		}
	}
}

const importsCode = `
import os, sys, json
import numpy as np, pandas as pd
from sklearn.linear_model import LinearRegression
from . import sibling
import cv2, PIL.Image, yaml
from bs4 import BeautifulSoup
import xml.etree.ElementTree as ET
import helpers
def f():
    import requests
`

func TestInferRequirements(t *testing.T) {
	want := []string{"beautifulsoup4", "helpers", "numpy", "opencv-python", "pandas", "pillow", "pyyaml", "requests", "scikit-learn"}
	pythons := []string{testPython(t)}
	// Older interpreters lack sys.stdlib_module_names (3.10+): the scan
	// falls back to looking the module up on the stdlib-only sys.path.
	// Discovery names them among the skipped (too old to run code).
	_, skipped := testpython.All()
	for _, s := range skipped {
		if strings.Contains(s.Reason, "too old") {
			pythons = append(pythons, s.Path)
		}
	}
	if len(pythons) == 1 {
		t.Run("ancient", func(t *testing.T) {
			testenv.Skip(t, testenv.Ancient, "discovery found no Python older than 3.7")
		})
	}
	for _, py := range pythons {
		t.Run(py, func(t *testing.T) {
			got, err := inferRequirements(t.Context(), py, importsCode)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("inferRequirements = %v, want %v", got, want)
			}
			got, err = inferRequirements(t.Context(), py, "import numpy\nprint((1\n")
			if err != nil || len(got) != 0 {
				t.Errorf("code that does not parse: %v, %v; want no requirements and no error (the run reports the syntax error)", got, err)
			}
		})
	}
	if _, err := inferRequirements(t.Context(), "/nonexistent/python", "import numpy"); err == nil {
		t.Error("a missing interpreter gave no error")
	}
}

func TestExpandRequirements(t *testing.T) {
	py := testPython(t)
	ws, err := workspace.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := os.WriteFile(ws.Dir()+"/helpers.py", []byte("X = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		reqs, want []string
	}{
		{[]string{"numpy==2.0"}, []string{"numpy==2.0"}},
		{[]string{"auto"}, []string{"beautifulsoup4", "numpy", "opencv-python", "pandas", "pillow", "pyyaml", "requests", "scikit-learn"}},
		{[]string{"Pillow>=10", "auto", "scikit_learn"}, []string{"Pillow>=10", "scikit_learn", "beautifulsoup4", "numpy", "opencv-python", "pandas", "pyyaml", "requests"}},
	}
	for _, tt := range tests {
		got, err := expandRequirements(t.Context(), py, importsCode, tt.reqs, ws)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("expandRequirements(%v) = %v, want %v", tt.reqs, got, tt.want)
		}
	}
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
