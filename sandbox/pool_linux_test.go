package sandbox

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// waitWarm waits until the pool holds a sandbox waiting for code.
func waitWarm(t *testing.T, r *Runner) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for r.PoolStats().Waiting == 0 {
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
		Python:   testPython(t),
		Code:     code,
		Dir:      ws,
		ReadOnly: []string{filepath.Join(ws, "mounts")},
		Env:      []string{"T_TOKEN=prims-warm-" + filepath.Base(ws)},
		Stdout:   out,
		Stderr:   out,
		Timeout:  30 * time.Second,
	}
}

// TestWarmRunsAreFresh leaves every kind of state behind in one run and
// checks that the next run, handed to a waiting sandbox, sees none of it.
func TestWarmRunsAreFresh(t *testing.T) {
	r := warmRunner(t, Config{Limits: testLimits})
	ws := mkWorkspace(t)
	token := sandboxtest.Token(t)
	dirty := `
import json, os, sys, threading, subprocess, time
os.environ["LEFT_BEHIND"] = "1"
json.dumps = None
sys.modules["left_behind"] = sys
open("/tmp/left-behind", "w").write("x")
os.chdir("output")
GLOBAL_LEFT_BEHIND = 1
threading.Thread(target=time.sleep, args=(300,), daemon=False)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "` + token + `"])
print("dirty", flush=True)
`
	check := `
import json, os, sys
print("env", os.environ.get("LEFT_BEHIND"))
print("json", json.dumps([1]))
print("module", "left_behind" in sys.modules)
print("tmp", os.path.exists("/tmp/left-behind"))
print("cwd", os.path.basename(os.getcwd()))
print("global", "GLOBAL_LEFT_BEHIND" in globals())
`
	var out lockedBuffer
	if _, err := r.Run(context.Background(), warmJob(t, ws, dirty, &out)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "dirty") {
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
	want := "env None\njson [1]\nmodule False\ntmp False\ncwd " + filepath.Base(ws) + "\nglobal False\n"
	if out.String() != want {
		t.Errorf("state leaked into a warm run:\n got %q\nwant %q", out.String(), want)
	}
}

// TestEscapeWarm runs the escape suite again with every attack handed to a
// sandbox that was started ahead of time and waited for it: the pool must
// not weaken anything, limits included.
func TestEscapeWarm(t *testing.T) {
	testPython(t)
	env := newEscapeEnv(t)
	r := warmRunner(t, Config{Limits: testLimits})
	if r.Tier() == TierNone {
		t.Skip("no sandbox tier on this host")
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			ws := mkWorkspace(t)
			env.ws = ws
			defer r.ForgetDir(ws)
			// The first run in a workspace is cold and fills the pool.
			if res, _ := runAttack(t, r, env, ws, attack{name: "prime", code: "pass"}, false); res.Warm {
				t.Fatal("a first run in a new workspace cannot be warm")
			}
			waitWarm(t, r)
			res, out := runAttack(t, r, env, ws, a, false)
			if !res.Warm {
				t.Fatal("the attack did not run in a waiting sandbox")
			}
			if strings.Contains(out, "ESCAPED") {
				t.Errorf("attack worked in a warm sandbox:\n%s", out)
			}
			if a.check != nil {
				a.check(t, env, res, out)
			}
			if daemonSurvivors(env.token) != nil {
				t.Errorf("a process of the run is still alive")
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
			if st.Waiting != 1 || st.RSSBytes <= 0 {
				t.Errorf("PoolStats = %+v", st)
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
			if st := r.PoolStats(); st.Waiting != 0 {
				t.Errorf("after %s: %+v", how, st)
			}
		})
	}
}
