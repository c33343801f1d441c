package session

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/workspace"
	"github.com/prims-mcp/prims/workspace/pythonenv"
)

func TestSignalAndLimitHints(t *testing.T) {
	s := New(Config{Python: testpython.Path(t), MaxTimeout: time.Minute}, nil)
	tests := []struct {
		name   string
		res    sandbox.Result
		stderr string
		want   string
		not    []string
	}{
		{"ok", sandbox.Result{}, "", "", nil},
		{"cancelled", sandbox.Result{Cancelled: true, ExitCode: -9, Signal: "killed"}, "", "", nil},
		// Every limit below ends a run with the same SIGKILL: only the
		// typed Limit tells them apart.
		{"cpu", sandbox.Result{ExitCode: -9, Signal: "killed", Limit: sandbox.LimitCPUTime}, "", "CPU-time limit", []string{"memory"}},
		{"memory", sandbox.Result{ExitCode: -9, Signal: "killed", Limit: sandbox.LimitMemory}, "", "memory limit", []string{"CPU"}},
		{"quota", sandbox.Result{ExitCode: -9, Signal: "killed", Limit: sandbox.LimitWorkspaceQuota}, "", "workspace quota", []string{"memory"}},
		{"max procs", sandbox.Result{ExitCode: 1, Limit: sandbox.LimitMaxProcs}, "BlockingIOError: [Errno 11] Resource temporarily unavailable\n", "processes and threads", []string{"memory"}},
		{"fsize", sandbox.Result{ExitCode: 1, Limit: sandbox.LimitMaxFileSize}, "", "file-size limit", nil},
		{"open files", sandbox.Result{ExitCode: 1, Limit: sandbox.LimitMaxOpenFiles}, "", "open files", nil},
		{"timeout at max", sandbox.Result{TimedOut: true, ExitCode: -9, Signal: "killed", Limit: sandbox.LimitWallTime}, "", "server's maximum timeout", []string{"memory"}},
		{"killed by no limit", sandbox.Result{ExitCode: -9, Signal: "killed"}, "", "not by one of the sandbox's limits", []string{"memory limit"}},
		{"segfault", sandbox.Result{ExitCode: -11, Signal: "segmentation fault"}, "", "crashed", nil},
		{"MemoryError", sandbox.Result{ExitCode: 1, Limit: sandbox.LimitMemory}, "Traceback (most recent call last):\n  File \"<code>\", line 1, in <module>\nMemoryError\n", "memory limit ended the run (MemoryError at line 1 (`x = [0] * 10**12`))", nil},
		{"read-only mounts", sandbox.Result{ExitCode: 1}, "  File \"<code>\", line 1, in <module>\nOSError: [Errno 30] Read-only file system: 'mounts/a.csv'\n", "mounts/ is read-only", nil},
		{"no traceback", sandbox.Result{ExitCode: 3}, "bye\n", "", nil},
		{"exit", sandbox.Result{ExitCode: 2}, "Traceback (most recent call last):\n  File \"<code>\", line 1, in <module>\nSystemExit: 2\n", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := &Result{Result: tt.res, Timeout: time.Minute, Stderr: Stream{Text: tt.stderr}}
			got := s.hint(t.Context(), out, "x = [0] * 10**12\n", s.cfg.Python)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("hint = %q, want it to contain %q", got, tt.want)
			}
			for _, n := range tt.not {
				if strings.Contains(got, n) {
					t.Errorf("hint = %q names %q", got, n)
				}
			}
		})
	}
}

func TestDistributionFor(t *testing.T) {
	for mod, want := range map[string]string{"cv2": "opencv-python", "sklearn": "scikit-learn", "PIL": "pillow", "yaml": "pyyaml", "bs4": "beautifulsoup4", "numpy": "numpy"} {
		if got := pythonenv.DistributionFor(mod); got != want {
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
	pythons := []string{testpython.Path(t)}
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
	py := testpython.Path(t)
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

// TestEachLimitNamesItself: the hint for a run that a limit ended names
// that limit and no other, for every limit the sandbox reports, although
// most of them end the program with the same SIGKILL.
func TestEachLimitNamesItself(t *testing.T) {
	s := New(Config{Python: testpython.Path(t)}, nil)
	names := map[string]string{
		sandbox.LimitWallTime:       "wall-clock limit",
		sandbox.LimitCPUTime:        "CPU-time limit",
		sandbox.LimitMemory:         "memory limit",
		sandbox.LimitMaxProcs:       "processes and threads",
		sandbox.LimitMaxFileSize:    "file-size limit",
		sandbox.LimitMaxOpenFiles:   "open files",
		sandbox.LimitWorkspaceQuota: "workspace quota",
	}
	for limit, name := range names {
		res := &Result{Result: sandbox.Result{ExitCode: -9, Signal: "killed", Limit: limit}, Timeout: time.Second}
		got := s.hint(t.Context(), res, "pass\n", s.cfg.Python)
		if !strings.Contains(got, name) {
			t.Errorf("%s: hint %q does not name %q", limit, got, name)
		}
		for other, on := range names {
			if other != limit && strings.Contains(got, on) {
				t.Errorf("%s: hint %q names %q too", limit, got, on)
			}
		}
	}
}
