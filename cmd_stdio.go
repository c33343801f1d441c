package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/prims-mcp/prims/mcp"
)

type stdioOptions struct {
	runOptions
	contentOptions
	workspace string
}

func newStdioCmd() *cobra.Command {
	opts := &stdioOptions{}
	cmd := &cobra.Command{
		Use:   "stdio",
		Short: "Serve MCP over stdin and stdout (launched by desktop agents)",
		Long: `Serve the Model Context Protocol over stdin and stdout, as Claude Desktop,
Claude Code and IDE agents expect. One workspace serves the whole process
lifetime; it is deleted on exit unless --workspace names a directory to keep.
Logs go to stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runStdio(cmd, opts) },
	}
	opts.runOptions.addFlags(cmd.Flags())
	opts.contentOptions.addFlags(cmd.Flags())
	cmd.Flags().StringVar(&opts.workspace, "workspace", "", "keep the workspace in this directory instead of a temporary one (never deleted)")
	return cmd
}

func runStdio(cmd *cobra.Command, opts *stdioOptions) error {
	ctx := cmd.Context()
	// A client that closes its end of stdout must not kill us with SIGPIPE
	// before the workspace is removed: with SIGPIPE caught, the write fails
	// with EPIPE and the session ends like any other.
	ignorePipe := make(chan os.Signal, 1)
	signal.Notify(ignorePipe, syscall.SIGPIPE)
	defer signal.Stop(ignorePipe)
	d, err := opts.deps(ctx)
	if err != nil {
		return err
	}
	defer d.close()
	store, err := opts.openStore(ctx, d.log)
	if err != nil {
		return err
	}
	defer store.Close()
	cfg := serverConfig(d, &opts.runOptions, &opts.contentOptions)
	cfg.Workspace = opts.workspace
	cfg.Artifacts = store
	srv, err := mcp.New(cfg, d.runner)
	if err != nil {
		return err
	}
	d.log.Info("serving MCP on stdio", "python", d.python, "isolation", d.runner.Tier())
	srv.Prewarm()
	serr := srv.Serve(ctx, mcp.NewStdioTransport(os.Stdin, os.Stdout))
	if cerr := srv.Close(); cerr != nil {
		d.log.Error("close", "err", cerr)
	}
	if ctx.Err() != nil {
		return nil // interrupted: a normal way to stop
	}
	return serr
}
