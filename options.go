package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
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

	isolation string
	network   bool
	limits    sandbox.Limits
}

func (o *runOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.python, "python", "", "Python interpreter to run code with (default: the real executable behind python3 on PATH)")
	fs.DurationVar(&o.timeout, "timeout", 60*time.Second, "wall-clock limit of a run that asks for none")
	fs.DurationVar(&o.maxTimeout, "max-timeout", 10*time.Minute, "largest wall-clock limit a run may ask for")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level on stderr: debug, info, warn or error")
	fs.StringVar(&o.isolation, "isolation", "auto", "sandbox policy: strict (full isolation or refuse to start), auto (the strongest the host supports) or off (development only: no isolation)")
	fs.BoolVar(&o.network, "network", false, "let the code reach the network (off by default)")
	d := sandbox.DefaultLimits
	fs.Var(newBytesValue(&o.limits.Memory, d.Memory), "memory", "memory a process of a run may use (e.g. 512MiB, 2GiB)")
	fs.DurationVar(&o.limits.CPUTime, "cpu-time", d.CPUTime, "CPU time a process of a run may use")
	fs.IntVar(&o.limits.MaxProcs, "max-procs", d.MaxProcs, "processes and threads a run may have at once")
	fs.Var(newBytesValue(&o.limits.MaxFileSize, d.MaxFileSize), "max-file-size", "largest file a run may write")
	fs.IntVar(&o.limits.MaxOpenFiles, "max-open-files", d.MaxOpenFiles, "open files per process of a run")
	fs.Var(newBytesValue(&o.limits.WorkspaceQuota, d.WorkspaceQuota), "workspace-quota", "bytes the workspace may hold while code runs")
}

// bytesValue is a byte count flag that accepts 1024, 64KiB, 512MiB, 2GiB, 1GB.
type bytesValue struct{ p *int64 }

func newBytesValue(p *int64, def int64) *bytesValue {
	*p = def
	return &bytesValue{p}
}

func (b *bytesValue) Type() string   { return "bytes" }
func (b *bytesValue) String() string { return humanSize(*b.p) }

func (b *bytesValue) Set(s string) error {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if v, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(v), u.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("%q is not a positive size such as 512MiB or 2GiB", s)
	}
	*b.p = n * mult
	return nil
}

func humanSize(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return fmt.Sprintf("%d%s", n/u.m, u.s)
		}
	}
	return strconv.FormatInt(n, 10)
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
	return sandbox.New(sandbox.Config{
		DefaultTimeout: o.timeout,
		Logger:         log,
		Isolation:      sandbox.Isolation(o.isolation),
		Network:        o.network,
		Limits:         o.limits,
	})
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
