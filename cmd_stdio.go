package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/prims-mcp/prims/mcp"
)

type stdioOptions struct {
	runOptions
	contentOptions
	workspace    string
	outputBudget int
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
	cmd.Flags().IntVar(&opts.outputBudget, "output-budget", 32<<10, "bytes of each output stream returned inline (head and tail)")
	return cmd
}

func runStdio(cmd *cobra.Command, opts *stdioOptions) error {
	ctx := cmd.Context()
	d, err := opts.deps(ctx)
	if err != nil {
		return err
	}
	srv, err := mcp.New(mcp.Config{
		Python:                  d.python,
		Discover:                d.discover,
		Envs:                    d.envs,
		AllowDirectRequirements: opts.allowDirect,
		Workspace:               opts.workspace,
		DefaultTimeout:          opts.timeout,
		MaxTimeout:              opts.maxTimeout,
		OutputBudget:            opts.outputBudget,
		ImageBudget:             opts.imageBudget,
		SampleFixes:             opts.sampleFixes,
		Version:                 version(),
		Logger:                  d.log,
	}, d.runner)
	if err != nil {
		return err
	}
	d.log.Info("serving MCP on stdio", "python", d.python, "isolation", d.runner.Tier())
	serr := srv.Serve(ctx, mcp.NewStdioTransport(os.Stdin, os.Stdout))
	if cerr := srv.Close(); cerr != nil {
		d.log.Error("close", "err", cerr)
	}
	if ctx.Err() != nil {
		return nil // interrupted: a normal way to stop
	}
	return serr
}
