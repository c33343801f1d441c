package pythonenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/sandbox/sandboxtest"
	"github.com/prims-mcp/prims/workspace/pythonenv/pythonenvtest"
)

var (
	interpOnce    sync.Once
	interpAll     []Interpreter // with a usable pip; those every user can run first
	interpSkipped []Skipped
)

// testInterps finds the interpreters with a usable pip the way the server
// does. Those every user can run come first: they start fastest (no pyenv
// site hooks) and a sandbox under another uid can run them.
func testInterps() []Interpreter {
	interpOnce.Do(func() {
		var all []Interpreter
		all, interpSkipped = Discover(context.Background(), DiscoverOptions{})
		for _, shared := range []bool{true, false} {
			for _, in := range all {
				if in.Pip != "" && othersCanReach(in.Path) == shared {
					interpAll = append(interpAll, in)
				}
			}
		}
	})
	return interpAll
}

// testInterp returns an interpreter with a usable pip, or skips (fails
// where PRIMS_REQUIRE names pip).
func testInterp(t testing.TB) Interpreter {
	t.Helper()
	all := testInterps()
	if len(all) == 0 {
		testenv.Skip(t, testenv.Pip, "no Python interpreter with a pip >= 22.3 found (skipped: %+v)", interpSkipped)
	}
	return all[0]
}

// testVersions returns n interpreters with pip, of distinct minor versions.
func testVersions(t testing.TB, n int) []Interpreter {
	t.Helper()
	var out []Interpreter
	seen := map[string]bool{}
	for _, in := range testInterps() {
		if mm := majorMinor(in.Version); !seen[mm] {
			seen[mm] = true
			out = append(out, in)
		}
	}
	if len(out) < n {
		testenv.Skip(t, testenv.Pythons, "needs %d Python versions with pip, found %d", n, len(out))
	}
	return out[:n]
}

// othersCanReach reports whether every user may traverse to path.
func othersCanReach(path string) bool {
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if p == filepath.Dir(p) {
			return true
		}
	}
}

func newTestCache(t testing.TB, index string, mod func(*Options)) *Cache {
	t.Helper()
	opts := Options{Dir: t.TempDir(), IndexURL: index, InstallTimeout: time.Minute}
	if mod != nil {
		mod(&opts)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.builds.Wait)
	return c
}

func basicIndex(t testing.TB) *pythonenvtest.Index {
	return pythonenvtest.NewIndex(t,
		pythonenvtest.Package{Name: "Base-Pkg", Version: "1.0"},
		pythonenvtest.Package{Name: "app", Version: "2.0", Requires: []string{"base-pkg>=1"}},
		pythonenvtest.Package{Name: "two", Version: "1.0"},
		pythonenvtest.Package{Name: "two", Version: "2.0"},
		pythonenvtest.Package{Name: "broken", Version: "1.0", Broken: true},
		pythonenvtest.Package{Name: "other", Version: "0.1"},
	)
}

// pyRun runs code with an environment's interpreter the way a sandboxed run
// would: no bytecode writes, nothing from our environment.
func pyRun(t testing.TB, python, code string) string {
	t.Helper()
	cmd := exec.Command(python, "-c", code)
	cmd.Env = []string{"PYTHONDONTWRITEBYTECODE=1", "PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s -c %q: %v\n%s", python, code, err, out)
	}
	return strings.TrimSpace(string(out))
}

func acquire(t testing.TB, c *Cache, interp Interpreter, reqs ...string) *Env {
	t.Helper()
	env, err := c.Acquire(context.Background(), interp, reqs, nil)
	if err != nil {
		t.Fatalf("Acquire(%q): %v", reqs, err)
	}
	t.Cleanup(env.Release)
	return env
}

// assertNoLeftovers checks that no environment was published and no build
// directory survived.
func assertNoLeftovers(t *testing.T, c *Cache) {
	t.Helper()
	c.builds.Wait()
	for _, d := range []string{c.envsDir, c.tmpDir} {
		entries, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 0 {
			t.Errorf("%s holds %d entries after a failed build, want none (first: %s)", d, len(entries), entries[0].Name())
		}
	}
}

func TestAcquireWithDependency(t *testing.T) {
	t.Parallel()
	interp := testInterp(t)
	idx := basicIndex(t)
	c := newTestCache(t, idx.URL, nil)

	var mu sync.Mutex
	var lines []string
	env, err := c.Acquire(context.Background(), interp, []string{"App"}, func(s string) {
		mu.Lock()
		lines = append(lines, s)
		mu.Unlock()
	})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	defer env.Release()
	if env.Hit {
		t.Error("first Acquire reports a cache hit")
	}
	if env.Python != filepath.Join(env.Dir, "bin", "python") || filepath.Dir(env.Dir) != c.envsDir {
		t.Errorf("Env = %+v, want it under %s", env, c.envsDir)
	}
	got := pyRun(t, env.Python, "import sys, app, base_pkg; print(sys.prefix, app.__version__, base_pkg.__version__)")
	if want := env.Dir + " 2.0 1.0"; got != want {
		t.Errorf("in the env: %q, want %q (sys.prefix must be the published directory)", got, want)
	}
	// Bytecode was compiled at build time, so read-only runs import fast.
	if pyc, _ := filepath.Glob(filepath.Join(env.Dir, "lib", "python*", "site-packages", "app", "__pycache__", "*.pyc")); len(pyc) == 0 {
		t.Error("no compiled bytecode for app in the environment")
	}
	mu.Lock()
	wantLines := []string{"creating environment", "resolving app", "downloading app-2.0 (", "resolving base-pkg>=1",
		"downloading base_pkg-1.0 (", "installing base-pkg, app", "installed app-2.0 base-pkg-1.0"}
	if len(lines) != len(wantLines) {
		t.Errorf("progress = %q, want %d lines like %q", lines, len(wantLines), wantLines)
	} else {
		for i := range lines {
			if !strings.HasPrefix(lines[i], wantLines[i]) {
				t.Errorf("progress[%d] = %q, want prefix %q", i, lines[i], wantLines[i])
			}
		}
	}
	mu.Unlock()

	again := acquire(t, c, interp, "app")
	if !again.Hit || again.Dir != env.Dir {
		t.Errorf("second Acquire = %+v, want a hit on %s", again, env.Dir)
	}
	if n := c.stats.builds.Load(); n != 1 {
		t.Errorf("%d builds, want 1", n)
	}
}

func TestAcquireTwoVersions(t *testing.T) {
	t.Parallel()
	interp := testInterp(t)
	c := newTestCache(t, basicIndex(t).URL, nil)
	v1 := acquire(t, c, interp, "two==1.0")
	v2 := acquire(t, c, interp, "two==2.0")
	if v1.Key == v2.Key {
		t.Fatalf("both versions share key %s", v1.Key)
	}
	for env, want := range map[*Env]string{v1: "1.0", v2: "2.0"} {
		if got := pyRun(t, env.Python, "import two; print(two.__version__)"); got != want {
			t.Errorf("%s: two.__version__ = %s, want %s", env.Key, got, want)
		}
	}
}

func TestAcquireErrors(t *testing.T) {
	t.Parallel()
	interp := testInterp(t)
	idx := basicIndex(t)
	tests := []struct {
		name      string
		index     string
		reqs      []string
		wantKind  string
		wantInErr string // in Summary
		wantLine  string // in some PipLine
	}{
		{"build fails", idx.URL, []string{"broken"}, "build_failed", "building broken from source failed", "RuntimeError: pythonenvtest: deliberate build failure"},
		{"unknown package", idx.URL, []string{"app", "nosuchpkg"}, "not_found", `no package named "nosuchpkg"`, "No matching distribution found for nosuchpkg"},
		{"no matching version", idx.URL, []string{"two>=3"}, "no_matching_version", "available for Python", "(from versions: 1.0, 2.0)"},
		{"conflict", idx.URL, []string{"two==1.0", "two==2.0"}, "no_matching_version", "conflict", "ResolutionImpossible"},
		{"index answers 404", pythonenvtest.NotFoundIndex(t), []string{"app"}, "not_found", `no package named "app"`, "No matching distribution found for app"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCache(t, tt.index, nil)
			env, err := c.Acquire(context.Background(), interp, tt.reqs, nil)
			if err == nil {
				env.Release()
				t.Fatal("Acquire succeeded, want an InstallError")
			}
			var ie *InstallError
			if !errors.As(err, &ie) {
				t.Fatalf("error %T %v is not an *InstallError", err, err)
			}
			if ie.Kind != tt.wantKind || !strings.Contains(ie.Summary, tt.wantInErr) {
				t.Errorf("InstallError = %s / %q, want %s / %q", ie.Kind, ie.Summary, tt.wantKind, tt.wantInErr)
			}
			if !strings.Contains(strings.Join(ie.PipLines, "\n"), tt.wantLine) {
				t.Errorf("PipLines = %q, want a line with %q", ie.PipLines, tt.wantLine)
			}
			if ie.Hint == "" {
				t.Error("no Hint")
			}
			all := err.Error() + "\n" + strings.Join(ie.PipLines, "\n")
			for _, host := range []string{c.opts.Dir, interp.BasePrefix + "/", os.TempDir() + "/"} {
				if strings.Contains(all, host) {
					t.Errorf("error text shows host path %s:\n%s", host, all)
				}
			}
			assertNoLeftovers(t, c)
		})
	}
}

func TestAcquireHangingIndex(t *testing.T) {
	t.Parallel()
	interp := testInterp(t)
	hanging := pythonenvtest.HangingIndex(t)

	t.Run("InstallTimeout", func(t *testing.T) {
		t.Parallel()
		c := newTestCache(t, hanging, func(o *Options) { o.InstallTimeout = 2 * time.Second })
		_, err := c.Acquire(context.Background(), interp, []string{"app"}, nil)
		var ie *InstallError
		if !errors.As(err, &ie) || ie.Kind != "timeout" {
			t.Fatalf("Acquire error = %v, want an InstallError of kind timeout", err)
		}
		assertNoLeftovers(t, c)
	})
	t.Run("context", func(t *testing.T) {
		t.Parallel()
		c := newTestCache(t, hanging, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := c.Acquire(ctx, interp, []string{"app"}, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Acquire error = %v, want context.DeadlineExceeded", err)
		}
		assertNoLeftovers(t, c)
	})
}

func TestAcquireConcurrentOneBuild(t *testing.T) {
	t.Parallel()
	interp := testInterp(t)
	c := newTestCache(t, basicIndex(t).URL, nil)
	key := c.Key(interp, []string{"app"})

	// The first caller's build waits, in its first progress line, until the
	// second caller has joined it: the two calls overlap for certain.
	joined := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		f := c.flights[key]
		return f != nil && f.waiters == 2
	}
	started := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	envs := make([]*Env, 2)
	errs := make([]error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		envs[0], errs[0] = c.Acquire(context.Background(), interp, []string{"app"}, func(string) {
			once.Do(func() {
				close(started)
				for !joined() {
					time.Sleep(time.Millisecond)
				}
			})
		})
	}()
	<-started
	go func() {
		defer wg.Done()
		envs[1], errs[1] = c.Acquire(context.Background(), interp, []string{"app"}, nil)
	}()
	wg.Wait()
	for i := range envs {
		if errs[i] != nil {
			t.Fatalf("Acquire %d: %v", i, errs[i])
		}
		defer envs[i].Release()
	}
	if n := c.stats.builds.Load(); n != 1 {
		t.Errorf("%d builds for two concurrent Acquires, want 1", n)
	}
	if envs[0].Dir != envs[1].Dir {
		t.Errorf("different environments: %s, %s", envs[0].Dir, envs[1].Dir)
	}
	if got := pyRun(t, envs[1].Python, "import app; print(app.__version__)"); got != "2.0" {
		t.Errorf("app.__version__ = %s", got)
	}
	// Both hold a pin: eviction must keep the environment until both release.
	c.mu.Lock()
	pins := c.pins[key].n
	c.mu.Unlock()
	if pins != 2 {
		t.Errorf("%d pins, want 2", pins)
	}
}

func TestAcquireCancelMidInstall(t *testing.T) {
	t.Parallel()
	interp := testInterp(t)
	idx := basicIndex(t)
	c := newTestCache(t, idx.URL, nil)
	idx.HangDownloads(true)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := c.Acquire(ctx, interp, []string{"app"}, func(line string) {
		if strings.HasPrefix(line, "downloading app") {
			cancel() // pip is now stuck downloading
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire error = %v, want context.Canceled", err)
	}
	assertNoLeftovers(t, c)

	idx.HangDownloads(false)
	env := acquire(t, c, interp, "app")
	if env.Hit {
		t.Error("Acquire after a cancelled build reports a hit")
	}
	if got := pyRun(t, env.Python, "import app, base_pkg; print(app.__version__)"); got != "2.0" {
		t.Errorf("app.__version__ = %s", got)
	}
}

// TestAcquireCrashMidInstall kills a process mid-build, as a crash of the
// server would, then checks that New cleans up and a fresh build succeeds.
func TestAcquireCrashMidInstall(t *testing.T) {
	t.Parallel()
	interp := testInterp(t)
	idx := basicIndex(t)
	dir := t.TempDir()
	idx.HangDownloads(true)

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "PYENV_HELPER=acquire", "PYENV_HELPER_DIR="+dir,
		"PYENV_HELPER_INDEX="+idx.URL, "PYENV_HELPER_PYTHON="+interp.Path)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "downloading app") {
		t.Logf("helper: %s", sc.Text())
	}
	cmd.Process.Kill()
	cmd.Wait()
	// Nothing of the install outlives the process that started it (pip's
	// command lines name the cache directory).
	sandboxtest.WaitGone(t, dir)
	entries, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	if len(entries) == 0 {
		t.Fatal("the killed build left no build directory: the test did not kill it mid-build")
	}

	idx.HangDownloads(false)
	c := newTestCache(t, idx.URL, func(o *Options) { o.Dir = dir })
	if entries, _ := os.ReadDir(c.tmpDir); len(entries) != 0 {
		t.Errorf("New left %d stale build directories", len(entries))
	}
	env := acquire(t, c, interp, "app")
	if env.Hit {
		t.Error("Acquire after a crash reports a hit")
	}
	if got := pyRun(t, env.Python, "import app, base_pkg; print(app.__version__)"); got != "2.0" {
		t.Errorf("app.__version__ = %s", got)
	}
}

// TestHelperProcess is the body of the processes TestAcquireCrashMidInstall
// kills and TestTwoProcessesBuildOnce runs side by side.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv("PYENV_HELPER")
	if mode == "" {
		t.Skip("helper process for TestAcquireCrashMidInstall and TestTwoProcessesBuildOnce")
	}
	interps, _ := Discover(context.Background(), DiscoverOptions{Explicit: []string{os.Getenv("PYENV_HELPER_PYTHON")}})
	c, err := New(Options{Dir: os.Getenv("PYENV_HELPER_DIR"), IndexURL: os.Getenv("PYENV_HELPER_INDEX")})
	if err != nil {
		t.Fatal(err)
	}
	env, err := c.Acquire(context.Background(), interps[0], []string{"app"}, func(line string) { fmt.Println(line) })
	if mode == "acquire" {
		t.Fatal("Acquire returned; it should have been killed")
	}
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("env %s %s\n", env.Dir, pyRun(t, env.Python, "import app; print(app.__version__)"))
	env.Release()
}

// TestTwoProcessesBuildOnce runs two processes that share one cache and
// want the same new environment at the same time: one builds it, the other
// waits for that build and uses it, so pip goes to the index once.
func TestTwoProcessesBuildOnce(t *testing.T) {
	t.Parallel()
	interp := testInterp(t)
	idx := basicIndex(t)
	dir := t.TempDir()
	idx.HangDownloads(true) // the first build holds its lock until released

	type helper struct {
		cmd   *exec.Cmd
		lines chan string
	}
	start := func() helper {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		cmd.Env = append(os.Environ(), "PYENV_HELPER=share", "PYENV_HELPER_DIR="+dir,
			"PYENV_HELPER_INDEX="+idx.URL, "PYENV_HELPER_PYTHON="+interp.Path)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		h := helper{cmd, make(chan string, 100)}
		go func() {
			defer close(h.lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				h.lines <- sc.Text()
			}
		}()
		return h
	}
	// await reads h's output until a line starts with prefix.
	await := func(h helper, prefix string) string {
		t.Helper()
		timeout := time.After(2 * time.Minute)
		for {
			select {
			case line, ok := <-h.lines:
				if !ok {
					t.Fatalf("helper ended before saying %q", prefix)
				}
				if strings.HasPrefix(line, prefix) {
					return line
				}
			case <-timeout:
				t.Fatalf("helper did not say %q in 2 minutes", prefix)
			}
		}
	}

	first := start()
	await(first, "downloading app")
	second := start()
	await(second, "waiting for another process building the same environment")
	idx.HangDownloads(false)
	got := []string{await(first, "env "), await(second, "env ")}
	for _, h := range []helper{first, second} {
		for range h.lines {
		}
		if err := h.cmd.Wait(); err != nil {
			t.Errorf("helper: %v", err)
		}
	}
	if got[0] != got[1] || !strings.HasSuffix(got[0], " 2.0") {
		t.Errorf("the two processes got %q and %q, want one environment with app 2.0", got[0], got[1])
	}
	if n := idx.Pages("app"); n != 1 {
		t.Errorf("pip asked the index for app %d times, want 1 (one build)", n)
	}
}

func TestEvictionHonorsPins(t *testing.T) {
	t.Parallel()
	interp := testInterp(t)
	// A cap of one byte: every environment not in use is evicted.
	c := newTestCache(t, basicIndex(t).URL, func(o *Options) { o.MaxBytes = 1 })
	exists := func(e *Env) bool { _, err := os.Stat(e.Dir); return err == nil }

	a := acquire(t, c, interp, "two==1.0") // held throughout
	b := acquire(t, c, interp, "two==2.0")
	if !exists(a) || !exists(b) {
		t.Fatal("a pinned environment was evicted")
	}
	b.Release()
	acquire(t, c, interp, "other") // its build runs eviction
	c.builds.Wait()                // which finishes after Acquire returns
	if exists(b) {
		t.Error("released environment b survived eviction under a 1-byte cap")
	}
	if !exists(a) {
		t.Fatal("pinned environment a was evicted")
	}
	if got := pyRun(t, a.Python, "import two; print(two.__version__)"); got != "1.0" {
		t.Errorf("pinned env broken: %s", got)
	}
	b2 := acquire(t, c, interp, "two==2.0")
	if b2.Hit {
		t.Error("Acquire of an evicted set reports a hit")
	}
}

func TestEvictionLRU(t *testing.T) {
	t.Parallel()
	interp := testInterp(t)
	c := newTestCache(t, basicIndex(t).URL, func(o *Options) { o.MaxBytes = -1 })
	var envs []*Env
	for _, r := range []string{"two==1.0", "two==2.0", "other"} {
		e := acquire(t, c, interp, r)
		e.Release()
		envs = append(envs, e)
	}
	// Use the oldest again: the second becomes least recently used.
	acquire(t, c, interp, "two==1.0").Release()

	var total int64
	for _, e := range c.listEnvs() {
		total += e.bytes
	}
	c.builds.Wait()             // the last build's own eviction pass is done
	c.opts.MaxBytes = total - 1 // room for all but one
	c.evict()
	var kept []bool
	for _, e := range envs {
		_, err := os.Stat(e.Dir)
		kept = append(kept, err == nil)
	}
	if diff := cmp.Diff([]bool{true, false, true}, kept); diff != "" {
		t.Errorf("kept after eviction (-want +got):\n%s", diff)
	}
}

func TestTwoInterpreters(t *testing.T) {
	t.Parallel()
	interps := testVersions(t, 2)
	c := newTestCache(t, basicIndex(t).URL, nil)
	var wg sync.WaitGroup
	envs := make([]*Env, 2)
	for i, in := range interps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			envs[i] = acquire(t, c, in, "app")
		}()
	}
	wg.Wait()
	if envs[0] == nil || envs[1] == nil {
		t.FailNow()
	}
	if envs[0].Key == envs[1].Key {
		t.Fatal("two interpreters share one key")
	}
	for i, e := range envs {
		got := pyRun(t, e.Python, "import sys, app; print('%d.%d.%d' % sys.version_info[:3], app.__version__)")
		if want := interps[i].Version + " 2.0"; got != want {
			t.Errorf("env for %s: %q, want %q", interps[i].Path, got, want)
		}
	}
}

func TestAcquireNoPip(t *testing.T) {
	t.Parallel()
	interp := testInterp(t)
	interp.Pip = ""
	c := newTestCache(t, "http://127.0.0.1:1/simple/", nil)
	_, err := c.Acquire(context.Background(), interp, []string{"app"}, nil)
	var ie *InstallError
	if !errors.As(err, &ie) || !strings.Contains(ie.Summary, "no pip") {
		t.Fatalf("Acquire = %v, want an InstallError about pip", err)
	}
}

func TestAcquireInvalidRequirements(t *testing.T) {
	t.Parallel()
	c := newTestCache(t, "http://127.0.0.1:1/simple/", nil)
	_, err := c.Acquire(context.Background(), Interpreter{Path: "/nonexistent"}, []string{"--index-url=http://evil"}, nil)
	var re *RequirementError
	if !errors.As(err, &re) {
		t.Fatalf("Acquire = %v, want a *RequirementError", err)
	}
}

func TestKey(t *testing.T) {
	in := Interpreter{Path: "/usr/bin/python3.11", Version: "3.11.2"}
	a, _ := New(Options{Dir: t.TempDir(), IndexURL: "http://a/simple/"})
	b, _ := New(Options{Dir: t.TempDir(), IndexURL: "http://b/simple/"})
	base := a.Key(in, []string{"numpy"})
	other := in
	other.Version = "3.11.3"
	for name, k := range map[string]string{
		"index":       b.Key(in, []string{"numpy"}),
		"version":     a.Key(other, []string{"numpy"}),
		"requirement": a.Key(in, []string{"numpy", "pandas"}),
	} {
		if k == base {
			t.Errorf("changing the %s keeps key %s", name, k)
		}
	}
	if again := a.Key(in, []string{"numpy"}); again != base {
		t.Errorf("key not stable: %s, %s", base, again)
	}
}

func TestNewTakesIndexFromEnvironment(t *testing.T) {
	t.Setenv("PIP_INDEX_URL", "http://idx/simple/")
	t.Setenv("PIP_EXTRA_INDEX_URL", "http://x1/ http://x2/")
	t.Setenv("PIP_FIND_LINKS", "/w")
	t.Setenv("PIP_NO_INDEX", "true")
	c, err := New(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"--no-index", "--find-links", "/w"}
	if diff := cmp.Diff(want, c.indexArgs()); diff != "" {
		t.Errorf("index args (-want +got):\n%s", diff)
	}
	c, _ = New(Options{Dir: t.TempDir(), IndexURL: "http://mine/simple/"})
	want = []string{"--index-url", "http://mine/simple/"}
	if diff := cmp.Diff(want, c.indexArgs()); diff != "" {
		t.Errorf("explicit index args (-want +got):\n%s", diff)
	}
}

// TestDamagedEnvironmentRebuilt damages a published environment in each way
// a disk, a cleaner or a hand can, and checks that the next Acquire notices,
// rebuilds, and hands out a working environment, never the broken one.
func TestDamagedEnvironmentRebuilt(t *testing.T) {
	t.Parallel()
	interp := testInterp(t)
	idx := basicIndex(t)
	sitePackages := func(t *testing.T, env *Env) string {
		m, _ := filepath.Glob(filepath.Join(env.Dir, "lib", "python*", "site-packages"))
		if len(m) != 1 {
			t.Fatalf("site-packages of %s: %v", env.Dir, m)
		}
		return m[0]
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, env *Env) error
	}{
		{"deleted bin/python", func(t *testing.T, env *Env) error { return os.Remove(env.Python) }},
		{"truncated package file", func(t *testing.T, env *Env) error {
			return os.Truncate(filepath.Join(sitePackages(t, env), "app", "__init__.py"), 0)
		}},
		{"deleted package file", func(t *testing.T, env *Env) error {
			return os.Remove(filepath.Join(sitePackages(t, env), "base_pkg", "__init__.py"))
		}},
		{"deleted package", func(t *testing.T, env *Env) error {
			return os.RemoveAll(filepath.Join(sitePackages(t, env), "app"))
		}},
		{"deleted metadata", func(t *testing.T, env *Env) error { return os.Remove(filepath.Join(env.Dir, metaFile)) }},
		{"truncated metadata", func(t *testing.T, env *Env) error { return os.Truncate(filepath.Join(env.Dir, metaFile), 10) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCache(t, idx.URL, nil)
			first, err := c.Acquire(context.Background(), interp, []string{"app"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			first.Release()
			if err := tt.damage(t, first); err != nil {
				t.Fatal(err)
			}
			var lines []string
			var mu sync.Mutex
			env, err := c.Acquire(context.Background(), interp, []string{"app"}, func(s string) {
				mu.Lock()
				lines = append(lines, s)
				mu.Unlock()
			})
			if err != nil {
				t.Fatalf("Acquire after damage: %v", err)
			}
			defer env.Release()
			if env.Hit || c.stats.builds.Load() != 2 {
				t.Errorf("Acquire after damage: hit %t, %d builds; want a rebuild (no hit, 2 builds)", env.Hit, c.stats.builds.Load())
			}
			mu.Lock()
			if len(lines) == 0 || !strings.Contains(lines[0], "damaged") {
				t.Errorf("progress = %q, want it to say the environment was damaged", lines)
			}
			mu.Unlock()
			if got := pyRun(t, env.Python, "import app, base_pkg; print(app.__version__, base_pkg.__version__)"); got != "2.0 1.0" {
				t.Errorf("rebuilt environment: %q", got)
			}
			if again := acquire(t, c, interp, "app"); !again.Hit {
				t.Error("the rebuilt environment is not reused")
			}
			c.builds.Wait()
			if entries, _ := os.ReadDir(c.tmpDir); len(entries) != 0 {
				t.Errorf("tmp/ keeps %d entries, want the damaged environment removed", len(entries))
			}
		})
	}
}

// TestDamagedEnvironmentHeldByARun damages an environment a run still
// holds: the next Acquire rebuilds beside it, and the holder's copy stays
// until it lets go (a running program keeps its files).
func TestDamagedEnvironmentHeldByARun(t *testing.T) {
	t.Parallel()
	interp := testInterp(t)
	c := newTestCache(t, basicIndex(t).URL, nil)
	held := acquire(t, c, interp, "app")
	heldDir, err := os.Open(held.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer heldDir.Close()
	if err := os.Remove(filepath.Join(held.Dir, metaFile)); err != nil {
		t.Fatal(err)
	}
	env := acquire(t, c, interp, "app")
	if env.Hit {
		t.Fatal("a damaged environment was handed out")
	}
	fi, _ := heldDir.Stat()
	if di, err := os.Stat(env.Dir); err != nil || os.SameFile(fi, di) {
		t.Fatalf("the rebuilt environment is the damaged directory (err %v)", err)
	}
	if _, err := heldDir.Readdirnames(-1); err != nil {
		t.Errorf("the holder's environment is gone: %v", err)
	}
	env.Release()
	if again := acquire(t, c, interp, "app"); !again.Hit {
		t.Error("the rebuilt environment is not reused while the damaged one is held")
	}
}

// TestSizeAccountingWithoutMetadata deletes an environment's metadata: its
// bytes still count against the cap.
func TestSizeAccountingWithoutMetadata(t *testing.T) {
	t.Parallel()
	interp := testInterp(t)
	c := newTestCache(t, basicIndex(t).URL, nil)
	env := acquire(t, c, interp, "app")
	want, err := dirSize(env.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(env.Dir, metaFile)); err != nil {
		t.Fatal(err)
	}
	var got []envInfo
	for _, e := range c.listEnvs() {
		if e.key == env.Key {
			got = append(got, e)
		}
	}
	if len(got) != 1 || got[0].bytes < want/2 || got[0].bytes > want {
		t.Errorf("listEnvs for the environment without metadata = %+v, want its %d bytes counted", got, want)
	}
}

// BenchmarkVerify times the check every cache hit pays, on a small
// environment (two packages) and on one with 2,000 package files.
func BenchmarkVerify(b *testing.B) {
	interp := testInterp(b)
	big := map[string]string{}
	for i := range 2000 {
		big[fmt.Sprintf("bigpkg/m%04d.py", i)] = "x = 1\n"
	}
	idx := pythonenvtest.NewIndex(b,
		pythonenvtest.Package{Name: "Base-Pkg", Version: "1.0"},
		pythonenvtest.Package{Name: "app", Version: "2.0", Requires: []string{"base-pkg>=1"}},
		pythonenvtest.Package{Name: "bigpkg", Version: "1.0", Files: big},
	)
	c := newTestCache(b, idx.URL, nil)
	for _, req := range []string{"app", "bigpkg"} {
		b.Run(req, func(b *testing.B) {
			env := acquire(b, c, interp, req)
			if err := c.verify(env.Key); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := c.verify(env.Key); err != nil {
					b.Fatal(err)
				}
			}
			c.mu.Lock()
			b.ReportMetric(float64(len(c.manifests[env.Key].files)), "files")
			c.mu.Unlock()
		})
	}
}
