package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/internal/testpython"
)

// quotaLimits: a 20 MiB workspace, files up to 15 MiB each.
var quotaLimits = Limits{WorkspaceQuota: 20 << 20, MaxFileSize: 15 << 20, CPUTime: time.Minute}

// The ways around the workspace quota issue 11 lists. Each program writes
// 60 MiB (or the equivalent in inodes) under a 20 MiB quota and then waits;
// the run must end with LimitWorkspaceQuota. The control runs the same
// program with a quota large enough and checks that it did write all of it,
// so a probe that writes nothing cannot pass.
var quotaAttacks = []struct {
	name, code string
}{
	{"files deeper than PATH_MAX", `
import os
for i in range(300):
    os.mkdir("d" * 20); os.chdir("d" * 20)   # about 6300 bytes of path
for i in range(4):
    with open("f%d" % i, "wb") as f: f.write(b"x" * (15 << 20))
print("wrote", flush=True)
import time; time.sleep(8)`},
	{"unlinked open files", `
import os
fs = []
for i in range(4):
    f = open("output/held%d" % i, "wb"); os.unlink("output/held%d" % i)
    f.write(b"x" * (15 << 20)); f.flush(); fs.append(f)
print("wrote", flush=True)
import time; time.sleep(8)`},
	{"empty files use up inodes", `
import os
os.mkdir("output/many")
for i in range(20000):
    open("output/many/%d" % i, "w").close()
print("wrote", flush=True)
import time; time.sleep(8)`},
}

func TestQuotaAttacks(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	py := testpython.Path(t)
	for _, tier := range []Tier{TierNamespaces, TierLandlock} {
		r, err := New(Config{Tier: tier, Limits: quotaLimits})
		if err != nil {
			continue
		}
		for _, a := range quotaAttacks {
			t.Run(string(tier)+"/"+a.name, func(t *testing.T) {
				var out lockedBuffer
				res, err := r.Run(context.Background(), Job{Python: py, Code: a.code, Dir: mkWorkspace(t), Stdout: &out, Stderr: &out, Timeout: 30 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				if res.Limit != LimitWorkspaceQuota {
					t.Errorf("Limit %q (exit %d, %s), want %q: the quota missed it\n%s", res.Limit, res.ExitCode, res.Duration, LimitWorkspaceQuota, out.String())
				}
			})
		}
	}
	// Control: with room enough, each program writes all it means to.
	r, err := New(Config{Limits: Limits{WorkspaceQuota: 1 << 30, MaxFileSize: 15 << 20, CPUTime: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range quotaAttacks {
		t.Run("control/"+a.name, func(t *testing.T) {
			var out lockedBuffer
			code := strings.Replace(a.code, "time.sleep(8)", "time.sleep(0)", 1)
			res, err := r.Run(context.Background(), Job{Python: py, Code: code, Dir: mkWorkspace(t), Stdout: &out, Stderr: &out, Timeout: 2 * time.Minute})
			if err != nil || res.ExitCode != 0 || !strings.Contains(out.String(), "wrote") {
				t.Errorf("control: %v exit %d limit %q\n%s", err, res.ExitCode, res.Limit, out.String())
			}
		})
	}
}

// TestQuotaWatcherCPU measures what the quota watcher costs while a run
// sleeps in a workspace of 20,000 files: the server's own CPU time over the
// run (the program's is its own and not counted). It asserts nothing about
// time; it logs the figure for the README.
func TestQuotaWatcherCPU(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	py := testpython.Path(t)
	r, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	ws := mkWorkspace(t)
	for i := range 200 {
		d := filepath.Join(ws, "output", fmt.Sprintf("d%03d", i))
		os.Mkdir(d, 0o755)
		for j := range 100 {
			os.WriteFile(filepath.Join(d, fmt.Sprintf("f%03d", j)), []byte("x"), 0o644)
		}
	}
	r.Run(context.Background(), Job{Python: py, Code: "pass", Dir: ws}) // hand over, warm caches
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	start := time.Now()
	res, err := r.Run(context.Background(), Job{Python: py, Code: "import time; time.sleep(5)", Dir: ws})
	wall := time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("run: %v %+v", err, res)
	}
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	t.Logf("server CPU during a 5 s run over 20,000 files: %s in %s of wall time (%.1f%% of a core)", cpu.Round(time.Millisecond), wall.Round(time.Millisecond), 100*cpu.Seconds()/wall.Seconds())
}

// TestQuotaWatcherChmod: the program makes its own directory unreadable
// (000) and keeps swapping that directory's parent for a symlink to a host
// directory of the same user, while the watcher measures. The watcher opens
// up unreadable directories of its user; it must never do so through the
// symlink. It needs the server and the program to be the same user, as an
// unprivileged server is: TestQuotaAttacksUnprivileged runs it as uid 65534.
func TestQuotaWatcherChmod(t *testing.T) {
	if os.Geteuid() == 0 {
		// Root reads unreadable directories without opening them up:
		// run this test again as uid 65534.
		testenv.RerunAsNobody(t, "^TestQuotaWatcherChmod$", nil)
		return
	}
	ws := t.TempDir()
	host := t.TempDir()
	victim := filepath.Join(host, "b")
	os.Mkdir(victim, 0o750)
	a, alt := filepath.Join(ws, "a"), filepath.Join(ws, "a.alt")
	os.Mkdir(a, 0o755)
	os.Mkdir(filepath.Join(a, "b"), 0o755)
	os.Chmod(filepath.Join(a, "b"), 0)
	os.Symlink(host, alt)
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				done <- n
				return
			default:
			}
			if unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, alt, unix.RENAME_EXCHANGE) != nil {
				continue
			}
			n++
			// Keep the real a/b unreadable (the watcher opens it up),
			// through whichever name holds the directory now: never
			// through the symlink, or this would be the chmod we catch.
			real := a
			if n%2 == 1 {
				real = alt
			}
			os.Chmod(filepath.Join(real, "b"), 0)
		}
	}()
	lost := 0
	const rounds = 2000
	for i := range rounds {
		diskUsage(ws, 1<<40)
		if fi, err := os.Stat(victim); err == nil && fi.Mode().Perm() != 0o750 {
			lost++
			if lost == 1 {
				t.Logf("round %d: the host directory became %o", i, fi.Mode().Perm())
			}
			// Put the victim back, in case the swap left a symlink
			// where the test chmods.
			os.Chmod(victim, 0o750)
		}
	}
	close(stop)
	swaps := <-done
	os.Chmod(victim, 0o750)
	t.Logf("%d swaps, %d measurements", swaps, rounds)
	if lost > 0 {
		t.Errorf("lost %d of %d rounds: the quota watcher chmodded a host directory through a symlink", lost, rounds)
	}
	// Control: the probe sees a chmod of the victim.
	os.Chmod(victim, 0o700)
	if fi, _ := os.Stat(victim); fi.Mode().Perm() == 0o750 {
		t.Error("control: a chmod of the victim went unseen")
	}
}

// TestQuotaTooDeep: a tree deeper than the watcher walks (fsat.MaxDepth)
// counts as over the quota, since what it holds cannot be counted; the
// control, a tree just within, runs to its end.
func TestQuotaTooDeep(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	py := testpython.Path(t)
	r, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	code := `
import os, time
for i in range(%d):
    os.mkdir("d"); os.chdir("d")
print("made", flush=True)
time.sleep(3)
`
	for _, tc := range []struct {
		depth int
		want  string
	}{{1100, LimitWorkspaceQuota}, {900, ""}} {
		var out lockedBuffer
		res, err := r.Run(context.Background(), Job{Python: py, Code: fmt.Sprintf(code, tc.depth), Dir: mkWorkspace(t), Stdout: &out, Stderr: &out, Timeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		// The watcher may stop the deep tree before it is whole (it is
		// over the depth as soon as it passes it); the control must end.
		if res.Limit != tc.want || (tc.want == "" && !strings.Contains(out.String(), "made")) {
			t.Errorf("depth %d: Limit %q, want %q\n%s", tc.depth, res.Limit, tc.want, out.String())
		}
	}
}

// BenchmarkQuotaWatch is what the quota watcher adds to a run that ends
// before its first poll: starting and stopping it.
func BenchmarkQuotaWatch(b *testing.B) {
	ws := mkWorkspace(b)
	for b.Loop() {
		hit := make(chan struct{})
		watchQuota(Job{Dir: ws}, os.Getpid(), 1<<30, hit)()
	}
}
