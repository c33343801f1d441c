package mcp

import (
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/sandbox"
)

// startLimited is start with a runner of the given limits.
func startLimited(t *testing.T, lim sandbox.Limits, cfg Config) *testEnv {
	t.Helper()
	return startRunner(t, "", sandbox.Config{Limits: lim}, cfg)
}

// TestLogsHaveTheirOwnBudget: a long session of runs that print more than
// their log cap neither runs into the workspace quota (logs are not the
// code's files) nor grows logs/ past its budget; the oldest runs' logs are
// pruned, and asking for one says so; a cut log says it is cut.
func TestLogsHaveTheirOwnBudget(t *testing.T) {
	const limit, budget = 1 << 20, 4 << 20
	env := startLimited(t, sandbox.Limits{WorkspaceQuota: 6 << 20}, Config{LogLimit: limit, LogBudget: budget})
	code := "import sys\nsys.stdout.write('x' * (3 << 19))\nprint()"
	var last RunOutput
	for i := range 12 {
		last = RunOutput{}
		res, ok := env.callCtx(t, time.Minute, "run_code", map[string]any{"code": code}, &last)
		if !ok {
			t.Fatalf("run %d did not return", i+1)
		}
		if res.IsError || last.ExitCode != 0 {
			t.Fatalf("run %d failed: %s", i+1, text(res))
		}
		if i == 11 {
			if last.StdoutLogNote == "" || strings.Contains(text(res), "complete in") {
				t.Errorf("a log cut at its cap is presented as complete: note %q\n%s", last.StdoutLogNote, text(res))
			}
		}
	}
	var held int64
	logs := env.srv.Workspace() + "/logs"
	ents, _ := os.ReadDir(logs)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			held += fi.Size()
		}
	}
	if held > budget {
		t.Errorf("logs/ holds %d bytes, budget %d", held, budget)
	}
	res, _ := env.callCtx(t, 10*time.Second, "preview_file", map[string]any{"path": "logs/0001-stdout.txt"}, nil)
	if res == nil || !res.IsError || !strings.Contains(text(res), "budget") {
		t.Errorf("preview of a pruned log: %v", text(res))
	}
	var p struct {
		Note string `json:"note"`
	}
	res, _ = env.callCtx(t, 10*time.Second, "preview_file", map[string]any{"path": last.StdoutLog}, &p)
	if p.Note == "" || !strings.Contains(text(res), "not the whole stream") {
		t.Errorf("preview of a cut log does not say so: %+v %s", p, text(res)[max(0, len(text(res))-200):])
	}
	// Control: a run within the cap has a complete log, and says so.
	last = RunOutput{}
	res, _ = env.callCtx(t, time.Minute, "run_code", map[string]any{"code": "print('x' * 50000)"}, &last)
	if last.StdoutLogNote != "" || !strings.Contains(text(res), "complete in") {
		t.Errorf("control: %q\n%s", last.StdoutLogNote, text(res)[:200])
	}
}

// TestDiskFull: once the workspace's disk is full, run_code says the disk
// is full (not "try again"), and a program that deletes files still runs
// and frees space. The disk is a 16 MiB tmpfs holding the workspace.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, testenv.Root, "mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=16m,mode=1777"); err != nil {
		testenv.Skip(t, testenv.Root, "cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	t.Setenv("TMPDIR", dir)
	env := startLimited(t, sandbox.Limits{WorkspaceQuota: 1 << 30}, Config{})
	fill := `
import os
n = 0
try:
    with open("output/fill", "wb") as f:
        while True:
            f.write(b"x" * 65536); f.flush(); n += 65536
except OSError as e:
    print("full after", n, e.errno)
`
	var out RunOutput
	env.callCtx(t, time.Minute, "run_code", map[string]any{"code": fill}, &out)
	// Control: the disk is full now.
	var sf unix.Statfs_t
	unix.Statfs(dir, &sf)
	if !strings.Contains(out.Stdout, "full after") || sf.Bavail > 16 {
		t.Fatalf("control: the disk did not fill (%d blocks free): %s %s", sf.Bavail, out.Stdout, out.Stderr)
	}
	out = RunOutput{}
	res, ok := env.callCtx(t, time.Minute, "run_code", map[string]any{"code": "print('still runs')"}, &out)
	if !ok || res == nil {
		t.Fatal("run_code on a full disk did not return")
	}
	if strings.Contains(text(res), "Try again") || !strings.Contains(text(res), "disk is full") || out.Stdout != "still runs\n" {
		t.Errorf("run_code on a full disk: %s", text(res))
	}
	out = RunOutput{}
	res, _ = env.callCtx(t, time.Minute, "run_code", map[string]any{"code": "import os\nos.remove('output/fill')\nprint('freed')"}, &out)
	if res == nil || res.IsError || out.Stdout != "freed\n" {
		t.Errorf("a program that frees space on a full disk: %s", text(res))
	}
	out = RunOutput{}
	res, _ = env.callCtx(t, time.Minute, "run_code", map[string]any{"code": "print('after')"}, &out)
	if res == nil || res.IsError || out.Stdout != "after\n" || strings.Contains(text(res), "disk is full") || out.StdoutLogNote != "" {
		t.Errorf("after freeing space: %s", text(res))
	}
}
