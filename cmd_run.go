package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/prims-mcp/prims/session"
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
	// A process that lives for one run would spend a good part of it
	// probing the host and the interpreter again (issue 16).
	opts.probeCache = true
	d, err := opts.deps(ctx)
	if err != nil {
		return err
	}
	defer d.close()
	// The same session a server's client gets, for one run: it keeps the
	// program beside its run in logs/, where tracebacks of -c and stdin
	// programs show its lines from.
	rt := session.New(session.Config{
		Python:                  d.python,
		Discover:                d.discover,
		Envs:                    d.envs,
		AllowDirectRequirements: opts.allowDirect,
		DefaultTimeout:          opts.timeout,
		MaxTimeout:              opts.timeout,
		MaxCodeBytes:            math.MaxInt, // a file on this machine, not a model's message
		Logger:                  d.log,
	}, d.runner)
	sess, err := rt.Open(opts.workspace, nil)
	if err != nil {
		return err
	}
	defer sess.Close()
	res, err := sess.Run(ctx, session.Request{
		Code:         prog.code,
		Filename:     prog.file,
		Argv:         prog.argv,
		Requirements: opts.with,
		Status:       func(line string) { fmt.Fprintln(os.Stderr, "prims:", line) },
		Stdout:       os.Stdout,
		Stderr:       os.Stderr,
	})
	if err != nil {
		return err
	}
	switch {
	case res.TimedOut:
		fmt.Fprintf(os.Stderr, "prims: timed out after %s\n", res.Timeout)
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
