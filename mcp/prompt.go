package mcp

import (
	"context"
	"fmt"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

func (s *Server) addPrompts() {
	s.sdk.AddPrompt(&sdk.Prompt{
		Name:        "python_programmer",
		Title:       "Python programmer",
		Description: "Solve a task by writing and running Python in PRIMS' sandbox, following its contract: print results, write files to output/, declare packages in requirements, read inputs from mounts/.",
		Arguments: []*sdk.PromptArgument{
			{Name: "task", Description: "what the program should do", Required: true},
			{Name: "files", Description: "input files, comma-separated: paths under mounts/ (for example mounts/sales.csv) or http(s) URLs to mount first"},
		},
	}, s.pythonProgrammer)
}

func (s *Server) pythonProgrammer(ctx context.Context, req *sdk.GetPromptRequest) (*sdk.GetPromptResult, error) {
	task := strings.TrimSpace(req.Params.Arguments["task"])
	if task == "" {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: `the python_programmer prompt needs its "task" argument`}
	}
	var b strings.Builder
	b.WriteString("You are an expert Python programmer. You have PRIMS: a sandboxed Python 3 workspace that you use through its tools. Solve the task by running code, not by guessing results.\n\n")
	fmt.Fprintf(&b, "## Task\n%s\n\n", task)
	if files := splitFiles(req.Params.Arguments["files"]); len(files) > 0 {
		b.WriteString("## Input files\n")
		for _, f := range files {
			if strings.HasPrefix(f, "http://") || strings.HasPrefix(f, "https://") {
				fmt.Fprintf(&b, "- %s: not mounted yet. Pass it in run_code's files ({\"url\": %q, \"mount_path\": \"<name>\"}) or call mount_file; it then appears under mounts/.\n", f, f)
				continue
			}
			fmt.Fprintf(&b, "- %s (read-only; open it with this relative path)\n", f)
		}
		b.WriteString("Look at an input before you process it: preview_file shows the start of a text file.\n\n")
	}
	b.WriteString(`## How PRIMS runs your code
- run_code runs one complete program in a fresh Python process. Files in the workspace persist between calls; variables, imports and functions do not. Every program must import and define what it uses.
- The working directory is the workspace root. Inputs are under mounts/ (read-only). Write every file meant for the user under output/ (plots, CSV, reports).
- Only the standard library is guaranteed. List third-party packages in run_code's requirements using pip names (for example ["pandas", "matplotlib", "scikit-learn"]); they are installed before the run.
- print() what you need to see: stdout and stderr come back with the exit code. Keep printed output short (summaries, head of tables); long output is cut in the middle and kept whole in logs/.
- Images that the program writes under output/ (PNG, JPEG, GIF, WebP) come back to you as images, other files as links. With matplotlib, plt.savefig("output/name.png") or plt.show() both work; there is no display.
- A run has a time limit (timeout_s). For long work, print progress and save intermediate results to output/.
- State pays off when you will run several programs on the same slow-to-load data: pass state: "NAME" to run_code and the calls with that name share one live interpreter (load the data once, then query it call after call, without re-importing). A call that fails is rolled back: the state is exactly as it was, so fix the code and call again. fork_from: "OTHER" with a new name copies a state cheaply. Requirements are fixed when a state is created, so list them all on its first call. drop_state frees a state's memory. One-off programs need no state.
- Jobs that may outlast the client's request timeout (more than about a minute): run_code with background: true returns a run_id at once; call get_run (run_id, wait_s up to 50) until its status is done, or cancel_run to stop it.

## How to work
1. Write a complete program for the task and run it.
2. If it fails, read the traceback and PRIMS' hint (a missing package names the requirement to add), fix the program and run it again.
3. Check the output makes sense, then answer with the result and name the files in output/ that hold it.
`)
	return &sdk.GetPromptResult{
		Description: "Solve a task with PRIMS",
		Messages:    []*sdk.PromptMessage{{Role: "user", Content: &sdk.TextContent{Text: b.String()}}},
	}, nil
}

// splitFiles splits the files argument on commas and newlines.
func splitFiles(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' }) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
