package pythonenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// Interpreter is one Python installation found on the host.
type Interpreter struct {
	Path       string // real executable (resolved sys.executable, never a pyenv shim script)
	Version    string // "3.11.7"
	BasePrefix string // sys.base_prefix: the tree a sandbox must mount read-only for this interpreter to run
	Source     string // "flag", "PATH", "pyenv", "system"

	// Pip is the interpreter whose pip installs packages for this one
	// ("<Pip> -m pip --python <env>/bin/python install ..."): Path itself when
	// its own pip is recent enough, else another discovered interpreter's.
	// Empty when no usable pip was found.
	Pip        string
	PipVersion string
	// NoPip says why Pip is empty and how to fix it: such an interpreter
	// runs code, but no requirements can be installed for it.
	NoPip string
}

// Skipped is a candidate interpreter Discover rejected, and why.
type Skipped struct{ Path, Reason string }

// DiscoverOptions tunes Discover.
type DiscoverOptions struct {
	Explicit []string // --python flags, tried first and in this order

	// OnlyExplicit skips the search of PATH, pyenv and system directories.
	OnlyExplicit bool

	// PyenvRoot overrides $PYENV_ROOT (default ~/.pyenv).
	PyenvRoot string

	// ProbeTimeout bounds each interpreter probe (default 5s). A probe is
	// one Python start; a pyenv shim adds a bash start.
	ProbeTimeout time.Duration

	// ProbeCache, when set, is a directory where probe answers are kept
	// for the next process (see cachedProbe).
	ProbeCache string
}

// minPip is the first pip with "pip --python", which lets one pip install
// into an environment that has none.
var minPip = [3]int{22, 3, 0}

// probeScript runs on every candidate, so it must stay valid Python 2: an
// old interpreter should be reported as too old, not as broken. It runs with
// -S (no site import: half the start time of a pyenv build); pip is then
// found by its metadata, in Go.
const probeScript = `import sys, json
sys.stdout.write(json.dumps({"executable": sys.executable,
    "version": "%d.%d.%d" % sys.version_info[:3],
    "base_prefix": getattr(sys, "base_prefix", sys.prefix)}))
`

type probe struct {
	Executable        string `json:"executable"`
	Version           string `json:"version"`
	BasePrefix        string `json:"base_prefix"`
	Pip               string `json:"-"`
	PipRequiresPython string `json:"-"`
}

// findPip reads the version and Requires-Python of the pip installed in an
// interpreter's own site directories, in the order site puts them on
// sys.path (Debian's dist-packages included).
func findPip(basePrefix, version string) (pipVersion, requiresPython string) {
	mm := "python" + majorMinor(version)
	for _, dir := range []string{
		filepath.Join(basePrefix, "local", "lib", mm, "dist-packages"),
		filepath.Join(basePrefix, "lib", mm, "site-packages"),
		filepath.Join(basePrefix, "lib", "python3", "dist-packages"),
	} {
		matches, _ := filepath.Glob(filepath.Join(dir, "pip-*.dist-info", "METADATA"))
		for _, m := range matches {
			data, err := os.ReadFile(m)
			if err != nil {
				continue
			}
			header, _, _ := strings.Cut(string(data), "\n\n")
			for _, line := range strings.Split(header, "\n") {
				if v, ok := strings.CutPrefix(line, "Version:"); ok {
					pipVersion = strings.TrimSpace(v)
				} else if v, ok := strings.CutPrefix(line, "Requires-Python:"); ok {
					requiresPython = strings.TrimSpace(v)
				}
			}
			if pipVersion != "" {
				return pipVersion, requiresPython
			}
		}
	}
	return "", ""
}

type candidate struct {
	path, source string
	probe        probe
	real         string // resolved executable
	err          string // skip reason
}

// Discover finds the Python interpreters on this host: the explicit paths,
// the python3 on PATH (resolved through pyenv shims to the real executable),
// pyenv versions and /usr/bin, /usr/local/bin python3.X. Candidates are
// probed in parallel. Results are de-duplicated by real path, ordered flag,
// PATH, pyenv, system (newest first within each), and each interpreter is
// paired with a pip that can install for it. Rejected candidates come back
// as Skipped with the reason.
func Discover(ctx context.Context, opts DiscoverOptions) ([]Interpreter, []Skipped) {
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = 5 * time.Second
	}
	cands := candidates(opts)

	g, gctx := errgroup.WithContext(ctx)
	for i := range cands {
		c := &cands[i]
		if c.err != "" {
			continue
		}
		g.Go(func() error {
			c.probe, c.err = cachedProbe(gctx, opts.ProbeCache, c.path, opts.ProbeTimeout)
			if c.err == "" {
				if real, err := filepath.EvalSymlinks(c.probe.Executable); err == nil {
					c.real = real
				} else {
					c.real = c.probe.Executable
				}
			}
			return nil
		})
	}
	g.Wait() // probes report through c.err, never an error

	var skipped []Skipped
	var found []*candidate
	seen := map[string]bool{}
	for i := range cands {
		c := &cands[i]
		if c.err == "" && seen[c.real] {
			continue
		}
		if c.err == "" && versionLess(c.probe.Version, "3.7") {
			// pip 22.3, the first with --python, needs Python 3.7.
			c.err = fmt.Sprintf("Python %s is too old: PRIMS runs Python 3.7 or newer (pip 22.3, the first that installs into another interpreter, needs 3.7)", c.probe.Version)
		}
		if c.err != "" {
			skipped = append(skipped, Skipped{Path: c.path, Reason: c.err})
			continue
		}
		seen[c.real] = true
		found = append(found, c)
	}

	var out []Interpreter
	for _, c := range found {
		in := Interpreter{Path: c.real, Version: c.probe.Version, BasePrefix: c.probe.BasePrefix, Source: c.source}
		if p := pipFor(c, cands); p != nil {
			in.Pip, in.PipVersion = p.real, p.probe.Pip
		} else {
			// Still good for code that needs no packages.
			fix := fmt.Sprintf("its own pip %s is too old; upgrade it with: %s -m pip install -U pip", c.probe.Pip, c.real)
			if c.probe.Pip == "" {
				fix = fmt.Sprintf("it has none; install one with: %s -m ensurepip && %s -m pip install -U pip", c.real, c.real)
			}
			in.NoPip = fmt.Sprintf("no pip >= 22.3 that supports Python %s was found (%s)", c.probe.Version, fix)
		}
		out = append(out, in)
	}
	return out, skipped
}

// Inspect probes the one interpreter at path (a name on PATH, a pyenv shim
// or a file), or says why it cannot be used.
func Inspect(ctx context.Context, path string) (Interpreter, error) {
	return InspectWith(ctx, path, DiscoverOptions{})
}

// InspectWith is Inspect with opts' timeout and cache.
func InspectWith(ctx context.Context, path string, opts DiscoverOptions) (Interpreter, error) {
	opts.Explicit, opts.OnlyExplicit = []string{path}, true
	found, skipped := Discover(ctx, opts)
	switch {
	case len(found) > 0:
		return found[0], nil
	case len(skipped) > 0:
		return Interpreter{}, fmt.Errorf("interpreter %s is unusable: %s", path, skipped[0].Reason)
	}
	return Interpreter{}, fmt.Errorf("interpreter %s is unusable: it did not answer", path)
}

// pipFor picks the pip that installs for c: its own when new enough, else
// the newest pip among the other probed interpreters whose Requires-Python
// admits c's version (pip --python runs pip's code under the target).
func pipFor(c *candidate, all []candidate) *candidate {
	usable := func(p *candidate) bool {
		return p.err == "" && p.real != "" && p.probe.Pip != "" &&
			!versionLess(p.probe.Pip, versionString(minPip)) &&
			requiresPythonAdmits(p.probe.PipRequiresPython, p.probe.Version, c.probe.Version)
	}
	if usable(c) {
		return c
	}
	var best *candidate
	for i := range all {
		p := &all[i]
		if usable(p) && (best == nil || versionLess(best.probe.Pip, p.probe.Pip)) {
			best = p
		}
	}
	return best
}

// requiresPythonAdmits checks the ">=X.Y" clauses of pip's Requires-Python,
// the only kind pip has used. Without metadata, pip is assumed to support
// only versions at least as new as the interpreter it came with.
func requiresPythonAdmits(spec, pipPython, target string) bool {
	if strings.TrimSpace(spec) == "" {
		return !versionLess(target, majorMinor(pipPython))
	}
	for _, clause := range strings.Split(spec, ",") {
		clause = strings.TrimSpace(clause)
		if v, ok := strings.CutPrefix(clause, ">="); ok && versionLess(target, strings.TrimSpace(v)) {
			return false
		}
	}
	return true
}

func candidates(opts DiscoverOptions) []candidate {
	var cs []candidate
	add := func(path, source string) {
		c := candidate{path: path, source: source}
		if fi, err := os.Stat(path); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				c.err = "not found"
			} else {
				c.err = fmt.Sprintf("cannot stat: %v", err)
			}
		} else if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			c.err = "not an executable file"
		}
		cs = append(cs, c)
	}
	for _, p := range opts.Explicit {
		if abs, err := filepath.Abs(p); err == nil && strings.ContainsRune(p, filepath.Separator) {
			p = abs
		} else if lp, err := exec.LookPath(p); err == nil {
			p = lp
		}
		add(pyenvTarget(p), "flag")
	}
	if opts.OnlyExplicit {
		return cs
	}
	if p, err := exec.LookPath("python3"); err == nil {
		add(pyenvTarget(p), "PATH")
	}

	root := opts.PyenvRoot
	if root == "" {
		root = os.Getenv("PYENV_ROOT")
	}
	if root == "" {
		if home, err := os.UserHomeDir(); err == nil {
			root = filepath.Join(home, ".pyenv")
		}
	}
	if root != "" {
		dirs, _ := filepath.Glob(filepath.Join(root, "versions", "*", "bin"))
		sortByVersionDesc(dirs, func(d string) string { return filepath.Base(filepath.Dir(d)) })
		for _, d := range dirs {
			p := filepath.Join(d, "python3")
			if _, err := os.Lstat(p); err != nil {
				p = filepath.Join(d, "python") // Python 2 builds have no python3
			}
			add(p, "pyenv")
		}
	}

	for _, dir := range []string{"/usr/local/bin", "/usr/bin"} {
		matches, _ := filepath.Glob(filepath.Join(dir, "python3.*"))
		var ps []string
		for _, m := range matches {
			if systemPython.MatchString(filepath.Base(m)) {
				ps = append(ps, m)
			}
		}
		sortByVersionDesc(ps, func(p string) string { return strings.TrimPrefix(filepath.Base(p), "python") })
		for _, p := range ps {
			add(p, "system")
		}
	}

	// Probing the same file twice is wasted time at server start; the real
	// executable is compared again after probing, which catches shims.
	seen := map[string]bool{}
	out := cs[:0]
	for _, c := range cs {
		id := c.path
		if r, err := filepath.EvalSymlinks(c.path); err == nil {
			id = r
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, c)
	}
	return out
}

var systemPython = regexp.MustCompile(`^python3\.[0-9]+$`)

// pyenvTarget returns the interpreter that shim, a pyenv shim, would run,
// when that is plain to see, so that probing it does not cost a bash start
// through pyenv (about 200 ms): one version named by PYENV_VERSION, else by
// the nearest .python-version from the working directory up, else by
// $PYENV_ROOT/version, and installed under $PYENV_ROOT/versions. Anything
// else ("system", several versions, a prefix such as "3.12", PYENV_DIR, not
// a shim) is left to the shim itself.
func pyenvTarget(shim string) string {
	dir := filepath.Dir(shim)
	if filepath.Base(dir) != "shims" {
		return shim
	}
	root := filepath.Dir(dir)
	if fi, err := os.Stat(filepath.Join(root, "versions")); err != nil || !fi.IsDir() {
		return shim
	}
	name := os.Getenv("PYENV_VERSION")
	if name == "" {
		if os.Getenv("PYENV_DIR") != "" {
			return shim // pyenv looks for .python-version from there
		}
		name = pyenvVersionFile(root)
	}
	if f := strings.Fields(name); len(f) == 1 {
		target := filepath.Join(root, "versions", f[0], "bin", filepath.Base(shim))
		if fi, err := os.Stat(target); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return target
		}
	}
	return shim
}

// pyenvVersionFile reads the version pyenv would take from files: the
// nearest .python-version from the working directory up, else
// root/version. Comment lines are skipped; several versions come back
// space-separated.
func pyenvVersionFile(root string) string {
	var names []string
	read := func(path string) bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				names = append(names, strings.Fields(line)...)
			}
		}
		return true
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if read(filepath.Join(d, ".python-version")) {
				return strings.Join(names, " ")
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	read(filepath.Join(root, "version"))
	return strings.Join(names, " ")
}

func runProbe(ctx context.Context, path string, timeout time.Duration) (probe, string) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// -E -s: ignore PYTHON* variables and the user site, which could make
	// a good interpreter look broken. (-I would do both but is not in 2.7.)
	cmd := exec.CommandContext(ctx, path, "-E", "-s", "-S", "-c", probeScript)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	switch {
	case ctx.Err() != nil:
		return probe{}, fmt.Sprintf("did not answer within %s", timeout)
	case err != nil:
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		if msg == "" {
			msg = err.Error()
		}
		return probe{}, "broken: " + msg
	}
	var p probe
	if err := json.Unmarshal(stdout.Bytes(), &p); err != nil || p.Executable == "" || p.Version == "" {
		return probe{}, "broken: unexpected answer to the probe"
	}
	p.Pip, p.PipRequiresPython = findPip(p.BasePrefix, p.Version)
	return p, ""
}

// Select picks an interpreter by version: "3.12" or "3.12.1" match by
// components, taking the first match in Discover's order; "" takes the first
// explicit one, else the python3 on PATH, else the newest. The error lists
// the versions available, for a model to choose from.
func Select(interps []Interpreter, version string) (Interpreter, error) {
	if len(interps) == 0 {
		return Interpreter{}, errors.New("no usable Python interpreter was found on this server")
	}
	version = strings.TrimSpace(version)
	if version == "" {
		for _, src := range []string{"flag", "PATH"} {
			for _, in := range interps {
				if in.Source == src {
					return in, nil
				}
			}
		}
		best := interps[0]
		for _, in := range interps[1:] {
			if versionLess(best.Version, in.Version) {
				best = in
			}
		}
		return best, nil
	}
	if !versionSpec.MatchString(version) {
		return Interpreter{}, fmt.Errorf("python %q is not a version; use a version such as \"3.12\" (available: %s)", version, available(interps))
	}
	for _, in := range interps {
		if in.Version == version || strings.HasPrefix(in.Version, version+".") {
			return in, nil
		}
	}
	return Interpreter{}, fmt.Errorf("no Python %s on this server; available: %s", version, available(interps))
}

var versionSpec = regexp.MustCompile(`^[0-9]+(\.[0-9]+){0,2}$`)

func available(interps []Interpreter) string {
	var vs []string
	seen := map[string]bool{}
	for _, in := range interps {
		if !seen[in.Version] {
			seen[in.Version] = true
			vs = append(vs, in.Version)
		}
	}
	sortByVersionDesc(vs, func(s string) string { return s })
	return strings.Join(vs, ", ")
}

// parseVersion reads up to three numeric components; anything else ("rc1",
// "a") ends the component.
func parseVersion(s string) [3]int {
	var v [3]int
	for i, part := range strings.SplitN(s, ".", 3) {
		j := 0
		for j < len(part) && part[j] >= '0' && part[j] <= '9' {
			j++
		}
		v[i], _ = strconv.Atoi(part[:j])
	}
	return v
}

func versionString(v [3]int) string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }

func majorMinor(s string) string {
	v := parseVersion(s)
	return fmt.Sprintf("%d.%d", v[0], v[1])
}

func versionLess(a, b string) bool {
	va, vb := parseVersion(a), parseVersion(b)
	for i := range va {
		if va[i] != vb[i] {
			return va[i] < vb[i]
		}
	}
	return false
}

func sortByVersionDesc(s []string, version func(string) string) {
	sort.SliceStable(s, func(i, j int) bool { return versionLess(version(s[j]), version(s[i])) })
}
