package mcp

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/workspace/pythonenv"
	"github.com/prims-mcp/prims/workspace/pythonenv/pythonenvtest"
)

// startWithIndex starts a server whose requirements install with real pip
// from a local PEP 503 index of wheels the test built.
func startWithIndex(t testing.TB, version string, cfg Config, pkgs ...pythonenvtest.Package) *testEnv {
	t.Helper()
	ix := pythonenvtest.NewIndex(t, pkgs...)
	envs, err := pythonenv.New(pythonenv.Options{Dir: t.TempDir(), IndexURL: ix.URL, InstallTimeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Envs = envs
	return start(t, version, cfg)
}

func TestRequirementsInstallOnceAndStay(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, v string) {
		env := startWithIndex(t, v, Config{},
			pythonenvtest.Package{Name: "greeting", Version: "1.0", Requires: []string{"shout"}, Files: map[string]string{"greeting/__init__.py": "from shout import up\ndef hello(): return up('hello')\n"}},
			pythonenvtest.Package{Name: "shout", Version: "2.0", Files: map[string]string{"shout/__init__.py": "def up(s): return s.upper()\n"}},
			pythonenvtest.Package{Name: "other", Version: "0.1"},
		)
		ctx := context.Background()

		var out RunOutput
		res := env.call(t, ctx, "run_code", map[string]any{"code": "import greeting\nprint(greeting.hello())", "requirements": []string{"Greeting"}}, &out)
		if res.IsError || out.Stdout != "HELLO\n" || out.EnvCached {
			t.Fatalf("first call: %+v\n%s", out, text(res))
		}
		if len(out.Requirements) != 1 || out.Requirements[0] != "greeting" || out.Python == "" {
			t.Errorf("requirements %v python %q", out.Requirements, out.Python)
		}
		var installing bool
		for _, e := range env.events() {
			if strings.Contains(e.msg, "greeting") && e.beforeResult {
				installing = true
			}
		}
		if !installing {
			t.Errorf("no install progress reached the client: %v", env.events())
		}

		// A later call without requirements still has the package.
		res = env.call(t, ctx, "run_code", map[string]any{"code": "import greeting\nprint(greeting.hello())"}, &out)
		if res.IsError || out.Stdout != "HELLO\n" || !out.EnvCached {
			t.Errorf("second call: %+v\n%s", out, text(res))
		}
		// Adding a package keeps the earlier one.
		res = env.call(t, ctx, "run_code", map[string]any{"code": "import greeting, other\nprint(other.__version__)", "requirements": []string{"other"}}, &out)
		if res.IsError || out.Stdout != "0.1\n" || strings.Join(out.Requirements, ",") != "greeting,other" {
			t.Errorf("third call: %+v\n%s", out, text(res))
		}
	})
}

func TestRequirementErrors(t *testing.T) {
	env := startWithIndex(t, protocols[0], Config{},
		pythonenvtest.Package{Name: "good", Version: "1.0"},
		pythonenvtest.Package{Name: "broken", Version: "1.0", Broken: true},
	)
	ctx := context.Background()
	tests := []struct {
		reqs []string
		want []string
	}{
		{[]string{"nosuchpackage"}, []string{"not_found", "nosuchpackage"}},
		{[]string{"good==9.9"}, []string{"no_matching_version"}},
		{[]string{"broken"}, []string{"build_failed", "pip said:"}},
		{[]string{"-r requirements.txt"}, []string{"option"}},
		{[]string{"./local/pkg"}, []string{"path"}},
		{[]string{"pkg @ https://example.com/pkg.whl"}, []string{"URL"}},
	}
	for _, tt := range tests {
		res := env.call(t, ctx, "run_code", map[string]any{"code": "open('ran.txt','w')", "requirements": tt.reqs}, nil)
		if !res.IsError {
			t.Errorf("%v: no error", tt.reqs)
		}
		for _, w := range tt.want {
			if !strings.Contains(text(res), w) {
				t.Errorf("%v: error lacks %q:\n%s", tt.reqs, w, text(res))
			}
		}
		if strings.Contains(text(res), env.srv.Workspace()) || strings.Contains(text(res), os.TempDir()+"/") {
			t.Errorf("%v: error reveals a host path:\n%s", tt.reqs, text(res))
		}
		if !strings.Contains(text(res), "not run") {
			t.Errorf("%v: error does not say the code did not run:\n%s", tt.reqs, text(res))
		}
	}
	if _, err := os.Stat(env.srv.Workspace() + "/ran.txt"); err == nil {
		t.Error("the code ran although its requirements failed")
	}
	// A failed install does not poison the session.
	var out RunOutput
	res := env.call(t, ctx, "run_code", map[string]any{"code": "import good; print('ok')", "requirements": []string{"good"}}, &out)
	if res.IsError || out.Stdout != "ok\n" {
		t.Errorf("after failures: %s", text(res))
	}
}

func TestMissingModuleHintNamesDistribution(t *testing.T) {
	env := startWithIndex(t, protocols[0], Config{})
	var out RunOutput
	env.call(t, context.Background(), "run_code", map[string]any{"code": "import sklearn"}, &out)
	if !strings.Contains(out.Hint, "scikit-learn") || !strings.Contains(out.Hint, "requirements") {
		t.Errorf("hint = %q", out.Hint)
	}
}

func TestPythonVersionSelection(t *testing.T) {
	def := testpython.Path(t)
	var other pythonenv.Interpreter
	for _, in := range testpython.Versions(t, 2, testpython.Want{}) {
		if in.Path != def {
			other = in
		}
	}
	mm := strings.Join(strings.SplitN(other.Version, ".", 3)[:2], ".")
	env := start(t, protocols[0], Config{Discover: pythonenv.DiscoverOptions{Explicit: []string{other.Path}}})
	ctx := context.Background()
	var out RunOutput
	env.call(t, ctx, "run_code", map[string]any{"code": "import sys; print('%d.%d' % sys.version_info[:2])", "python": mm}, &out)
	if out.Stdout != mm+"\n" || !strings.HasPrefix(out.Python, mm) {
		t.Errorf("python %s: %+v", mm, out)
	}
	res := env.call(t, ctx, "run_code", map[string]any{"code": "print(1)", "python": "2.1"}, nil)
	if !res.IsError || !strings.Contains(text(res), "available") {
		t.Errorf("python 2.1: %s", text(res))
	}
}

// TestDamagedEnvironmentRebuilt damages the cached environment between
// calls in each way the cache must notice: the next run_code rebuilds it
// (env_cached false) and the code runs.
func TestDamagedEnvironmentRebuilt(t *testing.T) {
	ix := pythonenvtest.NewIndex(t, pythonenvtest.Package{Name: "greeting", Version: "1.0", Requires: []string{"shout"}},
		pythonenvtest.Package{Name: "shout", Version: "2.0"})
	cacheDir := t.TempDir()
	envs, err := pythonenv.New(pythonenv.Options{Dir: cacheDir, IndexURL: ix.URL, InstallTimeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	env := start(t, protocols[0], Config{Envs: envs})
	ctx := context.Background()
	run := func(wantCached bool) {
		t.Helper()
		var out RunOutput
		res := env.call(t, ctx, "run_code", map[string]any{"code": "import greeting, shout\nprint(greeting.__version__, shout.__version__)", "requirements": []string{"greeting"}}, &out)
		if res.IsError || out.Stdout != "1.0 2.0\n" || out.EnvCached != wantCached {
			t.Fatalf("env_cached %t, want %t: %+v\n%s", out.EnvCached, wantCached, out, text(res))
		}
	}
	// inEnv names a path in the one published environment.
	inEnv := func(pattern string) string {
		t.Helper()
		m, _ := filepath.Glob(filepath.Join(cacheDir, "envs", "*", pattern))
		if len(m) != 1 {
			t.Fatalf("%s in the environment: %v", pattern, m)
		}
		return m[0]
	}
	run(false)
	run(true)
	for _, damage := range []struct {
		name string
		do   func() error
	}{
		{"deleted bin/python", func() error { return os.Remove(inEnv("bin/python")) }},
		{"truncated package file", func() error { return os.Truncate(inEnv("lib/python*/site-packages/greeting/__init__.py"), 0) }},
		{"deleted package file", func() error { return os.Remove(inEnv("lib/python*/site-packages/shout/__init__.py")) }},
		{"deleted metadata", func() error { return os.Remove(inEnv("prims-env.json")) }},
	} {
		t.Run(damage.name, func(t *testing.T) {
			if err := damage.do(); err != nil {
				t.Fatal(err)
			}
			run(false)
			run(true)
		})
	}
}
