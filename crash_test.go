package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/testpython"
)

// TestKilledServerWorkspaceIsSwept: a prims stdio killed with SIGKILL
// leaves its workspace behind (it gets no chance to clean up); the next
// server to start removes it, because its owner record is no longer held,
// and leaves alone the workspace of a server that is still running.
func TestKilledServerWorkspaceIsSwept(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	py := testpython.Path(t)
	tmp := t.TempDir()
	os.Chmod(tmp, 0o755)
	ctx := context.Background()
	serve := func() (*exec.Cmd, *sdk.ClientSession) {
		cmd := primsCmd(t, "stdio", "--python", py)
		cmd.Env = append(cmd.Env, "TMPDIR="+tmp)
		cs, err := sdk.NewClient(&sdk.Implementation{Name: "crash", Version: "1"}, nil).Connect(ctx, &sdk.CommandTransport{Command: cmd}, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": "print(1)"}})
		if err != nil || res.IsError {
			t.Fatalf("run_code: %v %v", err, res)
		}
		return cmd, cs
	}
	workspaces := func() map[string]bool {
		m := map[string]bool{}
		ds, _ := filepath.Glob(filepath.Join(tmp, "prims-ws-*"))
		for _, d := range ds {
			m[d] = true
		}
		return m
	}
	const rounds = 3
	var killed []string
	for range rounds {
		before := workspaces()
		cmd, cs := serve()
		// A run in flight when it dies, as in real use.
		go cs.CallTool(ctx, &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": "import time; time.sleep(30)"}})
		time.Sleep(300 * time.Millisecond)
		for d := range workspaces() {
			if !before[d] {
				killed = append(killed, d)
			}
		}
		cmd.Process.Kill()
		// The command transport waits for the process: Close, never a
		// second Wait of our own (they race).
		cs.Close()
		// Control: the killed server left its workspace (the next
		// server to start sweeps it).
		if len(killed) == 0 {
			t.Fatal("control: no workspace found for the killed server")
		}
		if _, err := os.Stat(killed[len(killed)-1]); err != nil {
			t.Fatalf("control: the killed server's workspace is gone before any sweep: %v", err)
		}
	}
	if len(killed) != rounds {
		t.Fatalf("%d workspaces for %d killed servers: %v", len(killed), rounds, killed)
	}
	_, liveCS := serve()
	defer liveCS.Close()
	var liveWS []string
	for d := range workspaces() {
		if !slices.Contains(killed, d) {
			liveWS = append(liveWS, d)
		}
	}
	// A later server sweeps on start.
	_, later := serve()
	defer later.Close()
	for _, d := range killed {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("the workspace of a killed server is still there: %s", d)
		}
	}
	for _, d := range liveWS {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("the workspace of a running server was swept: %v", err)
		}
	}
	if res, err := liveCS.CallTool(ctx, &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": "print(2)"}}); err != nil || res.IsError {
		t.Errorf("the running server after the sweep: %v %v", err, res)
	}
}
