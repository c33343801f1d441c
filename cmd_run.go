package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/sandbox/pyenv"
	"github.com/prims-mcp/prims/workspace"
)

type runCmdOptions struct {
	runOptions
	code      string
	workspace string
	with      []string
}

func newRunCmd() *cobra.Command {
	opts := &runCmdOptions{}
	cmd := &cobra.Command{
		Use:   "run [FILE | -c CODE]",
		Short: "Run a Python file or -c CODE through the sandbox, streaming its output",
		Long: `Run a Python program through the same runner that serves MCP calls, in a
fresh workspace, streaming its output to this terminal. prims exits with the
program's exit status. A FILE of "-" reads the program from stdin.`,
		Example: `  prims run -c 'print(1 + 1)'
  prims run script.py
  prims run --with requests --with 'numpy>=2' script.py`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			code, err := programText(opts.code, args)
			if err != nil {
				return err
			}
			return runRun(cmd, opts, code)
		},
	}
	opts.addFlags(cmd.Flags())
	cmd.Flags().StringVarP(&opts.code, "code", "c", "", "program text to run")
	cmd.Flags().StringVar(&opts.workspace, "workspace", "", "run in this directory (kept) instead of a temporary workspace")
	cmd.Flags().StringArrayVar(&opts.with, "with", nil, "a requirement to install into the run's cached environment (repeatable)")
	return cmd
}

// programText picks the program from -c or a file argument.
func programText(code string, args []string) (string, error) {
	switch {
	case code != "" && len(args) > 0:
		return "", errors.New("give either -c CODE or a FILE, not both")
	case code != "":
		return code, nil
	case len(args) == 0:
		return "", errors.New("nothing to run: give a FILE or -c CODE")
	case args[0] == "-":
		b, err := io.ReadAll(os.Stdin)
		return string(b), err
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return "", fmt.Errorf("read program: %w", err)
	}
	return string(b), nil
}

func runRun(cmd *cobra.Command, opts *runCmdOptions, code string) error {
	ctx := cmd.Context()
	opts.warm = 0 // one run: there is nothing to keep warm for
	d, err := opts.deps(ctx)
	if err != nil {
		return err
	}
	defer d.runner.Close()
	ws, err := workspace.New(opts.workspace)
	if err != nil {
		return err
	}
	defer ws.Close()
	// Keep the program beside its run so tracebacks can show its lines.
	f, name, err := ws.CreateLog("0001-code.py")
	if err != nil {
		return err
	}
	_, err = f.WriteString(code)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("save program: %w", err)
	}
	python, readOnly, release, err := runEnvironment(ctx, d, opts)
	if err != nil {
		return err
	}
	defer release()
	res, err := d.runner.Run(ctx, sandbox.Job{
		Python:   python,
		Code:     code,
		Filename: name,
		Dir:      ws.Dir(),
		ReadOnly: readOnly,
		Stdout:   os.Stdout,
		Stderr:   os.Stderr,
	})
	if err != nil {
		return err
	}
	switch {
	case res.TimedOut:
		fmt.Fprintf(os.Stderr, "prims: timed out after %s\n", opts.timeout)
		return exitError{124}
	case res.Cancelled:
		return exitError{130}
	case res.ExitCode < 0:
		return exitError{128 - res.ExitCode}
	case res.ExitCode != 0:
		return exitError{res.ExitCode}
	}
	return nil
}

// runEnvironment picks the interpreter for prims run: the default one, or a
// cached environment with the --with requirements installed.
func runEnvironment(ctx context.Context, d deps, opts *runCmdOptions) (python string, readOnly []string, release func(), err error) {
	interp, err := pyenv.Inspect(ctx, d.python)
	if err != nil {
		return "", nil, nil, err
	}
	if len(opts.with) == 0 {
		return interp.Path, []string{interp.BasePrefix}, func() {}, nil
	}
	reqs, err := pyenv.ValidateRequirements(opts.with, opts.allowDirect)
	if err != nil {
		return "", nil, nil, err
	}
	env, err := d.envs.Acquire(ctx, interp, reqs, func(line string) { fmt.Fprintln(os.Stderr, "prims:", line) })
	if err != nil {
		return "", nil, nil, err
	}
	return env.Python, []string{interp.BasePrefix, env.Dir}, env.Release, nil
}
