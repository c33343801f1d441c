package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/sandbox/sandboxtest"
)

// warmRunner returns a runner with a pool of one sandbox per key, in the
// strongest tier this host supports.
func warmRunner(t *testing.T, cfg Config) *Runner {
	t.Helper()
	cfg.Warm = 1
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// waitWarm waits until the pool holds a sandbox waiting for code, or a
// zygote is ready to fork one.
func waitWarm(t *testing.T, r *Runner) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for st := r.PoolStats(); st.Waiting+st.Zygotes == 0; st = r.PoolStats() {
		if time.Now().After(deadline) {
			t.Fatal("the pool never started a waiting sandbox")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// warmJob is a job in ws whose environment carries a token unique to the
// test (the same for every job of the test, so that they share a pool key).
func warmJob(t *testing.T, ws, code string, out *lockedBuffer) Job {
	return Job{
		Python:   testpython.Path(t),
		Code:     code,
		Dir:      ws,
		ReadOnly: readOnlyOf(ws),
		Env:      []string{"T_TOKEN=prims-warm-" + filepath.Base(ws)},
		Stdout:   out,
		Stderr:   out,
		Timeout:  30 * time.Second,
	}
}

// poolTiers are the sandbox tiers the pool tests run in.
var poolTiers = []Tier{TierNamespaces, TierLandlock}

// TestWarmRunsAreFresh leaves every kind of state behind in one run and
// checks that the next run, handed to a waiting sandbox, sees none of it.
func TestWarmRunsAreFresh(t *testing.T) {
	for _, tier := range poolTiers {
		t.Run(string(tier), func(t *testing.T) {
			r := warmRunner(t, Config{Tier: tier, Limits: testLimits})
			ws := mkWorkspace(t)
			token := sandboxtest.Token(t)
			dirty := `
import json, os, sys, threading, subprocess, time
os.environ["LEFT_BEHIND"] = "1"
json.dumps = None
sys.modules["left_behind"] = sys
os.chdir("output")
GLOBAL_LEFT_BEHIND = 1
try: open("/tmp/left-behind-" + os.environ["T_TOKEN"], "w").write("x")
except OSError: pass  # the landlock tier does not let the code write /tmp at all
threading.Thread(target=time.sleep, args=(300,), daemon=True).start()
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "` + token + `"])
print("dirty", threading.active_count(), flush=True)
`
			check := `
import json, os, sys, threading
print("env", os.environ.get("LEFT_BEHIND"))
print("json", json.dumps([1]))
print("module", "left_behind" in sys.modules)
print("tmp", os.path.exists("/tmp/left-behind-" + os.environ["T_TOKEN"]))
print("cwd", os.path.basename(os.getcwd()))
print("global", "GLOBAL_LEFT_BEHIND" in globals())
print("threads", threading.active_count())
`
			var out lockedBuffer
			if _, err := r.Run(context.Background(), warmJob(t, ws, dirty, &out)); err != nil {
				t.Fatal(err)
			}
			if out.String() != "dirty 2\n" {
				t.Fatalf("the dirty run did not run: %s", out.String())
			}
			sandboxtest.WaitGone(t, token)
			waitWarm(t, r)
			out = lockedBuffer{}
			res, err := r.Run(context.Background(), warmJob(t, ws, check, &out))
			if err != nil {
				t.Fatal(err)
			}
			if !res.Warm {
				t.Fatal("the second run did not use the waiting sandbox")
			}
			want := "env None\njson [1]\nmodule False\ntmp False\ncwd " + filepath.Base(ws) + "\nglobal False\nthreads 1\n"
			if out.String() != want {
				t.Errorf("state leaked into a warm run:\n got %q\nwant %q", out.String(), want)
			}
		})
	}
}

// TestEscapeWarm runs the escape suite again with every attack handed to a
// sandbox that was started ahead of time and waited for it, in each tier:
// the pool must not weaken anything, limits included.
func TestEscapeWarm(t *testing.T) {
	testpython.Path(t)
	env := newEscapeEnv(t)
	// The per-file limits of TestLimits, as attacks.
	limits := []attack{
		{name: "file size", code: "open('output/big', 'wb').write(b'x' * (32 << 20))", check: wantLimit(LimitMaxFileSize)},
		{name: "open files", code: "fs = [open('/dev/null') for _ in range(10000)]", check: wantLimit(LimitMaxOpenFiles)},
	}
	for _, tier := range poolTiers {
		t.Run(string(tier), func(t *testing.T) {
			r, err := New(Config{Tier: tier, Limits: testLimits, Warm: 1})
			if err != nil {
				skipTier(t, tier, err)
			}
			defer r.Close()
			for _, a := range append(slices.Clip(attacks), limits...) {
				t.Run(a.name, func(t *testing.T) {
					skipKnownLimit(t, tier, a)
					ws := mkWorkspace(t)
					env.ws = ws
					defer r.ForgetDir(ws)
					// The first run in a workspace is cold and fills the pool.
					if res, _ := runAttack(t, r, env, ws, attack{name: "prime", code: "pass"}, false); res.Warm {
						t.Fatal("a first run in a new workspace cannot be warm")
					}
					waitWarm(t, r)
					res, out := runAttack(t, r, env, ws, a, false)
					if !res.Warm || res.Tier != tier {
						t.Fatalf("the attack ran warm=%v in tier %s, want a waiting sandbox of tier %s", res.Warm, res.Tier, tier)
					}
					assertBlocked(t, env, a, res, out)
				})
			}
		})
	}
	if after := fingerprint(t, env.otherWS, env.planted, env.outDir); !sameFingerprint(env.before, after) {
		t.Errorf("files outside the workspace changed")
	}
}

func TestWarmTimeout(t *testing.T) {
	r := warmRunner(t, Config{})
	ws := mkWorkspace(t)
	var out lockedBuffer
	r.Run(context.Background(), warmJob(t, ws, "pass", &out))
	waitWarm(t, r)
	// A sandbox that waited must not have its wait counted against the run.
	time.Sleep(1500 * time.Millisecond)
	job := warmJob(t, ws, "import time\nprint('before', flush=True)\ntime.sleep(1)\nprint('after', flush=True)\ntime.sleep(60)", &out)
	job.Timeout = 1500 * time.Millisecond
	out = lockedBuffer{}
	res, err := r.Run(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Warm || !res.TimedOut || res.Limit != LimitWallTime || out.String() != "before\nafter\n" {
		t.Errorf("warm=%v timed_out=%v limit=%q out=%q", res.Warm, res.TimedOut, res.Limit, out.String())
	}
}

// TestPoolStopsItsSandboxes checks that waiting sandboxes die with Close,
// with idle expiry, and with ForgetDir, and that the pool reports them.
func TestPoolStopsItsSandboxes(t *testing.T) {
	for _, how := range []string{"close", "idle", "forget"} {
		t.Run(how, func(t *testing.T) {
			cfg := Config{}
			if how == "idle" {
				cfg.WarmIdle = 3 * time.Second // long enough to see it wait, even under -race
			}
			r := warmRunner(t, cfg)
			ws := mkWorkspace(t)
			var out lockedBuffer
			job := warmJob(t, ws, "pass", &out)
			token := strings.TrimPrefix(job.Env[0], "T_TOKEN=")
			// The token reaches the waiting interpreter's environ, not its
			// argv; find it there.
			if _, err := r.Run(context.Background(), job); err != nil {
				t.Fatal(err)
			}
			waitWarm(t, r)
			st := r.PoolStats()
			if st.Waiting+st.Zygotes != 1 || st.RSSBytes <= 0 {
				t.Errorf("PoolStats = %+v", st)
			}
			// Its interpreter appears once the init has built the sandbox.
			for deadline := time.Now().Add(10 * time.Second); len(sandboxtest.EnvProcs(token)) == 0 && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			if len(sandboxtest.EnvProcs(token)) == 0 {
				t.Fatal("the probe cannot see the waiting sandbox")
			}
			switch how {
			case "close":
				r.Close()
			case "forget":
				r.ForgetDir(ws)
			}
			deadline := time.Now().Add(10 * time.Second)
			for len(sandboxtest.EnvProcs(token)) > 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if live := sandboxtest.EnvProcs(token); len(live) > 0 {
				t.Errorf("waiting sandboxes survived %s: %v", how, live)
			}
			if st := r.PoolStats(); st.Waiting+st.Zygotes != 0 {
				t.Errorf("after %s: %+v", how, st)
			}
		})
	}
}

// waitingPIDs returns the host pids of the pool's waiting sandboxes and of
// the zygotes' sandboxes.
func waitingPIDs(r *Runner) []int {
	r.pool.mu.Lock()
	var pids []int
	for _, k := range r.pool.keys {
		for _, w := range k.ready {
			pids = append(pids, w.c.pid)
		}
	}
	r.pool.mu.Unlock()
	r.zygotes.mu.Lock()
	defer r.zygotes.mu.Unlock()
	for _, z := range r.zygotes.m {
		pids = append(pids, z.c.pid)
	}
	return pids
}

// TestPoolDiscardsDeadSandboxes kills the waiting sandbox from outside: once
// it has exited, the next run must still run (never in the dead one), and
// the pool starts a replacement. (A sandbox killed at the very moment a run
// takes it is indistinguishable from one killed just after: that run ends
// killed, as a cold one would.)
func TestPoolDiscardsDeadSandboxes(t *testing.T) {
	r := warmRunner(t, Config{Limits: testLimits})
	ws := mkWorkspace(t)
	var out lockedBuffer
	r.Run(context.Background(), warmJob(t, ws, "pass", &out))
	waitWarm(t, r)
	pids := waitingPIDs(r)
	if len(pids) != 1 {
		t.Fatalf("waiting sandboxes: %v", pids)
	}
	syscall.Kill(pids[0], syscall.SIGKILL)
	// A sandbox init is a zombie before it can be waited for (its threads
	// and its namespace's processes die first): wait until the kernel
	// reports the exit to a waiter, as a real death would be reported.
	for !exited(pids[0]) {
		time.Sleep(time.Millisecond)
	}
	res, err := r.Run(context.Background(), warmJob(t, ws, "print('ran')", &out))
	if err != nil || res.ExitCode != 0 || out.String() != "ran\n" {
		t.Fatalf("run after the waiting sandbox died: %+v %v %q", res, err, out.String())
	}
	waitWarm(t, r)
	if got := waitingPIDs(r); len(got) != 1 || got[0] == pids[0] {
		t.Errorf("waiting sandboxes after a death: %v (dead: %d)", got, pids[0])
	}
}

// TestPreload: the waiting interpreter has imported the preloaded modules
// before the code arrives, what they print goes nowhere, and a module that
// does not exist is skipped.
func TestPreload(t *testing.T) {
	r := warmRunner(t, Config{Preload: []string{"this", "no_such_module_prims", "json"}})
	ws := mkWorkspace(t)
	code := `import sys, os; print(sorted(m for m in ("this", "json", "no_such_module_prims") if m in sys.modules), "PRIMS_PRELOAD" in os.environ)`
	want := "['json', 'this'] False\n"
	for i, wantWarm := range []bool{false, true} {
		if wantWarm {
			waitWarm(t, r)
		}
		var out lockedBuffer
		res, err := r.Run(context.Background(), warmJob(t, ws, code, &out))
		if err != nil {
			t.Fatal(err)
		}
		if res.Warm != wantWarm || res.ExitCode != 0 || out.String() != want {
			t.Errorf("run %d: warm=%v exit=%d output %q, want warm=%v output %q", i, res.Warm, res.ExitCode, out.String(), wantWarm, want)
		}
	}
}

// TestPoolLeaksNothing: after runs, deaths and Close, the server holds no
// more descriptors than before and no sandbox process is left.
func TestPoolLeaksNothing(t *testing.T) {
	ws := mkWorkspace(t)
	var out lockedBuffer
	job := warmJob(t, ws, "print(1)", &out)
	token := strings.TrimPrefix(job.Env[0], "T_TOKEN=")
	fds := func() int {
		ents, _ := os.ReadDir("/proc/self/fd")
		return len(ents)
	}
	// One runner first, so that what stays open for the process's life
	// (the probe, the Go runtime's own) is counted in before.
	warmRunner(t, Config{}).Close()
	before := fds()
	r, err := New(Config{Warm: 2, Limits: testLimits})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if _, err := r.Run(context.Background(), job); err != nil {
			t.Fatal(err)
		}
		if i == 3 {
			waitWarm(t, r)
			for _, pid := range waitingPIDs(r) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	waitWarm(t, r)
	r.Close()
	deadline := time.Now().Add(10 * time.Second)
	for (fds() > before || len(sandboxtest.EnvProcs(token)) > 0) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := fds(); got > before {
		t.Errorf("%d descriptors open after Close, %d before", got, before)
	}
	if live := sandboxtest.EnvProcs(token); len(live) > 0 {
		t.Errorf("sandboxes survived Close: %v", live)
	}
}

// TestWarmSandboxFollowsRebuiltEnvironment replaces an environment under
// the same path (as the cache does when it evicts and rebuilds one) while
// a sandbox started for the old one waits: the next run must see the new
// one. A sandbox keyed by path alone hands it the deleted tree.
func TestWarmSandboxFollowsRebuiltEnvironment(t *testing.T) {
	for _, tier := range poolTiers {
		t.Run(string(tier), func(t *testing.T) {
			r := warmRunner(t, Config{Tier: tier, Limits: testLimits})
			ws := mkWorkspace(t)
			parent, err := os.MkdirTemp("", "prims-envs-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(parent) })
			os.Chmod(parent, 0o755) // the sandbox user reads it
			env := filepath.Join(parent, "env")
			build := func(version string) {
				t.Helper()
				if err := os.RemoveAll(env); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(env, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(env, "envmod.py"), []byte("VERSION = "+version+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			run := func(wantWarm bool, want string) {
				t.Helper()
				var out lockedBuffer
				job := warmJob(t, ws, "import sys\nsys.path.insert(0, "+strconv.Quote(env)+")\nimport envmod\nprint(envmod.VERSION)", &out)
				job.ReadOnly = append(job.ReadOnly, env)
				res, err := r.Run(context.Background(), job)
				if err != nil {
					t.Fatal(err)
				}
				if res.ExitCode != 0 || out.String() != want+"\n" {
					t.Fatalf("exit %d, output %q; want %q", res.ExitCode, out.String(), want)
				}
				if res.Warm != wantWarm {
					t.Errorf("warm = %t, want %t", res.Warm, wantWarm)
				}
			}
			build("1")
			run(false, "1")
			waitWarm(t, r)
			run(true, "1") // control: an unchanged environment keeps its waiting sandbox
			waitWarm(t, r)
			old := waitingPIDs(r)
			if len(old) == 0 {
				t.Fatal("no sandbox waits for the first environment")
			}
			build("2")
			run(false, "2")
			// What waited for the old tree is stopped, not left to idle
			// out holding it.
			deadline := time.Now().Add(10 * time.Second)
			for _, pid := range old {
				for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				if syscall.Kill(pid, 0) == nil {
					t.Errorf("the sandbox (pid %d) that waited for the replaced environment still runs", pid)
				}
			}
			waitWarm(t, r)
			run(true, "2")
		})
	}
}
