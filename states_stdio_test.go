package main

import (
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/internal/testpython"
)

// TestStdioStatesAndBackground: through a real prims stdio, a state keeps
// its globals and rolls back a failing call, --max-states is honoured, and
// a background run is followed to its end with get_run.
func TestStdioStatesAndBackground(t *testing.T) {
	if runtime.GOOS != "linux" {
		testenv.Skip(t, testenv.Proc, "states need Linux")
	}
	py := testpython.Path(t)
	ctx := context.Background()
	cmd := primsCmd(t, "stdio", "--python", py, "--max-states", "1", "--log-level", "error")
	client := sdk.NewClient(&sdk.Implementation{Name: "test"}, nil)
	cs, err := client.Connect(ctx, &sdk.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	call := func(tool string, args map[string]any) (string, map[string]any, bool) {
		t.Helper()
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: args})
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		var out map[string]any
		b, _ := json.Marshal(res.StructuredContent)
		json.Unmarshal(b, &out)
		var text strings.Builder
		for _, c := range res.Content {
			if tc, ok := c.(*sdk.TextContent); ok {
				text.WriteString(tc.Text)
			}
		}
		return text.String(), out, res.IsError
	}
	call("run_code", map[string]any{"code": "n = 41", "state": "s"})
	if text, out, _ := call("run_code", map[string]any{"code": "n += 1\nraise SystemExit(2)", "state": "s"}); out["state_rolled_back"] != true {
		t.Errorf("failing call not rolled back: %s", text)
	}
	if _, out, _ := call("run_code", map[string]any{"code": "print(n + 1)", "state": "s"}); out["stdout"] != "42\n" {
		t.Errorf("state after the rollback: %v", out["stdout"])
	}
	if text, _, isErr := call("run_code", map[string]any{"code": "print(1)", "state": "t"}); !isErr || !strings.Contains(text, "--max-states") {
		t.Errorf("a second state over --max-states 1: %s", text)
	}
	_, out, _ := call("run_code", map[string]any{"code": "import time\ntime.sleep(0.5)\nprint('late')", "background": true})
	id, _ := out["run_id"].(string)
	if out["status"] != "running" || id == "" {
		t.Fatalf("background start: %v", out)
	}
	if text, out, _ := call("get_run", map[string]any{"run_id": id, "wait_s": 30}); out["status"] != "done" || out["stdout"] != "late\n" {
		t.Errorf("get_run: %s", text)
	}
}
