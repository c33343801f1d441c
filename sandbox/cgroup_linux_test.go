package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/internal/testpython"
)

// manyProcs starts five processes that each fill 120 MiB (under the 256 MiB
// limit, which RLIMIT_DATA also puts on each one) and hold it together: 600
// MiB for the run. It prints "all allocated" once they all hold theirs, and
// ends on its own after a few seconds.
const manyProcs = `
import os, sys, time
print("start", flush=True)
r, w = os.pipe()
kids = []
for i in range(5):
    pid = os.fork()
    if pid == 0:
        os.close(r)
        x = b"x" * (120 << 20)
        os.write(w, b".")
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
os.close(w)
got = 0
while got < 5:
    b = os.read(r, 5)
    if not b:
        break
    got += len(b)
print("all allocated" if got == 5 else "a process died: %d of 5 allocated" % got, flush=True)
time.sleep(3)
for k in kids:
    os.kill(k, 9)
`

// TestMemoryBoundsTheRun: processes that each stay under the memory limit
// but together go over it get the run killed with Limit memory, in every
// way of enforcing it that works here (a cgroup, and accounting forced),
// cold and warm, in both sandbox tiers; the same program fits under a
// limit that holds it all. Nothing of a run's cgroup is left afterwards.
func TestMemoryBoundsTheRun(t *testing.T) {
	py := testpython.Path(t)
	best, cgErr := detectMemory()
	for _, tier := range []Tier{TierNamespaces, TierLandlock} {
		for _, mode := range []MemoryEnforcement{MemoryAccounting, "cgroup"} {
			if mode == "cgroup" && (best == MemoryCgroupV1 || best == MemoryCgroupV2) {
				mode = best
			}
			for _, warm := range []int{0, 1} {
				name := fmt.Sprintf("%s/%s/warm=%d", tier, mode, warm)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					if mode == "cgroup" {
						testenv.Skip(t, testenv.Cgroup, "no memory cgroup here: %v", cgErr)
					}
					if !Probe().Can(tier) {
						skipTier(t, tier, errors.New(Probe().Missing()))
					}
					for _, tt := range []struct {
						limit int64
						want  string
					}{{256 << 20, LimitMemory}, {2 << 30, ""}} {
						limits := testLimits
						limits.Memory = tt.limit
						limits.CPUTime = time.Minute
						// In the landlock tier RLIMIT_NPROC counts every process of
						// the sandbox uid on the host, other tests' too.
						limits.MaxProcs = 4096
						r, err := New(Config{Tier: tier, Memory: mode, Limits: limits, Warm: warm})
						if err != nil {
							t.Fatal(err)
						}
						dir := mkWorkspace(t)
						job := Job{Python: py, Code: manyProcs, Dir: dir, Timeout: 50 * time.Second}
						if warm > 0 {
							r.Prewarm(job)
							waitWarm(t, r)
						}
						var out lockedBuffer
						job.Stdout, job.Stderr = &out, &out
						res, err := r.Run(context.Background(), job)
						r.Close()
						if err != nil {
							t.Fatal(err)
						}
						if res.Memory != mode || res.Warm != (warm > 0) {
							t.Errorf("limit %d: Result.Memory %q warm %v, want %q warm %v", tt.limit, res.Memory, res.Warm, mode, warm > 0)
						}
						if res.Limit != tt.want {
							t.Errorf("limit %d MiB: Limit %q, want %q (exit %d %s, timed out %v)\n%s", tt.limit>>20, res.Limit, tt.want, res.ExitCode, res.Signal, res.TimedOut, out.String())
						}
						if tt.want == "" && (res.ExitCode != 0 || !strings.Contains(out.String(), "all allocated")) {
							t.Errorf("control: exit %d, output:\n%s", res.ExitCode, out.String())
						}
						if tt.want != "" && strings.Contains(out.String(), "all allocated") && mode != MemoryAccounting {
							t.Errorf("the cgroup let the run hold all of it:\n%s", out.String())
						}
					}
				})
			}
		}
	}
}

// TestRunCgroupsAreRemoved: once runs end and the pool is closed, none of
// the cgroups this process made for them is left.
func TestRunCgroupsAreRemoved(t *testing.T) {
	h, err := cgroupOnce()
	if err != nil {
		testenv.Skip(t, testenv.Cgroup, "no memory cgroup here: %v", err)
	}
	py := testpython.Path(t)
	// Runners of other tests that were never closed keep a spare each:
	// only new cgroups are this runner's.
	list := func() map[string]bool {
		m, _ := filepath.Glob(filepath.Join(h.dir, fmt.Sprintf("prims-%d-*", os.Getpid())))
		set := map[string]bool{}
		for _, d := range m {
			set[d] = true
		}
		return set
	}
	before := list()
	mine := func() []string {
		var out []string
		for d := range list() {
			if !before[d] {
				out = append(out, d)
			}
		}
		return out
	}
	r, err := New(Config{Tier: Probe().Best, Warm: 1})
	if err != nil {
		t.Fatal(err)
	}
	dir := mkWorkspace(t)
	var out lockedBuffer
	// The program leaves a process behind in its own session, out of its
	// process group: the cgroup still holds it, and killing the cgroup
	// ends it.
	res, err := r.Run(context.Background(), Job{Python: py, Dir: dir, Stdout: &out, Stderr: &out, Timeout: 20 * time.Second,
		Code: "import os, time\nif os.fork() == 0:\n    try: os.setsid()\n    except OSError: pass\n    time.sleep(30)\n    os._exit(0)\nprint('ok')"})
	if err != nil || res.ExitCode != 0 || res.Memory != h.mode {
		t.Fatalf("exit %d memory %q err %v\n%s", res.ExitCode, res.Memory, err, out.String())
	}
	waitWarm(t, r)
	// The waiting sandbox's, and perhaps one made ahead for the next
	// cold start; the run's is gone or going.
	if n := len(mine()); n < 1 || n > 3 {
		t.Errorf("with one sandbox waiting, cgroups %v", mine())
	}
	r.Close()
	// The process's spare stays while other runners are open.
	runCgroups.mu.Lock()
	spare := slices.Clone(runCgroups.ready)
	runCgroups.mu.Unlock()
	for _, d := range mine() {
		if !slices.Contains(spare, d) {
			t.Errorf("cgroup left after the runs: %v", d)
		}
	}
}

// TestMemoryAccountingFindsOrphans: processes that leave the run's process
// tree (double-forked, their parent gone) still count: inside a PID
// namespace its init adopts them, and in the landlock tier they keep the
// run's process group.
func TestMemoryAccountingFindsOrphans(t *testing.T) {
	py := testpython.Path(t)
	code := strings.Replace(manyProcs, `        os.close(r)
        x = b"x" * (120 << 20)`, `        os.close(r)
        if os.fork() != 0:
            os._exit(0)
        x = b"x" * (120 << 20)`, 1)
	code = strings.Replace(code, "for k in kids:\n    os.kill(k, 9)\n", "", 1)
	if code == manyProcs {
		t.Fatal("the program did not change")
	}
	for _, tier := range []Tier{TierNamespaces, TierLandlock} {
		t.Run(string(tier), func(t *testing.T) {
			t.Parallel()
			if !Probe().Can(tier) {
				skipTier(t, tier, errors.New(Probe().Missing()))
			}
			limits := testLimits
			limits.CPUTime = time.Minute
			// In the landlock tier RLIMIT_NPROC counts every process of
			// the sandbox uid on the host, other tests' too.
			limits.MaxProcs = 4096
			r, err := New(Config{Tier: tier, Memory: MemoryAccounting, Limits: limits})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var out lockedBuffer
			res, err := r.Run(context.Background(), Job{Python: py, Code: code, Dir: mkWorkspace(t), Stdout: &out, Stderr: &out, Timeout: 50 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if res.Limit != LimitMemory {
				t.Errorf("Limit %q, want memory (exit %d %s)\n%s", res.Limit, res.ExitCode, res.Signal, out.String())
			}
		})
	}
}

// TestCgroupV2Placement: a child started into a cgroup v2 is inside it from
// its first instruction (CLONE_INTO_CGROUP), removing the run's cgroup kills
// what it holds (cgroup.kill), and the cgroup is gone once removals are
// waited for. Memory needs no controller for this: it runs on any writable
// cgroup v2, such as this host's, whose memory controller is on v1.
func TestCgroupV2Placement(t *testing.T) {
	ms := cgroupMounts("cgroup2", "")
	own, ok := ownCgroup("")
	if len(ms) == 0 || !ok {
		testenv.Skip(t, testenv.Cgroup, "no cgroup v2 mounted")
	}
	parent := cgroupDir(ms[0], own)
	spares := &cgroupSpares{}
	dir, err := makeRunCgroup(cgroupHost{mode: MemoryCgroupV2, dir: parent})
	if err != nil {
		testenv.Skip(t, testenv.Cgroup, "cannot make a cgroup v2 here: %v", err)
	}
	fd, err := syscall.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		os.Remove(dir)
		t.Fatal(err)
	}
	g := &memGuard{mode: MemoryCgroupV2, dir: dir, fd: fd, spares: spares}
	cmd := exec.Command("/bin/sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	g.attach(cmd)
	if err := cmd.Start(); err != nil {
		g.remove()
		spares.close()
		t.Fatal(err)
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
	rel := strings.TrimPrefix(dir, ms[0].point)
	if !strings.Contains(string(b), "0::"+rel+"\n") {
		t.Errorf("the child is in %q, want %s", b, rel)
	}
	g.remove()
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Errorf("the child ended with %v, want SIGKILL from cgroup.kill", err)
	}
	spares.close()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the cgroup is still there: %v", err)
		os.Remove(dir)
	}
}

// TestAccountingCountsTheProgram: in every tier the accounting counts the
// program and what it starts, not the sandbox init that waits for it (a Go
// runtime, larger than a small limit under the race detector), as
// RLIMIT_DATA does. The landlock tier's init, its program's parent since it
// guards the run's tree, was counted.
func TestAccountingCountsTheProgram(t *testing.T) {
	py := testpython.Path(t)
	for _, tier := range []Tier{TierNamespaces, TierLandlock} {
		t.Run(string(tier), func(t *testing.T) {
			if !Probe().Can(tier) {
				skipTier(t, tier, errors.New(Probe().Missing()))
			}
			limits := testLimits
			limits.Memory = 24 << 20
			r, err := New(Config{Tier: tier, Memory: MemoryAccounting, Limits: limits})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var out lockedBuffer
			// Long enough for the accounting to look a few times.
			res, err := r.Run(context.Background(), Job{Python: py, Code: "import time\ntime.sleep(0.5)\nprint('ok')", Dir: mkWorkspace(t), Stdout: &out, Stderr: &out, Timeout: 30 * time.Second})
			if err != nil || res.ExitCode != 0 || res.Limit != "" {
				t.Errorf("exit %d limit %q err %v\n%s", res.ExitCode, res.Limit, err, out.String())
			}
		})
	}
}

// TestAccountingCountsSharedPagesOnce: forked processes share their
// parent's pages until they write them; the accounting counts those pages
// once (PSS), as a cgroup does, so 150 MiB shared by four processes fits
// under 256 MiB although their resident sets add up to 600 MiB.
func TestAccountingCountsSharedPagesOnce(t *testing.T) {
	py := testpython.Path(t)
	if !Probe().Can(TierNamespaces) {
		skipTier(t, TierNamespaces, errors.New(Probe().Missing()))
	}
	limits := testLimits
	limits.CPUTime = time.Minute
	// In the landlock tier RLIMIT_NPROC counts every process of
	// the sandbox uid on the host, other tests' too.
	limits.MaxProcs = 4096
	r, err := New(Config{Tier: TierNamespaces, Memory: MemoryAccounting, Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	code := `import os, time
x = b"x" * (150 << 20)
kids = []
for i in range(3):
    pid = os.fork()
    if pid == 0:
        time.sleep(1)
        os._exit(0 if len(x) else 1)
    kids.append(pid)
for k in kids:
    os.waitpid(k, 0)
print("ok")`
	var out lockedBuffer
	res, err := r.Run(context.Background(), Job{Python: py, Code: code, Dir: mkWorkspace(t), Stdout: &out, Stderr: &out, Timeout: 30 * time.Second})
	if err != nil || res.ExitCode != 0 || res.Limit != "" {
		t.Errorf("exit %d limit %q err %v\n%s", res.ExitCode, res.Limit, err, out.String())
	}
}
