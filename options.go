package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/pflag"

	"github.com/prims-mcp/prims/internal/human"
	"github.com/prims-mcp/prims/mcp"
	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/sandbox/egress"
	"github.com/prims-mcp/prims/session"
	"github.com/prims-mcp/prims/workspace"
	"github.com/prims-mcp/prims/workspace/artifactstore"
	"github.com/prims-mcp/prims/workspace/pythonenv"
)

// runOptions are the flags shared by every command that runs code.
type runOptions struct {
	pythons    []string
	timeout    time.Duration
	maxTimeout time.Duration
	logLevel   string
	jsonLogs   bool // log JSON lines (prims serve) instead of text
	envOptions

	isolation         string
	network           bool
	allowPrivateFetch bool
	allowHosts        []string
	limits            sandbox.Limits
	warm              int
	zygote            bool
	warmIdle          time.Duration
	preload           []string
	// probeCache keeps what the host and the interpreter were found to
	// support for the next process (prims run, which lives for one run).
	probeCache bool
}

// probeDir is where probe answers are kept, "" when they are not.
func (o *runOptions) probeDir() string {
	if !o.probeCache {
		return ""
	}
	dir := o.cacheDir
	if dir == "" {
		d, err := pythonenv.DefaultDir()
		if err != nil {
			return ""
		}
		dir = d
	}
	return filepath.Join(dir, "probes")
}

// envOptions configure the cache of environments that requirements are
// installed into.
type envOptions struct {
	cacheDir       string
	cacheMax       int64
	indexURL       string
	extraIndexURLs []string
	findLinks      []string
	offline        bool
	allowDirect    bool
	onlyBinary     bool
	installTimeout time.Duration
}

func (o *runOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringArrayVar(&o.pythons, "python", nil, "Python interpreter to run code with (default: the real executable behind python3 on PATH); repeat to offer more versions")
	fs.Var(newDurationValue(&o.timeout, 60*time.Second, false), "timeout", "wall-clock limit of a run that asks for none")
	fs.Var(newDurationValue(&o.maxTimeout, 10*time.Minute, false), "max-timeout", "largest wall-clock limit a run may ask for")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level on stderr: debug, info, warn or error")
	o.envOptions.addFlags(fs)
	fs.StringVar(&o.isolation, "isolation", "auto", "sandbox policy: strict (full isolation or refuse to start), auto (the strongest the host supports) or off (development only: no isolation)")
	fs.BoolVar(&o.network, "network", false, "let the code reach the network (off by default)")
	fs.Var((*hostsValue)(&o.allowHosts), "allow-host", "let the code reach this host through the server's egress proxy: api.example.com, *.example.com (subdomains), optionally :port (default 80 and 443); repeatable, or several separated by commas or spaces")
	fs.BoolVar(&o.allowPrivateFetch, "allow-private-fetch", false, "let mount_file, run_code's files and persist_artifact reach loopback, private, link-local and metadata addresses (refused by default)")
	d := sandbox.DefaultLimits
	fs.Var(newBytesValue(&o.limits.Memory, d.Memory), "memory", "memory a run may use, all its processes together (e.g. 512MiB, 2GiB)")
	fs.Var(newDurationValue(&o.limits.CPUTime, d.CPUTime, false), "cpu-time", "CPU time a process of a run may use")
	fs.Var(newCountValue(&o.limits.MaxProcs, d.MaxProcs, 1), "max-procs", "processes and threads a run may have at once")
	fs.Var(newBytesValue(&o.limits.MaxFileSize, d.MaxFileSize), "max-file-size", "largest file a run may write")
	fs.Var(newCountValue(&o.limits.MaxOpenFiles, d.MaxOpenFiles, 1), "max-open-files", "open files per process of a run")
	fs.Var(newBytesValue(&o.limits.WorkspaceQuota, d.WorkspaceQuota), "workspace-quota", "bytes the workspace may hold while code runs")
	fs.Var(newCountValue(&o.warm, 1, 0), "warm", "sandboxes kept started and waiting for code, per recently used interpreter and workspace (0: none)")
	fs.Var(newDurationValue(&o.warmIdle, 5*time.Minute, false), "warm-idle", "how long a waiting sandbox may stay unused before it is stopped")
	fs.BoolVar(&o.zygote, "zygote", true, "with --warm, fork each run's fresh interpreter from a zygote per workspace and environment instead of keeping whole sandboxes waiting (namespaces tier)")
	fs.StringSliceVar(&o.preload, "preload", nil, "modules the waiting interpreter imports before the code arrives, e.g. numpy,pandas (their import-time state is shared by all runs)")
}

func (o *envOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.cacheDir, "cache-dir", "", "where environments and pip's cache live (default: $XDG_CACHE_HOME/prims)")
	cacheMax := newBytesValue(&o.cacheMax, 5<<30)
	cacheMax.none = true
	fs.Var(cacheMax, "cache-max-bytes", "size cap of the environment cache, such as 5GiB; least recently used environments are evicted (none: no cap)")
	fs.StringVar(&o.indexURL, "index-url", "", "package index for requirements (default: $PIP_INDEX_URL, else pip's)")
	fs.StringArrayVar(&o.extraIndexURLs, "extra-index-url", nil, "additional package index (repeatable; default: $PIP_EXTRA_INDEX_URL)")
	fs.StringArrayVar(&o.findLinks, "find-links", nil, "directory or page of wheels to install from (repeatable; default: $PIP_FIND_LINKS)")
	fs.BoolVar(&o.offline, "offline", false, "install only from --find-links and pip's cache, never from an index")
	fs.BoolVar(&o.allowDirect, "allow-direct-requirements", false, "allow requirements that are local paths or URLs")
	fs.BoolVar(&o.onlyBinary, "only-binary", false, "install wheels only: never build a source distribution (whose build runs the package's own code, in the install sandbox)")
	fs.Var(newDurationValue(&o.installTimeout, 5*time.Minute, false), "install-timeout", "limit for one environment install")
}

// cache opens the environment cache. Without --cache-dir and without a
// home (desktop launchers may start the server with a bare environment),
// it falls back to a temporary directory that remove deletes.
func (o *envOptions) cache(log *slog.Logger, confine pythonenv.ConfineFunc) (c *pythonenv.Cache, remove func(), err error) {
	dir, remove := o.cacheDir, func() {}
	if dir == "" {
		if _, derr := pythonenv.DefaultDir(); derr != nil {
			tmp, terr := os.MkdirTemp("", "prims-cache-")
			if terr != nil {
				return nil, nil, fmt.Errorf("%w, and no temporary directory instead: %w", derr, terr)
			}
			log.Warn("neither $XDG_CACHE_HOME nor $HOME is set: environments are cached in a temporary directory and deleted on exit; pass --cache-dir to keep them", "dir", tmp)
			dir = tmp
			remove = func() {
				if err := os.RemoveAll(tmp); err != nil {
					log.Warn("remove the temporary cache", "err", err)
				}
			}
		}
	}
	c, err = pythonenv.New(pythonenv.Options{
		Dir:            dir,
		MaxBytes:       o.cacheMax,
		IndexURL:       o.indexURL,
		ExtraIndexURLs: o.extraIndexURLs,
		FindLinks:      o.findLinks,
		Offline:        o.offline,
		AllowDirect:    o.allowDirect,
		OnlyBinary:     o.onlyBinary,
		InstallTimeout: o.installTimeout,
		Confine:        confine,
		Logger:         log,
	})
	if err != nil {
		remove()
		return nil, nil, err
	}
	return c, remove, nil
}

// hostsValue is a repeatable host list flag that also takes several hosts
// in one value, separated by commas or spaces, and ignores an empty one: an
// installer that fills one field (the .mcpb bundle's user_config) passes
// "--allow-host=" for none and "--allow-host=a.com, b.com" for two.
type hostsValue []string

func (h *hostsValue) Type() string { return "stringArray" }

func (h *hostsValue) String() string { return strings.Join(*h, ",") }

func (h *hostsValue) Set(s string) error {
	*h = append(*h, strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })...)
	return nil
}

// bytesValue is a byte count flag that accepts 1024, 64KiB, 512MiB, 2GiB,
// 1GB, and with none set the word "none" (stored as -1: no cap).
type bytesValue struct {
	p    *int64
	none bool
}

func newBytesValue(p *int64, def int64) *bytesValue {
	*p = def
	return &bytesValue{p: p}
}

func (b *bytesValue) Type() string { return "bytes" }

func (b *bytesValue) String() string {
	if b.none && *b.p < 0 {
		return "none"
	}
	return human.ExactBytes(*b.p)
}

func (b *bytesValue) Set(s string) error {
	t := strings.TrimSpace(s)
	if b.none && strings.EqualFold(t, "none") {
		*b.p = -1
		return nil
	}
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
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		if b.none {
			return fmt.Errorf("%q is not a positive size such as 512MiB or 2GiB, or none", s)
		}
		return fmt.Errorf("%q is not a positive size such as 512MiB or 2GiB", s)
	}
	*b.p = n * mult
	return nil
}

// intBytesValue is a bytesValue for an int.
type intBytesValue struct {
	p *int
	v int64
}

func newIntBytesValue(p *int, def int) *intBytesValue {
	*p = def
	return &intBytesValue{p: p, v: int64(def)}
}

func (b *intBytesValue) Type() string   { return "bytes" }
func (b *intBytesValue) String() string { return human.ExactBytes(int64(*b.p)) }

func (b *intBytesValue) Set(s string) error {
	if err := (&bytesValue{p: &b.v}).Set(s); err != nil {
		return err
	}
	if b.v > math.MaxInt32 {
		return fmt.Errorf("%q is too large: at most %s", s, human.ExactBytes(math.MaxInt32))
	}
	*b.p = int(b.v)
	return nil
}

// A limit of zero or less is a typo, not a wish: the duration and count
// flags refuse it when they are parsed, with the flag's name.

// durationValue is a duration flag that refuses negative durations, and
// zero unless zeroOK.
type durationValue struct {
	p      *time.Duration
	zeroOK bool
}

func newDurationValue(p *time.Duration, def time.Duration, zeroOK bool) *durationValue {
	*p = def
	return &durationValue{p: p, zeroOK: zeroOK}
}

func (d *durationValue) Type() string   { return "duration" }
func (d *durationValue) String() string { return d.p.String() }

func (d *durationValue) Set(s string) error {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a duration such as 90s, 5m or 1h", s)
	case v < 0, v == 0 && !d.zeroOK:
		if d.zeroOK {
			return fmt.Errorf("%s is negative: give 0 or more, such as 30s", s)
		}
		return fmt.Errorf("%s is not more than zero: give a duration such as 30s or 5m", s)
	}
	*d.p = v
	return nil
}

// countValue is an int flag that refuses numbers below min.
type countValue struct {
	p   *int
	min int
}

func newCountValue(p *int, def, min int) *countValue {
	*p = def
	return &countValue{p: p, min: min}
}

func (c *countValue) Type() string   { return "int" }
func (c *countValue) String() string { return strconv.Itoa(*c.p) }

func (c *countValue) Set(s string) error {
	v, err := strconv.Atoi(strings.TrimSpace(s))
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a whole number", s)
	case v < c.min:
		return fmt.Errorf("%d is too small: give %d or more", v, c.min)
	}
	*c.p = v
	return nil
}

func (o *runOptions) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	if o.jsonLogs {
		return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})), nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})), nil
}

// deps is what every code-running command builds from its flags.
type deps struct {
	log      *slog.Logger
	python   string // the default interpreter's real executable
	discover pythonenv.DiscoverOptions
	envs     *pythonenv.Cache
	runner   *sandbox.Runner
	cleanup  func() // removes a temporary cache
}

// close stops the runner's sandboxes, then removes what deps made for this
// process alone.
func (d deps) close() {
	d.runner.Close()
	d.cleanup()
}

func (o *runOptions) deps(ctx context.Context) (deps, error) {
	log, err := o.logger()
	if err != nil {
		return deps{}, err
	}
	python, err := o.interpreter()
	if err != nil {
		return deps{}, err
	}
	runner, err := o.runner(log)
	if err != nil {
		return deps{}, err
	}
	envs, cleanup, err := o.cache(log, session.ConfineInstalls(runner))
	if err != nil {
		runner.Close()
		return deps{}, err
	}
	return deps{
		log:      log,
		python:   python,
		discover: pythonenv.DiscoverOptions{Explicit: o.pythons, ProbeCache: o.probeDir()},
		envs:     envs,
		runner:   runner,
		cleanup:  cleanup,
	}, nil
}

func (o *runOptions) runner(log *slog.Logger) (*sandbox.Runner, error) {
	return sandbox.New(sandbox.Config{
		DefaultTimeout: o.timeout,
		Logger:         log,
		Isolation:      sandbox.Isolation(o.isolation),
		Network:        o.network,
		Egress:         egress.Policy{Allow: o.allowHosts, AllowPrivate: o.allowPrivateFetch},
		Limits:         o.limits,
		Warm:           o.warm,
		WarmIdle:       o.warmIdle,
		NoZygote:       !o.zygote,
		Preload:        o.preload,
		ProbeCache:     o.probeDir(),
	})
}

// interpreter finds the default Python: --python, else python3 on PATH. It
// is not started here: the server probes it once the client has
// initialized, so that initialize is answered without waiting for an
// interpreter.
func (o *runOptions) interpreter() (string, error) {
	name := "python3"
	if len(o.pythons) > 0 {
		name = o.pythons[0]
	}
	exe, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("find Python %q: %w (install Python 3 or pass --python PATH)", name, err)
	}
	if abs, err := filepath.Abs(exe); err == nil {
		exe = abs
	}
	return exe, nil
}

// contentOptions are the flags that shape what a model receives from the
// MCP server, shared by every command that serves MCP.
type contentOptions struct {
	outputBudget int
	imageBudget  int64
	sampleFixes  bool

	artifactStore  string
	persistOutputs bool
	maxStates      int
	stateIdle      time.Duration
}

func (o *contentOptions) addFlags(fs *pflag.FlagSet) {
	fs.Var(newIntBytesValue(&o.outputBudget, 32<<10), "output-budget", "bytes of each output stream returned inline (head and tail)")
	fs.Var(newBytesValue(&o.imageBudget, 1<<20), "image-budget", "bytes of images (PNG, JPEG, GIF, WebP under output/) returned inline in one run result; the rest come back as resource links")
	fs.IntVar(&o.maxStates, "max-states", 8, "states (run_code's state: live interpreters kept between calls) one session may keep")
	fs.DurationVar(&o.stateIdle, "state-idle", 30*time.Minute, "a state unused this long ends and frees its memory")
	fs.BoolVar(&o.sampleFixes, "sample-fixes", false, "when a run fails, ask the client's model (MCP sampling) for a short fix suggestion and return it beside the error")
	fs.StringVar(&o.artifactStore, "artifact-store", "", "where persist_artifact keeps files given no presigned URL: s3://bucket?region=R[&endpoint=URL&use_path_style=true], file:///dir, gs://bucket or azblob://container; credentials come from each backend's standard environment")
	fs.BoolVar(&o.persistOutputs, "persist-outputs", false, "store each run's new or changed output/ files in --artifact-store when the run ends, and list them in the result")
}

// openStore opens --artifact-store; without the flag it returns nil (a nil
// *artifactstore.Store closes fine). A store that cannot be reached is
// logged, not fatal: persist_artifact reports it per call, and the store may
// come back.
func (o *contentOptions) openStore(ctx context.Context, log *slog.Logger) (*artifactstore.Store, error) {
	if o.artifactStore == "" {
		if o.persistOutputs {
			return nil, errors.New("--persist-outputs needs --artifact-store: the store to keep the files in")
		}
		return nil, nil
	}
	st, err := artifactstore.Open(ctx, o.artifactStore, artifactstore.Options{})
	if err != nil {
		return nil, fmt.Errorf("--artifact-store: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := st.Check(cctx); err != nil {
		log.Warn("artifact store not reachable now; persist_artifact will try again per call", "store", st.String(), "err", err)
	}
	return st, nil
}

// serverConfig is the MCP server configuration that prims stdio and prims
// serve both build from their flags.
func serverConfig(d deps, r *runOptions, c *contentOptions) mcp.Config {
	return mcp.Config{
		Python:                  d.python,
		Discover:                d.discover,
		Envs:                    d.envs,
		AllowDirectRequirements: r.allowDirect,
		Transfer:                workspace.Limits{AllowPrivate: r.allowPrivateFetch},
		DefaultTimeout:          r.timeout,
		MaxTimeout:              r.maxTimeout,
		OutputBudget:            c.outputBudget,
		ImageBudget:             c.imageBudget,
		SampleFixes:             c.sampleFixes,
		PersistOutputs:          c.persistOutputs,
		MaxStates:               c.maxStates,
		StateIdle:               c.stateIdle,
		Version:                 version(),
		Logger:                  d.log,
	}
}
