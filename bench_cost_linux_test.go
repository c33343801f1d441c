package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/sys/unix"

	"github.com/prims-mcp/prims/internal/testpython"
)

// The cost of a fresh sandbox against a bare spawn of the same interpreter
// (issue 16), each benchmark in one run and as ratios to bare:
//
//	examples/bench/cost.sh        # (Linux) installs bubblewrap when missing, then:
//	go test -run '^$' -bench 'CPUPerRun|CPUFirstRun|ServeThroughput|RunCode$|RunCLI' -benchtime 30x .
//
// The servers are the real prims binary, built by each benchmark, not this
// test binary: the init re-executes whatever binary the server is, and its size
// is part of what is measured.

// primsBinary builds prims into the benchmark's temporary directory, which
// is removed with it.
func primsBinary(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "prims")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// childrenCPU is the CPU time of every descendant this process has reaped.
func childrenCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// treeCPU is the CPU time of a live process and of its whole tree: for
// each live process, its own CPU and that of the descendants it has reaped
// (utime, stime, cutime, cstime of /proc/PID/stat). A process that is
// gone counts through its reaper: a server's runs are reaped by the server
// itself (a sandbox init), by a sandbox's init (a zygote's runs, whose
// PID 1 the zygote forks) or by the zygote, all of them live descendants of
// the server. Clock ticks (10 ms) are coarse, so it is read around many
// runs, not one.
func treeCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	var ticks int64
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			if p == pid {
				b.Fatal(err)
			}
			continue // gone meanwhile: counted by its reaper
		}
		s := string(raw)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // f[0] is field 3
		for _, i := range []int{14, 15, 16, 17} {
			v, err := strconv.ParseInt(f[i-3], 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			ticks += v
		}
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
		for _, t := range tasks {
			kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", p, t.Name()))
			for _, k := range strings.Fields(string(kids)) {
				if n, err := strconv.Atoi(k); err == nil {
					queue = append(queue, n)
				}
			}
		}
	}
	return time.Duration(ticks) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// reapOrphans waits for the children this process inherited as a child
// subreaper, except keep: bubblewrap's first process exits without waiting
// for the init of its namespace, whose CPU time (and the program's) would
// otherwise never reach RUSAGE_CHILDREN.
func reapOrphans(b *testing.B, keep ...int) {
	b.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		b.Fatal(err)
	}
	for _, t := range tasks {
		raw, err := os.ReadFile("/proc/self/task/" + t.Name() + "/children")
		if err != nil {
			b.Fatalf("%v (the kernel needs CONFIG_PROC_CHILDREN to count bubblewrap's CPU)", err)
		}
		for _, f := range strings.Fields(string(raw)) {
			pid, _ := strconv.Atoi(f)
			if slices.Contains(keep, pid) {
				continue
			}
			var ws unix.WaitStatus
			for {
				_, err := unix.Wait4(pid, &ws, 0, nil)
				if err != unix.EINTR {
					break
				}
			}
		}
	}
}

// bwrapArgs runs py under bubblewrap in about the isolation PRIMS gives: every
// namespace, a read-only /usr, a fresh /proc, /dev and /tmp, no capabilities.
func bwrapArgs(py string, code string) []string {
	args := []string{"--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
		"--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"}
	for _, d := range []string{"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"} {
		if t, err := os.Readlink(d); err == nil {
			args = append(args, "--symlink", t, d)
		} else if _, err := os.Stat(d); err == nil {
			args = append(args, "--ro-bind", d, d)
		}
	}
	if !strings.HasPrefix(py, "/usr/") {
		args = append(args, "--ro-bind", filepath.Dir(filepath.Dir(py)), filepath.Dir(filepath.Dir(py)))
	}
	return append(args, py, "-c", code)
}

// stdioServer is `prims stdio` from the real binary, with an MCP client.
type stdioServer struct {
	cs  *sdk.ClientSession
	cmd *exec.Cmd
}

func startStdio(b *testing.B, bin string, args ...string) *stdioServer {
	b.Helper()
	cmd := exec.Command(bin, append([]string{"stdio", "--log-level", "error"}, args...)...)
	cmd.Stderr = os.Stderr
	client := sdk.NewClient(&sdk.Implementation{Name: "bench"}, nil)
	cs, err := client.Connect(context.Background(), &sdk.CommandTransport{Command: cmd}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cs.Close() })
	return &stdioServer{cs: cs, cmd: cmd}
}

// BenchmarkCPUPerRun measures the CPU time of one print(1) run, counting
// every process of the run, as a ratio to a bare spawn of the same
// interpreter: bare and bubblewrap through this process's reaped
// children (getrusage), PRIMS through its server's whole process tree
// (treeCPU: server, inits, zygotes and interpreters), for the default
// (runs forked by a zygote, the next run's first process forked ahead
// included), --zygote=false (the warm pool: a whole sandbox waits for the
// next run; its start is part of this run's cost) and --warm 0 (each run
// builds its sandbox). The variants take turns in every iteration.
// bubblewrap is measured when bwrap is on PATH (examples/bench/cost.sh
// installs Debian's package).
func BenchmarkCPUPerRun(b *testing.B) {
	py := testpython.Path(b)
	bwrap, _ := exec.LookPath("bwrap")
	if bwrap == "" {
		b.Log("bwrap not on PATH: bubblewrap left out (examples/bench/cost.sh installs it)")
	}
	bin := primsBinary(b)
	variants := []struct {
		name string
		srv  *stdioServer
		cpu  time.Duration
	}{
		{name: "zygote", srv: startStdio(b, bin, "--python", py)},
		{name: "pool", srv: startStdio(b, bin, "--python", py, "--zygote=false")},
		{name: "cold", srv: startStdio(b, bin, "--python", py, "--warm", "0")},
	}
	var servers []int
	for _, v := range variants {
		servers = append(servers, v.srv.cmd.Process.Pid)
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	print1 := map[string]any{"code": "print(1)"}
	spawn := func(name string, args ...string) {
		if out, err := exec.Command(name, args...).Output(); err != nil || string(out) != "1\n" {
			b.Fatalf("%s: %q %v", name, out, err)
		}
	}
	for range 3 { // the first workspace, the page cache, the zygote, the pool's first sandbox
		for _, v := range variants {
			callOK(b, v.srv.cs, print1)
		}
		spawn(py, "-c", "print(1)")
		if bwrap != "" {
			spawn(bwrap, bwrapArgs(py, "print(1)")...)
			reapOrphans(b, servers...)
		}
		time.Sleep(300 * time.Millisecond)
	}
	var bare, bw time.Duration
	for i := range variants {
		variants[i].cpu = -treeCPU(b, servers[i])
	}
	for b.Loop() {
		t := childrenCPU()
		spawn(py, "-c", "print(1)")
		bare += childrenCPU() - t
		if bwrap != "" {
			t = childrenCPU()
			spawn(bwrap, bwrapArgs(py, "print(1)")...)
			reapOrphans(b, servers...)
			bw += childrenCPU() - t
		}
		for _, v := range variants {
			callOK(b, v.srv.cs, print1)
		}
		// Let the servers get the next run ready (the zygote's next
		// first process, the pool's next sandbox), as they do while an
		// agent reads a result.
		time.Sleep(150 * time.Millisecond)
	}
	n := time.Duration(b.N)
	bare /= n
	b.ReportMetric(ms(bare), "bare-cpu-ms")
	report := func(name string, d time.Duration) {
		b.ReportMetric(ms(d), name+"-cpu-ms")
		b.ReportMetric(float64(d)/float64(bare), name+"/bare")
	}
	if bwrap != "" {
		report("bwrap", bw/n)
	}
	for i, v := range variants {
		report(v.name, (v.cpu+treeCPU(b, servers[i]))/n)
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkCPUFirstRun measures what a new session costs with the default
// flags, against a bare spawn, through a new `prims stdio` per iteration:
// session is its whole process tree from start until it is idle after
// initialize (the server, the default interpreter's probe, and the zygote
// that prewarming starts, with a first process forked ahead); first-run is
// what one print(1) run, called right after initialize, adds to that. That
// run comes before the zygote is ready, so it builds its own sandbox, as a
// cold run does. Both are paid once per session and interpreter.
func BenchmarkCPUFirstRun(b *testing.B) {
	py := testpython.Path(b)
	bin := primsBinary(b)
	print1 := map[string]any{"code": "print(1)"}
	var bare, idle, first time.Duration
	session := func(run bool) time.Duration {
		srv := startStdio(b, bin, "--python", py)
		if run {
			callOK(b, srv.cs, print1)
		}
		// The default interpreter's probe, the zygote and its first
		// fork happen in the background: give them time to end.
		time.Sleep(time.Second)
		d := treeCPU(b, srv.cmd.Process.Pid)
		srv.cs.Close()
		srv.cmd.Wait()
		return d
	}
	for b.Loop() {
		t := childrenCPU()
		if err := exec.Command(py, "-c", "print(1)").Run(); err != nil {
			b.Fatal(err)
		}
		bare += childrenCPU() - t
		idle += session(false)
		first += session(true)
	}
	n := time.Duration(b.N)
	b.ReportMetric(ms(bare/n), "bare-cpu-ms")
	b.ReportMetric(ms(idle/n), "session-cpu-ms")
	b.ReportMetric(float64(idle)/float64(bare), "session/bare")
	b.ReportMetric(ms((first-idle)/n), "first-run-cpu-ms")
	b.ReportMetric(float64(first-idle)/float64(bare), "first-run/bare")
	b.ReportMetric(0, "ns/op")
}

// serveServer is `prims serve` from the real binary on a loopback port.
func startServe(b *testing.B, args ...string) (base string) {
	b.Helper()
	cmd := exec.Command(primsBinary(b), append([]string{"serve", "--addr", "127.0.0.1:0", "--log-level", "info"}, args...)...)
	cmd.Env = append(os.Environ(), "PRIMS_AUTH_TOKEN=")
	return serveBase(b, cmd, nil)
}

// BenchmarkServeThroughput measures print(1) runs per second at concurrency
// 4 (four MCP sessions over `prims serve`, each calling run_code in a loop)
// against four goroutines spawning the interpreter bare, in alternating
// phases of 10 runs per worker: the default server (runs forked by a zygote
// per session) and one with --zygote=false (the warm pool). Each iteration is
// one run per worker on each.
func BenchmarkServeThroughput(b *testing.B) {
	const workers, phase = 4, 10
	py := testpython.Path(b)
	print1 := map[string]any{"code": "print(1)"}
	connect := func(args ...string) []*sdk.ClientSession {
		base := startServe(b, append([]string{"--python", py}, args...)...)
		var sessions []*sdk.ClientSession
		for range workers {
			client := sdk.NewClient(&sdk.Implementation{Name: "bench"}, nil)
			cs, err := client.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { cs.Close() })
			callOK(b, cs, print1) // the session's workspace and its zygote or first sandbox
			sessions = append(sessions, cs)
		}
		return sessions
	}
	servers := []struct {
		name     string
		sessions []*sdk.ClientSession
		t        time.Duration
	}{
		{name: "serve", sessions: connect()},
		{name: "serve-pool", sessions: connect("--zygote=false")},
	}
	parallel := func(n int, run func(w int)) time.Duration {
		t0 := time.Now()
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for range n {
					run(w)
				}
			})
		}
		wg.Wait()
		return time.Since(t0)
	}
	bareRun := func(int) {
		if err := exec.Command(py, "-c", "print(1)").Run(); err != nil {
			b.Error(err)
		}
	}
	var tBare time.Duration
	done := 0
	for ; done < b.N; done += phase {
		n := min(phase, b.N-done)
		tBare += parallel(n, bareRun)
		for i := range servers {
			sessions := servers[i].sessions
			servers[i].t += parallel(n, func(w int) {
				res, err := sessions[w].CallTool(context.Background(), &sdk.CallToolParams{Name: "run_code", Arguments: print1})
				if err != nil || res.IsError {
					b.Errorf("run_code: %v %+v", err, res)
				}
			})
		}
	}
	runs := float64(workers * b.N)
	bareRate := runs / tBare.Seconds()
	b.ReportMetric(bareRate, "bare-runs/s")
	for _, s := range servers {
		rate := runs / s.t.Seconds()
		b.ReportMetric(rate, s.name+"-runs/s")
		b.ReportMetric(rate/bareRate, s.name+"/bare")
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkRunCLI measures `prims run -c 'print(1)'` from start to exit
// against a bare spawn, interleaved, as medians.
func BenchmarkRunCLI(b *testing.B) {
	py := testpython.Path(b)
	bin := primsBinary(b)
	var bare, cli []time.Duration
	timed := func(d *[]time.Duration, name string, args ...string) {
		t0 := time.Now()
		out, err := exec.Command(name, args...).Output()
		*d = append(*d, time.Since(t0))
		if err != nil || string(out) != "1\n" {
			b.Fatalf("%s: %q %v", name, out, err)
		}
	}
	for range 2 {
		timed(&cli, bin, "run", "--python", py, "-c", "print(1)")
	}
	cli = cli[:0]
	for b.Loop() {
		timed(&bare, py, "-c", "print(1)")
		timed(&cli, bin, "run", "--python", py, "-c", "print(1)")
	}
	reportAgainstBare(b, bare, sample{"run-c", cli})
}
