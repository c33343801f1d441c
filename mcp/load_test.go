package mcp

import (
	"context"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/sandbox"
)

var (
	loadTest    = flag.Bool("load", false, "run TestHTTPLoad: many clients against a loopback prims serve")
	loadClients = flag.Int("load-clients", 20, "concurrent MCP sessions in TestHTTPLoad")
	loadRuns    = flag.Int("load-runs", 50, "print(1) runs per session in TestHTTPLoad")
	loadMaxRuns = flag.Int("load-max-runs", 0, "the server's run slots in TestHTTPLoad (0: the default, 2 per CPU)")
	loadWarm    = flag.Int("load-warm", 1, "the server's warm sandboxes per session in TestHTTPLoad (prims serve's --warm)")
)

// TestHTTPLoad: -load-clients sessions each make -load-runs print(1) runs
// over real HTTP on 127.0.0.1. Every run must succeed, and afterwards no
// child process, file descriptor or workspace may be left. It reports
// throughput and latency percentiles, and the latency of the same program
// run directly through a cold sandbox runner, one at a time, as a baseline.
//
//	go test ./mcp -run TestHTTPLoad -load -v
func TestHTTPLoad(t *testing.T) {
	if !*loadTest {
		t.Skip("pass -load to run the load test")
	}
	py := testpython.Path(t)
	t.Setenv("TMPDIR", t.TempDir())
	// The runtime's poller (an epoll and an eventfd) opens on first use
	// and stays: start it before counting.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	fdsBefore := openFDs(t)

	cold, err := sandbox.New(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	baseline := make([]time.Duration, 0, 50)
	for range cap(baseline) {
		start := time.Now()
		res, err := cold.Run(context.Background(), sandbox.Job{Python: py, Code: "print(1)", Dir: os.TempDir(), Stdout: io.Discard, Stderr: io.Discard})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("baseline run: %v %+v", err, res)
		}
		baseline = append(baseline, time.Since(start))
	}

	runner, err := sandbox.New(sandbox.Config{Warm: *loadWarm})
	if err != nil {
		t.Fatal(err)
	}
	defer runner.Close()
	srv, err := New(Config{Python: py}, runner)
	if err != nil {
		t.Fatal(err)
	}
	h, err := srv.Handler(HTTPConfig{MaxSessions: *loadClients, MaxRuns: *loadMaxRuns})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var (
		mu        sync.Mutex
		latencies []time.Duration
		errs      []string
		wg        sync.WaitGroup
		maxWs     int
	)
	start := time.Now()
	for i := range *loadClients {
		wg.Go(func() {
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			c := sdk.NewClient(&sdk.Implementation{Name: "load-" + strconv.Itoa(i), Version: "0"}, nil)
			cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: ts.URL + "/mcp", HTTPClient: &http.Client{Transport: tr}, MaxRetries: -1}, nil)
			if err != nil {
				mu.Lock()
				errs = append(errs, "connect: "+err.Error())
				mu.Unlock()
				return
			}
			defer cs.Close()
			for range *loadRuns {
				t0 := time.Now()
				res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": "print(1)"}})
				d := time.Since(t0)
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, err.Error())
				case res.IsError:
					errs = append(errs, "isError: "+text(res))
				case !strings.Contains(text(res), "\n1\n"):
					errs = append(errs, "unexpected result: "+text(res))
				default:
					latencies = append(latencies, d)
				}
				mu.Unlock()
			}
			ws, _ := filepath.Glob(filepath.Join(os.TempDir(), "prims-ws-*"))
			mu.Lock()
			maxWs = max(maxWs, len(ws))
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(errs) > 0 {
		t.Errorf("%d calls failed; first: %s", len(errs), errs[0])
	}
	if maxWs == 0 {
		t.Errorf("no workspace was ever seen on disk: is TMPDIR honoured?")
	}

	m := scrape(t, ts.URL)
	if got, want := m[`prims_runs_total{outcome="ok"}`], float64(*loadClients**loadRuns); got != want {
		t.Errorf("metrics count %v ok runs, want %v", got, want)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	ts.Close()
	runner.Close()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()

	if kids := childProcesses(); len(kids) > 0 {
		t.Errorf("child processes left: %v", kids)
	}
	if ws, _ := filepath.Glob(filepath.Join(os.TempDir(), "prims-ws-*")); len(ws) > 0 {
		t.Errorf("%d workspaces left", len(ws))
	}
	// Connections close asynchronously on the server side; give them a
	// moment, then compare with the count before the test.
	var fdsAfter map[string]string
	var leaked []string
	for range 100 {
		fdsAfter = openFDs(t)
		leaked = leaked[:0]
		for fd, target := range fdsAfter {
			if _, ok := fdsBefore[fd]; !ok {
				leaked = append(leaked, fd+" -> "+target)
			}
		}
		if len(leaked) == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(leaked) > 0 {
		slices.Sort(leaked)
		t.Errorf("file descriptors opened during the test and still open: %v", leaked)
	}

	n := len(latencies)
	if n == 0 {
		return
	}
	slices.Sort(latencies)
	slices.Sort(baseline)
	pct := func(d []time.Duration, p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	t.Logf("%d clients x %d runs of print(1): %d ok in %v: %.0f runs/s", *loadClients, *loadRuns, n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
	t.Logf("latency over HTTP: p50 %v  p95 %v  p99 %v  max %v", pct(latencies, .50).Round(100*time.Microsecond), pct(latencies, .95).Round(100*time.Microsecond), pct(latencies, .99).Round(100*time.Microsecond), latencies[n-1].Round(100*time.Microsecond))
	t.Logf("baseline (cold runner.Run, one at a time): p50 %v; HTTP p50 under load is %.1fx", pct(baseline, .5).Round(100*time.Microsecond), float64(pct(latencies, .5))/float64(pct(baseline, .5)))
	slots := *loadMaxRuns
	if slots <= 0 {
		slots = 2 * runtime.NumCPU() // HTTPConfig's default
	}
	t.Logf("tier %s, warm %d, run slots %d; file descriptors before %d, after %d; at most %d workspaces on disk", runner.Tier(), *loadWarm, slots, len(fdsBefore), len(fdsAfter), maxWs)
}

// openFDs maps this process's open descriptors to what they refer to.
func openFDs(t *testing.T) map[string]string {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		testenv.Skip(t, testenv.Proc, "no /proc/self/fd: %v", err)
	}
	fds := make(map[string]string, len(entries))
	for _, e := range entries {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fds[e.Name()] = target
	}
	return fds
}

// childProcesses lists live children of this process, from /proc.
func childProcesses() []int {
	self := strconv.Itoa(os.Getpid())
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == self && f[0] != "Z" {
			out = append(out, pid)
		}
	}
	return out
}
