package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/prims-mcp/prims/sandbox"
)

// runOptions are the flags shared by every command that runs code.
type runOptions struct {
	python     string
	timeout    time.Duration
	maxTimeout time.Duration
	logLevel   string
}

func (o *runOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.python, "python", "", "Python interpreter to run code with (default: the real executable behind python3 on PATH)")
	fs.DurationVar(&o.timeout, "timeout", 60*time.Second, "wall-clock limit of a run that asks for none")
	fs.DurationVar(&o.maxTimeout, "max-timeout", 10*time.Minute, "largest wall-clock limit a run may ask for")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level on stderr: debug, info, warn or error")
}

func (o *runOptions) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})), nil
}

// deps is what every code-running command builds from its flags.
type deps struct {
	log    *slog.Logger
	python string
	runner *sandbox.Runner
}

func (o *runOptions) deps(ctx context.Context) (deps, error) {
	log, err := o.logger()
	if err != nil {
		return deps{}, err
	}
	python, err := o.interpreter(ctx)
	if err != nil {
		return deps{}, err
	}
	runner, err := o.runner(log)
	if err != nil {
		return deps{}, err
	}
	return deps{log: log, python: python, runner: runner}, nil
}

func (o *runOptions) runner(log *slog.Logger) (*sandbox.Runner, error) {
	return sandbox.New(sandbox.Config{DefaultTimeout: o.timeout, Logger: log})
}

// interpreter resolves the Python to run: --python, else the real
// executable behind python3 on PATH (which may be a pyenv shim script).
func (o *runOptions) interpreter(ctx context.Context) (string, error) {
	name := o.python
	if name == "" {
		name = "python3"
	}
	exe, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("find Python %q: %w (install Python 3 or pass --python PATH)", name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, exe, "-c", "import json, sys; print(json.dumps(sys.executable))").Output()
	if err != nil {
		return "", fmt.Errorf("run %s: %w", exe, err)
	}
	var real string
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(out))), &real); err != nil || real == "" {
		return "", fmt.Errorf("%s did not report its executable", exe)
	}
	return real, nil
}

// contentOptions are the flags that shape what a model receives from the
// MCP server, shared by every command that serves MCP.
type contentOptions struct {
	imageBudget int64
	sampleFixes bool
}

func (o *contentOptions) addFlags(fs *pflag.FlagSet) {
	fs.Int64Var(&o.imageBudget, "image-budget", 1<<20, "bytes of images (PNG, JPEG, GIF, WebP under output/) returned inline in one run result; the rest come back as resource links")
	fs.BoolVar(&o.sampleFixes, "sample-fixes", false, "when a run fails, ask the client's model (MCP sampling) for a short fix suggestion and return it beside the error")
}
