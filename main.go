// Command prims is an MCP server that runs model-written Python in a
// throw-away sandbox. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/prims-mcp/prims/sandbox"
)

func main() {
	sandbox.MaybeInit() // the sandbox init is this binary re-executed; it never returns
	os.Exit(run(os.Args[1:]))
}

// run executes the command line and maps its outcome to an exit code: the
// one place where errors become exit statuses.
func run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "prims:", err)
	return 1
}

// exitError carries a status to exit with, without a message (prims run
// exits with the program's own status).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "prims",
		Short: "Run Python for AI agents in a throw-away sandbox, over MCP",
		Long: `PRIMS is a Model Context Protocol server that runs model-written Python
in a throw-away, sandboxed workspace on your machine.

  prims stdio    serve MCP over stdin/stdout (what desktop agents launch)
  prims serve    serve MCP over streamable HTTP for remote agents
  prims run      run a Python file or -c CODE through the same sandbox
  prims doctor   print what isolation this host gives runs`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// Help, usage and completion scripts are what the user asked for: they go
	// to stdout, where `prims completion bash > file` and `prims help | less`
	// expect them. Nothing else cobra prints goes there: errors are ours
	// to print (SilenceErrors), and prims stdio's stdout carries only
	// JSON-RPC.
	root.SetOut(os.Stdout)
	root.SetErr(os.Stderr)
	root.AddCommand(newStdioCmd(), newServeCmd(nil), newRunCmd(), newDoctorCmd(), newVersionCmd())
	return root
}
