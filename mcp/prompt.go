package mcp

import (
	"context"
	"fmt"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

func (s *Server) addPrompts() {
	s.sdk.AddPrompt(&sdk.Prompt{
		Name:        "python_programmer",
		Title:       "Python programmer",
		Description: "Solve a task by writing and running Python with PRIMS' tools.",
		Arguments: []*sdk.PromptArgument{
			{Name: "task", Description: "what the program should do", Required: true},
			{Name: "files", Description: "comma-separated workspace paths of mounted inputs, if any"},
		},
	}, s.pythonProgrammer)
}

func (s *Server) pythonProgrammer(ctx context.Context, req *sdk.GetPromptRequest) (*sdk.GetPromptResult, error) {
	task := strings.TrimSpace(req.Params.Arguments["task"])
	if task == "" {
		return nil, fmt.Errorf("the python_programmer prompt needs a task")
	}
	var b strings.Builder
	b.WriteString("You are an expert Python programmer with a sandboxed Python 3 workspace, reached through PRIMS' tools.\n\n")
	fmt.Fprintf(&b, "Task: %s\n\n", task)
	if files := strings.TrimSpace(req.Params.Arguments["files"]); files != "" {
		fmt.Fprintf(&b, "Input files (read-only, relative to the working directory): %s\n\n", files)
	}
	b.WriteString(`How to work:
- Call run_code with a complete program. Each call is a fresh Python process: files in the workspace persist, variables do not.
- print() what you need to see; stdout and stderr come back with the exit code.
- Write files for the user (plots, tables, reports) under output/. Read inputs from mounts/; use mount_file to fetch a URL there.
- If a run fails, read the traceback and the hint, fix the program and run it again.
- Use list_dir and preview_file to look at files; persist_artifact uploads a file from output/ to a presigned URL.
`)
	return &sdk.GetPromptResult{
		Description: "Solve a task with PRIMS",
		Messages:    []*sdk.PromptMessage{{Role: "user", Content: &sdk.TextContent{Text: b.String()}}},
	}, nil
}
