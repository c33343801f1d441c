package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/workspace"
	"github.com/prims-mcp/prims/workspace/pythonenv"
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
		Use:   "run [flags] (FILE | -c CODE | -) [ARGS...]",
		Short: "Run a Python file or -c CODE through the sandbox, streaming its output",
		Long: `Run a Python program through the same runner that serves MCP calls, in a
fresh workspace, streaming its output to this terminal. prims exits with the
program's exit status. As with python, the ARGS after FILE (or after -c CODE)
are the program's sys.argv[1:], __file__ and tracebacks name FILE, and a FILE
of "-" reads the program from stdin. Flags for prims come before FILE.`,
		Example: `  prims run -c 'print(1 + 1)'
  prims run script.py input.csv --verbose
  prims run --with requests --with 'numpy>=2' script.py`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			prog, err := programOf(opts.code, cmd.Flags().Changed("code"), args)
			if err != nil {
				return err
			}
			return runRun(cmd, opts, prog)
		},
	}
	// Everything after FILE is the program's, flags included.
	cmd.Flags().SetInterspersed(false)
	opts.addFlags(cmd.Flags())
	cmd.Flags().StringVarP(&opts.code, "code", "c", "", "program text to run")
	cmd.Flags().StringVar(&opts.workspace, "workspace", "", "run in this directory (kept) instead of a temporary workspace")
	cmd.Flags().StringArrayVar(&opts.with, "with", nil, "a requirement to install into the run's cached environment (repeatable)")
	return cmd
}

// program is what prims run runs, named as python names it.
type program struct {
	code string
	// file is the name tracebacks and __file__ show: FILE's absolute path
	// (as Python 3.9 and later show it), or "" for -c and stdin, whose
	// source is kept in the workspace's logs/ instead, so that tracebacks
	// can still show its lines.
	file string
	argv []string // sys.argv: FILE as typed, "-c" or "-", then ARGS
}

// programOf picks the program from -c CODE or FILE, and the arguments that
// follow it, as python does.
func programOf(code string, hasCode bool, args []string) (program, error) {
	switch {
	case hasCode:
		if code == "" {
			return program{}, errors.New("-c needs the program text")
		}
		return program{code: code, argv: append([]string{"-c"}, args...)}, nil
	case len(args) == 0:
		return program{}, errors.New("nothing to run: give a FILE or -c CODE")
	case args[0] == "-":
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return program{}, fmt.Errorf("read program from stdin: %w", err)
		}
		return program{code: string(b), argv: args}, nil
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return program{}, fmt.Errorf("read program: %w", err)
	}
	abs, err := filepath.Abs(args[0])
	if err != nil {
		return program{}, fmt.Errorf("read program: %w", err)
	}
	return program{code: string(b), file: abs, argv: args}, nil
}

func runRun(cmd *cobra.Command, opts *runCmdOptions, prog program) error {
	ctx := cmd.Context()
	opts.warm = 0 // one run: there is nothing to keep warm for
	d, err := opts.deps(ctx)
	if err != nil {
		return err
	}
	defer d.close()
	ws, err := workspace.New(opts.workspace)
	if err != nil {
		return err
	}
	defer ws.Close()
	// Keep the program beside its run: tracebacks of -c and stdin programs
	// show its lines from there.
	f, name, err := ws.CreateLog("0001-code.py")
	if err != nil {
		return err
	}
	if prog.file != "" {
		name = prog.file
	}
	_, err = f.WriteString(prog.code)
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
		Code:     prog.code,
		Filename: name,
		Argv:     prog.argv,
		Dir:      ws.Dir(),
		ReadOnly: append(readOnly, ws.ReadOnly()...), // its logs and mounts
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
	interp, err := pythonenv.Inspect(ctx, d.python)
	if err != nil {
		return "", nil, nil, err
	}
	if len(opts.with) == 0 {
		return interp.Path, []string{interp.BasePrefix}, func() {}, nil
	}
	reqs, err := pythonenv.ValidateRequirements(opts.with, opts.allowDirect)
	if err != nil {
		return "", nil, nil, err
	}
	env, err := d.envs.Acquire(ctx, interp, reqs, func(line string) { fmt.Fprintln(os.Stderr, "prims:", line) })
	if err != nil {
		return "", nil, nil, err
	}
	return env.Python, []string{interp.BasePrefix, env.Dir}, env.Release, nil
}
