package main

import (
	"context"
	"encoding/json"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/workspace"
)

var (
	soak     = flag.Bool("soak", false, "run the soak test: many runs through one prims stdio")
	soakRuns = flag.Int("soak-runs", 2000, "runs of the soak test")
	soakOut  = flag.Int("soak-output", 300<<10, "bytes each soak run prints: 2,000 x 300 KiB passes the logs budget")
)

// logBudget is what logs/ may hold by default: 8 x the 64 MiB a stream keeps.
const logBudget = 8 * 64 << 20

// TestSoak sends -soak-runs run_code calls through one real prims stdio and
// checks that the server's memory, descriptors and CPU per run stay flat
// and that logs/ stays within its budget, which the runs' output passes.
// Opt-in: go test -run TestSoak -soak -v .
func TestSoak(t *testing.T) {
	if !*soak {
		t.Skip("pass -soak to run the soak test")
	}
	if *soakRuns < 20 {
		t.Fatalf("-soak-runs %d: at least 20, to compare samples", *soakRuns)
	}
	if runtime.GOOS != "linux" {
		testenv.Skip(t, testenv.Proc, "reads the server's memory and descriptors from /proc")
	}
	py := testpython.Path(t)
	ws := t.TempDir()
	cmd := primsCmd(t, "stdio", "--python", py, "--workspace", ws)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	ctx := context.Background()
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "soak"}, nil).Connect(ctx, &sdk.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	pid := cmd.Process.Pid

	// Each run prints -soak-output bytes to stdout and a line to stderr,
	// and writes and removes a file.
	code := "import sys, os\nsys.stdout.write('x' * " + strconv.Itoa(*soakOut-1) + " + '\\n')\nprint('err', file=sys.stderr)\nopen('scratch', 'w').write('y')\nos.remove('scratch')\n"
	type sample struct {
		run      int
		rss, fds int64
		cpu      time.Duration // the server's CPU a run since the last sample
	}
	var samples []sample
	start, lastCPU := time.Now(), procCPU(t, pid)
	for i := 1; i <= *soakRuns; i++ {
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": code}})
		if err != nil {
			t.Fatalf("run %d: %v\nserver stderr:\n%s", i, err, stderr.String())
		}
		if res.IsError {
			sc, _ := json.Marshal(res.StructuredContent)
			t.Fatalf("run %d failed: %s", i, sc)
		}
		if i%(*soakRuns/10) == 0 {
			// Let the refill of the warm pool that follows a run finish:
			// its pipes are not a leak.
			time.Sleep(300 * time.Millisecond)
			start = start.Add(300 * time.Millisecond)
			cpu := procCPU(t, pid)
			s := sample{run: i, rss: procRSS(t, pid), fds: procFDs(t, pid), cpu: (cpu - lastCPU) / time.Duration(*soakRuns/10)}
			samples = append(samples, s)
			t.Logf("run %5d: server RSS %6.1f MiB, %d descriptors; since the last sample %.1f runs/s, server CPU %.2f ms a run",
				s.run, float64(s.rss)/(1<<20), s.fds, float64(*soakRuns/10)/time.Since(start).Seconds(),
				float64((cpu-lastCPU).Microseconds())/1000/float64(*soakRuns/10))
			start, lastCPU = time.Now(), cpu
		}
	}
	// The first tenth warms up (pool, caches, GC target); from there on,
	// a leak of a few kB per run would show.
	base, last := samples[0], samples[len(samples)-1]
	var peak int64
	for _, s := range samples[1:] {
		peak = max(peak, s.rss)
	}
	if limit := base.rss + base.rss/4 + 8<<20; peak > limit {
		t.Errorf("server RSS grew from %d to %d bytes (peak %d) over %d runs: more than 25%% + 8 MiB", base.rss, last.rss, peak, last.run-base.run)
	}
	if last.fds > base.fds+2 {
		t.Errorf("server descriptors grew from %d to %d over %d runs", base.fds, last.fds, last.run-base.run)
	}
	// CPU, not wall-clock time: other work on the machine does not count.
	// Work that grows with the session (a walk of every log, a list of
	// every run) shows as a run costing more late than early.
	if early := samples[1].cpu; last.cpu > 2*early+time.Millisecond {
		t.Errorf("the server's CPU a run grew from %v (runs %d-%d) to %v (runs %d-%d): work that grows with the session",
			early, samples[0].run, samples[1].run, last.cpu, samples[len(samples)-2].run, last.run)
	}

	// Logs: within their budget, though the runs wrote more, and no more
	// than the runs wrote (code, stdout and stderr of each).
	var total, files int64
	perRun := int64(len(code) + *soakOut + len("err\n"))
	// logs/ in the workspace is the server's link to its own directory.
	logs, err := filepath.EvalSymlinks(filepath.Join(ws, workspace.LogsDir))
	if err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(logs, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		files++
		total += fi.Size()
		if fi.Size() > 64<<20 {
			t.Errorf("%s holds %d bytes, over the 64 MiB a stream keeps", d.Name(), fi.Size())
		}
		return nil
	})
	t.Logf("logs: %d files, %d bytes", files, total)
	if files == 0 || files > 3*int64(*soakRuns) {
		t.Errorf("logs hold %d files for %d runs, want between 1 and 3 a run", files, *soakRuns)
	}
	written := int64(*soakRuns) * perRun
	if total > min(written, logBudget) {
		t.Errorf("logs hold %d bytes; the runs wrote %d, the budget is %d", total, written, logBudget)
	}
	if written > logBudget && files >= 3*int64(*soakRuns) {
		t.Errorf("the runs wrote %d bytes of logs, over the %d budget, and none was pruned", written, logBudget)
	}
	if strings.Contains(stderr.String(), "panic") {
		t.Errorf("server stderr:\n%s", stderr.String())
	}
}

// procRSS is the resident set of pid, in bytes.
func procRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// procFDs counts the open descriptors of pid.
func procFDs(t *testing.T, pid int) int64 {
	t.Helper()
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(entries))
}

// procCPU is the user and system CPU time pid has used (its own, not its
// children's), from /proc/PID/stat in clock ticks of 10 ms.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
