package session

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/sandbox"
)

// openSession opens a session in a temporary workspace, with a runner of
// the best tier this host has.
func openSession(t *testing.T, cfg Config) *Session {
	t.Helper()
	runner, err := sandbox.New(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(runner.Close)
	cfg.Python = testpython.Path(t)
	sess, err := New(cfg, runner).Open("", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sess.Close(); err != nil {
			t.Error(err)
		}
	})
	return sess
}

// TestRun: one run through the session keeps its streams in the Result
// and in numbered logs, reports what it wrote under output/, and hands the
// caller's writers the streams as they come.
func TestRun(t *testing.T) {
	t.Parallel()
	sess := openSession(t, Config{OutputBudget: 64})
	var live strings.Builder
	var status []string
	res, err := sess.Run(t.Context(), Request{
		Code:   "import sys\nprint('x' * 100)\nprint('oops', file=sys.stderr)\nopen('output/a.txt', 'w').write('hi')\n",
		Stdout: &live,
		Status: func(s string) { status = append(status, s) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || res.Hint != "" {
		t.Fatalf("exit %d, hint %q; stderr %q", res.ExitCode, res.Hint, res.Stderr.Text)
	}
	if !res.Stdout.Truncated || res.Stdout.Total != 101 || res.Stderr.Truncated || res.Stderr.Text != "oops\n" {
		t.Errorf("streams: stdout %+v, stderr %+v", res.Stdout, res.Stderr)
	}
	if live.String() != strings.Repeat("x", 100)+"\n" {
		t.Errorf("the caller's writer got %q", live.String())
	}
	dir := sess.Workspace().Dir()
	for path, want := range map[string]string{res.Stdout.Log: strings.Repeat("x", 100) + "\n", res.Stderr.Log: "oops\n", "logs/0001-code.py": "import sys\n"} {
		b, err := os.ReadFile(filepath.Join(dir, path))
		if err != nil || !strings.HasPrefix(string(b), want) {
			t.Errorf("%s: %q, %v; want it to start with %q", path, b, err, want)
		}
	}
	if len(res.Artifacts) != 1 || res.Artifacts[0].Path != "output/a.txt" || res.Artifacts[0].Size != 2 {
		t.Errorf("artifacts %+v, want output/a.txt (2 bytes)", res.Artifacts)
	}
	if sess.Runs() != 1 || res.Python.Path == "" {
		t.Errorf("runs %d, python %+v", sess.Runs(), res.Python)
	}
	if len(status) != 0 {
		t.Errorf("status lines for a run that neither downloads nor installs: %q", status)
	}
}

// TestAutoSkipsLocalModules: "auto" looks for the workspace's own modules
// by the name the code imports. yaml.py in the workspace provides "import
// yaml", so nothing is installed (this runtime has no environment cache,
// so asking for pyyaml would fail the run); a package that is not there
// still becomes a requirement.
func TestAutoSkipsLocalModules(t *testing.T) {
	t.Parallel()
	sess := openSession(t, Config{})
	if err := os.WriteFile(filepath.Join(sess.Workspace().Dir(), "yaml.py"), []byte("def safe_load(s): return {'local': s}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := sess.Run(t.Context(), Request{Code: "import yaml\nprint(yaml.safe_load('x'))\n", Requirements: []string{"auto"}})
	if err != nil {
		t.Fatalf("the run asked for an install: %v", err)
	}
	if res.Stdout.Text != "{'local': 'x'}\n" || len(res.Requirements) != 0 {
		t.Errorf("stdout %q, requirements %q; want the local module and none", res.Stdout.Text, res.Requirements)
	}
	// The control: the same code without yaml.py asks for pyyaml.
	got, err := expandRequirements(t.Context(), res.Python.Path, "import yaml\n", []string{"auto"}, nil)
	if err != nil || !slices.Equal(got, []string{"pyyaml"}) {
		t.Errorf("without the workspace: %q, %v; want [pyyaml]", got, err)
	}
}

// TestRunRefusedWhenDraining: once the runtime drains, a run does not
// start, and says why.
func TestRunRefusedWhenDraining(t *testing.T) {
	t.Parallel()
	sess := openSession(t, Config{})
	sess.rt.Drain()
	if _, err := sess.Run(context.Background(), Request{Code: "print(1)"}); err != ErrShuttingDown {
		t.Errorf("Run while draining: %v, want ErrShuttingDown", err)
	}
}
