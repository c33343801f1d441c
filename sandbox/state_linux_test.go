package sandbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prims-mcp/prims/internal/testpython"
)

// stateTiers are the tiers a state test runs in: each sandbox tier this
// host gives, and no isolation.
func stateTiers(t *testing.T) []Tier {
	s := Probe()
	tiers := []Tier{TierNone}
	for _, tier := range []Tier{TierNamespaces, TierLandlock} {
		if s.Can(tier) {
			tiers = append(tiers, tier)
		} else {
			t.Run(string(tier), func(t *testing.T) { skipTier(t, tier, errors.New(s.Missing())) })
		}
	}
	return tiers
}

// openStates opens a state host of tier with limits l on a new workspace.
func openStates(t *testing.T, tier Tier, l Limits) *StateHost {
	t.Helper()
	return openStatesMem(t, tier, l, "")
}

func openStatesMem(t *testing.T, tier Tier, l Limits, mem MemoryEnforcement) *StateHost {
	t.Helper()
	cfg := Config{Tier: tier, Limits: l, DefaultTimeout: time.Minute, Memory: mem}
	if tier == TierNone {
		cfg = Config{Isolation: IsolationOff, Limits: l, DefaultTimeout: time.Minute}
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	dir := mkWorkspace(t)
	h, err := r.OpenStates(Job{Python: testpython.Path(t), Dir: dir, ReadOnly: readOnlyOf(dir)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// stateRun runs code on name and returns the result and its output.
func stateRun(t *testing.T, h *StateHost, name, code string, timeout time.Duration) (StateResult, string, string) {
	t.Helper()
	return stateRunCtx(context.Background(), t, h, name, code, timeout)
}

func stateRunCtx(ctx context.Context, t *testing.T, h *StateHost, name, code string, timeout time.Duration) (StateResult, string, string) {
	t.Helper()
	var out, errb lockedBuffer
	res, err := h.Run(ctx, name, Job{Code: code, Filename: "<state>", Stdout: &out, Stderr: &errb, Timeout: timeout})
	if err != nil {
		t.Fatalf("run on %q: %v", name, err)
	}
	return res, out.String(), errb.String()
}

// TestStateTransactions: globals persist from one call to the next; a call
// that raises, exits non-zero (also through os._exit), times out or is
// cancelled leaves the state exactly as it was, and the result says which.
func TestStateTransactions(t *testing.T) {
	t.Parallel()
	for _, tier := range stateTiers(t) {
		t.Run(string(tier), func(t *testing.T) {
			t.Parallel()
			h := openStates(t, tier, Limits{})
			if err := h.New(context.Background(), "s", ""); err != nil {
				t.Fatal(err)
			}
			res, out, _ := stateRun(t, h, "s", "import os\nx = [1]\nprint('set', os.getpid() > 0)", 0)
			if !res.Committed || res.ExitCode != 0 || out != "set True\n" {
				t.Fatalf("first call: committed %v exit %d out %q", res.Committed, res.ExitCode, out)
			}
			failures := []struct {
				name, code string
				timeout    time.Duration
				cancel     bool
				wantExit   int
				check      func(StateResult) bool
			}{
				{"exception", "x.append(2)\nraise ValueError('boom')", 0, false, 1, nil},
				{"exit status", "x.append(2)\nimport sys\nsys.exit(4)", 0, false, 4, nil},
				{"os._exit", "x.append(2)\nimport os\nos._exit(3)", 0, false, 3, nil},
				{"timeout", "x.append(2)\nimport time\ntime.sleep(60)", 500 * time.Millisecond, false, -9, func(r StateResult) bool { return r.TimedOut && r.Limit == LimitWallTime }},
				{"cancel", "x.append(2)\nprint('started', flush=True)\nimport time\ntime.sleep(60)", 0, true, -9, func(r StateResult) bool { return r.Cancelled }},
				{"syntax error", "x.append(2\n", 0, false, 1, nil},
			}
			for _, f := range failures {
				ctx, cancel := context.WithCancel(context.Background())
				if f.cancel {
					go func() { time.Sleep(300 * time.Millisecond); cancel() }()
				}
				res, _, stderr := stateRunCtx(ctx, t, h, "s", f.code, f.timeout)
				cancel()
				if res.Committed || res.ExitCode != f.wantExit || (f.check != nil && !f.check(res)) {
					t.Errorf("%s: committed %v, exit %d, limit %q, timed out %v, cancelled %v; want rolled back with exit %d (stderr %q)",
						f.name, res.Committed, res.ExitCode, res.Limit, res.TimedOut, res.Cancelled, f.wantExit, stderr)
				}
				_, out, _ := stateRun(t, h, "s", "print(x)", 0)
				if out != "[1]\n" {
					t.Fatalf("after %s: state holds %q, want [1]", f.name, out)
				}
			}
			res, _, _ = stateRun(t, h, "s", "x.append(3)\nimport sys\nsys.exit(0)", 0)
			if !res.Committed {
				t.Errorf("sys.exit(0) was not committed: exit %d", res.ExitCode)
			}
			if _, out, _ = stateRun(t, h, "s", "print(x)", 0); out != "[1, 3]\n" {
				t.Errorf("after sys.exit(0): state holds %q, want [1, 3]", out)
			}
		})
	}
}

// TestStateForkFrom: a state made from another starts as a copy of it, and
// the two change separately from then on.
func TestStateForkFrom(t *testing.T) {
	t.Parallel()
	for _, tier := range stateTiers(t) {
		t.Run(string(tier), func(t *testing.T) {
			t.Parallel()
			h := openStates(t, tier, Limits{})
			ctx := context.Background()
			if err := h.New(ctx, "a", ""); err != nil {
				t.Fatal(err)
			}
			stateRun(t, h, "a", "d = {'n': 1}", 0)
			if err := h.New(ctx, "b", "a"); err != nil {
				t.Fatal(err)
			}
			stateRun(t, h, "b", "d['n'] = 2\nd['b'] = True", 0)
			stateRun(t, h, "a", "d['a'] = True", 0)
			if _, out, _ := stateRun(t, h, "a", "print(sorted(d.items()))", 0); out != "[('a', True), ('n', 1)]\n" {
				t.Errorf("a holds %q", out)
			}
			if _, out, _ := stateRun(t, h, "b", "print(sorted(d.items()))", 0); out != "[('b', True), ('n', 2)]\n" {
				t.Errorf("b holds %q", out)
			}
			// The original can be dropped; its copy lives on.
			if err := h.Drop("a"); err != nil {
				t.Fatal(err)
			}
			if _, err := h.Run(ctx, "a", Job{Code: "print(1)"}); !errors.Is(err, ErrNoState) {
				t.Errorf("run on a dropped state: err %v, want ErrNoState", err)
			}
			if _, out, _ := stateRun(t, h, "b", "print(d['n'])", 0); out != "2\n" {
				t.Errorf("b after dropping a holds %q", out)
			}
			if err := h.New(ctx, "c", "nope"); !errors.Is(err, ErrNoState) {
				t.Errorf("fork_from a missing state: err %v, want ErrNoState", err)
			}
		})
	}
}

// TestStateLeftovers: a call's child processes die with the call, even when
// it ends well; a thread left running, open files and sockets are reported.
func TestStateLeftovers(t *testing.T) {
	t.Parallel()
	for _, tier := range stateTiers(t) {
		t.Run(string(tier), func(t *testing.T) {
			t.Parallel()
			h := openStates(t, tier, Limits{})
			if err := h.New(context.Background(), "s", ""); err != nil {
				t.Fatal(err)
			}
			res, _, _ := stateRun(t, h, "s", `
import os, threading, time, subprocess, sys, socket
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
t = threading.Thread(target=time.sleep, args=(60,), name="sleeper", daemon=True)
t.start()
f = open(__file__ if os.path.exists(__file__) else os.devnull)
a, b = socket.socketpair()
`, 0)
			if !res.Committed || len(res.Threads) != 1 || res.Threads[0] != "sleeper" || res.OpenFiles < 1 || res.Sockets != 2 {
				t.Fatalf("committed %v threads %q files %d sockets %d; want sleeper, 1+ file, 2 sockets", res.Committed, res.Threads, res.OpenFiles, res.Sockets)
			}
			// The next call is a fork: the thread is not in it, and the
			// subprocess was killed with the call that started it.
			_, out, _ := stateRun(t, h, "s", "print(threading.active_count(), child.poll() is not None or child.wait(5) is not None)", 0)
			if out != "1 True\n" {
				t.Errorf("next call sees %q, want 1 thread and the child gone", out)
			}
		})
	}
}

// TestStateLimits: the run's limits hold inside a state: CPU time per call
// (a fresh budget for each fork), processes, and memory, where a call that
// goes over is killed and the state it changed is kept as it was.
func TestStateLimits(t *testing.T) {
	t.Parallel()
	for _, tier := range stateTiers(t) {
		if tier == TierNone {
			continue // no limits without a sandbox, by design
		}
		t.Run(string(tier), func(t *testing.T) {
			t.Parallel()
			h := openStates(t, tier, Limits{Memory: 256 << 20, CPUTime: 2 * time.Second, MaxProcs: 64})
			ctx := context.Background()
			if err := h.New(ctx, "s", ""); err != nil {
				t.Fatal(err)
			}
			// 120 MiB of state, touched.
			if res, _, errs := stateRun(t, h, "s", "data = bytearray(120 << 20)\nfor i in range(0, len(data), 4096): data[i] = 1", 0); !res.Committed {
				t.Fatalf("loading 120 MiB: exit %d %s", res.ExitCode, errs)
			}
			// Changing every page copies it: 240 MiB and the interpreters
			// pass 256 MiB, though no process maps more than 130.
			res, _, errs := stateRun(t, h, "s", "for i in range(0, len(data), 4096): data[i] = 2\nmore = bytearray(40 << 20)\nfor i in range(0, len(more), 4096): more[i] = 1\nprint('survived')", 0)
			if res.Committed || res.Limit != LimitMemory {
				t.Errorf("call over the memory limit: committed %v exit %d limit %q (stderr %q), want killed by memory", res.Committed, res.ExitCode, res.Limit, errs)
			}
			if _, out, _ := stateRun(t, h, "s", "print(data[0], data[4096], len(data))", 0); out != fmt.Sprintf("1 1 %d\n", 120<<20) {
				t.Errorf("state after the memory kill holds %q", out)
			}
			// Two calls of 1.5 s of CPU each pass a 2 s limit only if each
			// fork counts from zero.
			spin := "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.5: pass\nprint('ok')"
			for i := range 2 {
				if res, out, errs := stateRun(t, h, "s", spin, 0); out != "ok\n" || !res.Committed {
					t.Fatalf("spin %d: exit %d limit %q out %q err %q", i, res.ExitCode, res.Limit, out, errs)
				}
			}
			res, _, _ = stateRun(t, h, "s", "while True: pass", 0)
			if res.Limit != LimitCPUTime || res.Committed {
				t.Errorf("endless loop: limit %q committed %v, want cpu-time, rolled back", res.Limit, res.Committed)
			}
			res, _, errs = stateRun(t, h, "s", "import os\nfor i in range(200):\n    if os.fork() == 0:\n        import time; time.sleep(30); os._exit(0)", 0)
			if res.Limit != LimitMaxProcs || res.Committed {
				t.Errorf("fork loop: limit %q committed %v exit %d stderr %q, want max-procs", res.Limit, res.Committed, res.ExitCode, tailLines(errs, 2))
			}
			if _, out, _ := stateRun(t, h, "s", "print(len(data))", 0); out != fmt.Sprintf("%d\n", 120<<20) {
				t.Errorf("state after the limits holds %q", out)
			}
		})
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestStateMemoryAccounting: without a cgroup the server adds up the
// sandbox's memory; a call that passes the limit is killed, not the state.
func TestStateMemoryAccounting(t *testing.T) {
	t.Parallel()
	for _, tier := range stateTiers(t) {
		if tier == TierNone {
			continue
		}
		t.Run(string(tier), func(t *testing.T) {
			t.Parallel()
			h := openStatesMem(t, tier, Limits{Memory: 256 << 20, MaxProcs: 64}, MemoryAccounting)
			if err := h.New(context.Background(), "s", ""); err != nil {
				t.Fatal(err)
			}
			if res, _, errs := stateRun(t, h, "s", "data = bytearray(120 << 20)\nfor i in range(0, len(data), 4096): data[i] = 1", 0); !res.Committed {
				t.Fatalf("loading 120 MiB: exit %d %s", res.ExitCode, errs)
			}
			if m := h.Memory("s"); m < 100<<20 {
				t.Errorf("the state's memory is %d bytes, want 120 MiB or more", m)
			}
			res, _, errs := stateRun(t, h, "s", "import time\nfor i in range(0, len(data), 4096): data[i] = 2\nmore = bytearray(40 << 20)\nfor i in range(0, len(more), 4096): more[i] = 1\ntime.sleep(5)\nprint('survived')", 0)
			if res.Committed || res.Limit != LimitMemory || res.Memory != MemoryAccounting {
				t.Errorf("call over the memory limit: committed %v exit %d limit %q memory %q (stderr %q), want killed by memory", res.Committed, res.ExitCode, res.Limit, res.Memory, errs)
			}
			if _, out, _ := stateRun(t, h, "s", "print(data[0], data[4096])", 0); out != "1 1\n" {
				t.Errorf("state after the memory kill holds %q", out)
			}
		})
	}
}

// TestStateCloseDuringCall: while a call runs, the states' memory can be
// read, and Close kills the call and returns (a session that ends does not
// wait for its calls to finish).
func TestStateCloseDuringCall(t *testing.T) {
	t.Parallel()
	h := openStates(t, Probe().Best, Limits{})
	ctx := context.Background()
	for _, n := range []string{"busy", "idle"} {
		if err := h.New(ctx, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	stateRun(t, h, "idle", "x = bytearray(8 << 20)\nfor i in range(0, len(x), 4096): x[i] = 1", 0)
	var out lockedBuffer
	type ending struct {
		res StateResult
		err error
	}
	done := make(chan ending, 1)
	go func() {
		res, err := h.Run(ctx, "busy", Job{Code: "print('started', flush=True)\nimport time\ntime.sleep(600)", Stdout: &out, Timeout: time.Hour})
		done <- ending{res, err}
	}()
	for !strings.Contains(out.String(), "started") {
		time.Sleep(10 * time.Millisecond)
	}
	if m := h.Memory("idle"); m < 8<<20 || !h.Has("idle") {
		t.Errorf("during a call: memory of another state %d, has %v", m, h.Has("idle"))
	}
	h.Close()
	if e := <-done; !errors.Is(e.err, ErrStateLost) || e.res.Committed {
		t.Errorf("the call through Close: err %v, committed %v; want ErrStateLost", e.err, e.res.Committed)
	}
	if err := h.New(ctx, "late", ""); err == nil {
		t.Errorf("New after Close worked")
	}
}

// TestStateKilledByAnotherCall: a call can kill another state's interpreter
// (they run as one user); that state is then reported lost, not as a
// failure to start, and the others go on.
func TestStateKilledByAnotherCall(t *testing.T) {
	t.Parallel()
	h := openStates(t, Probe().Best, Limits{})
	ctx := context.Background()
	for _, n := range []string{"victim", "killer", "copyme"} {
		if err := h.New(ctx, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	stateRun(t, h, "victim", "import os\nopen('victim.pid', 'w').write(str(os.getpid()))", 0)
	if res, _, errs := stateRun(t, h, "killer", "import os, signal\nos.kill(int(open('victim.pid').read()), signal.SIGKILL)", 0); !res.Committed {
		t.Fatalf("the killing call failed: %s", errs)
	}
	if _, err := h.Run(ctx, "victim", Job{Code: "print(1)"}); !errors.Is(err, ErrStateLost) {
		t.Errorf("a call on the killed state: %v, want ErrStateLost", err)
	}
	if h.Has("victim") {
		t.Errorf("the killed state is still listed")
	}
	if _, out, _ := stateRun(t, h, "killer", "print('alive')", 0); out != "alive\n" {
		t.Errorf("the other state after: %q", out)
	}
}

// TestStateForkRefused: when the state cannot be forked (the run's user is
// at --max-procs), the call fails with that limit and the state is kept,
// not lost.
func TestStateForkRefused(t *testing.T) {
	t.Parallel()
	h := openStates(t, Probe().Best, Limits{MaxProcs: 64})
	ctx := context.Background()
	for _, n := range []string{"s", "hog"} {
		if err := h.New(ctx, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	stateRun(t, h, "s", "x = 1", 0)
	// Threads count against RLIMIT_NPROC, and a committed state keeps
	// them: the hog's keep taking every task that comes free.
	res, _, errs := stateRun(t, h, "hog", `
import threading, time
def fill():
    while True:
        try:
            threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
        except RuntimeError:
            time.sleep(0.005)
threading.Thread(target=fill, daemon=True).start()
time.sleep(0.5)
`, 0)
	if !res.Committed {
		t.Fatalf("hog: exit %d %s", res.ExitCode, errs)
	}
	refused := false
	for range 50 {
		var out lockedBuffer
		res, err := h.Run(ctx, "s", Job{Code: "print(x)", Stderr: &out, Stdout: &out})
		if err != nil {
			t.Fatalf("a call on the state: %v", err)
		}
		if res.Committed {
			if out.String() != "1\n" {
				t.Fatalf("the state holds %q", out.String())
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if res.Limit != LimitMaxProcs || !strings.Contains(out.String(), "could not be copied") {
			t.Fatalf("a call that could not fork: limit %q exit %d output %q", res.Limit, res.ExitCode, out.String())
		}
		refused = true
		break
	}
	if !refused {
		t.Fatal("no fork was refused: the probe did not fill the task limit")
	}
	if err := h.Drop("hog"); err != nil {
		t.Fatal(err)
	}
	for range 100 { // the hog's threads go with it
		var out lockedBuffer
		if _, err := h.Run(ctx, "s", Job{Code: "print(x)", Stdout: &out}); err != nil {
			t.Fatal(err)
		}
		if out.String() == "1\n" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Error("the state did not run again after the hog was dropped")
}
