package main

import (
	"context"
	"os/exec"
	"slices"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/workspace/pythonenv/pythonenvtest"
)

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// connect starts this test binary as `prims stdio` with args and returns an
// SDK client session over its stdin and stdout.
func connect(b *testing.B, args ...string) *sdk.ClientSession {
	b.Helper()
	client := sdk.NewClient(&sdk.Implementation{Name: "bench"}, nil)
	cs, err := client.Connect(context.Background(), &sdk.CommandTransport{Command: primsCmd(b, append([]string{"stdio", "--log-level", "error"}, args...)...)}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cs.Close() })
	return cs
}

func callOK(b *testing.B, cs *sdk.ClientSession, args map[string]any) {
	b.Helper()
	res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "run_code", Arguments: args})
	if err != nil || res.IsError {
		b.Fatalf("run_code: %v %+v", err, res)
	}
}

// BenchmarkRunCode measures the round trip of run_code with print(1)
// through a real `prims stdio` process, with the warm pool and without it,
// against spawning the same interpreter bare, interleaved in one run so
// machine noise hits all three alike, and none of them shares the machine
// with the pool's background start of the next sandbox. Both servers run in
// the strongest sandbox tier the host supports.
//
//	go test -run '^$' -bench RunCode -benchtime 100x .
func BenchmarkRunCode(b *testing.B) {
	py := testpython.Path(b)
	warm := connect(b, "--python", py)
	cold := connect(b, "--python", py, "--warm", "0")
	print1 := map[string]any{"code": "print(1)"}
	for range 3 { // first workspace, page cache, the pool's first sandbox
		callOK(b, warm, print1)
		callOK(b, cold, print1)
		exec.Command(py, "-c", "print(1)").Run()
	}
	var bare, tWarm, tCold []time.Duration
	timed := func(d *[]time.Duration, f func()) {
		t0 := time.Now()
		f()
		*d = append(*d, time.Since(t0))
	}
	for b.Loop() {
		// The warm server starts a replacement sandbox after each run: let
		// it finish, as it does while an agent reads a result, so that no
		// measurement shares the machine with it.
		time.Sleep(150 * time.Millisecond)
		timed(&bare, func() {
			if out, err := exec.Command(py, "-c", "print(1)").Output(); err != nil || string(out) != "1\n" {
				b.Fatalf("bare: %q %v", out, err)
			}
		})
		timed(&tWarm, func() { callOK(b, warm, print1) })
		time.Sleep(150 * time.Millisecond)
		timed(&tCold, func() { callOK(b, cold, print1) })
	}
	reportAgainstBare(b, bare, sample{"cold", tCold}, sample{"warm", tWarm})
}

// sample is one measured variant of a benchmark.
type sample struct {
	name string
	d    []time.Duration
}

// reportAgainstBare reports the median of the bare baseline and of each
// sample, and each sample's ratio to the baseline.
func reportAgainstBare(b *testing.B, bare []time.Duration, samples ...sample) {
	b.ReportMetric(ms(median(bare)), "bare-ms")
	for _, s := range samples {
		b.ReportMetric(ms(median(s.d)), s.name+"-ms")
		b.ReportMetric(float64(median(s.d))/float64(median(bare)), s.name+"/bare")
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkPreload measures a run whose package takes 300 ms to import, on
// a server that preloads it in the waiting sandbox and on one that does not.
// The package comes from a local index through the environment cache.
//
//	go test -run '^$' -bench Preload -benchtime 10x .
func BenchmarkPreload(b *testing.B) {
	py := testpython.Path(b)
	ix := pythonenvtest.NewIndex(b, pythonenvtest.Package{Name: "slowpkg", Version: "1.0", ImportDelay: 300 * time.Millisecond})
	cache := b.TempDir()
	common := []string{"--python", py, "--index-url", ix.URL, "--cache-dir", cache}
	pre := connect(b, append(common, "--preload", "slowpkg")...)
	plain := connect(b, common...)
	run := map[string]any{"code": "import slowpkg; print(slowpkg.__version__)", "requirements": []string{"slowpkg"}}
	for range 2 { // install once, then fill the pools
		callOK(b, pre, run)
		callOK(b, plain, run)
	}
	var tPre, tPlain []time.Duration
	for b.Loop() {
		t0 := time.Now()
		callOK(b, plain, run)
		t1 := time.Now()
		callOK(b, pre, run)
		t2 := time.Now()
		tPlain = append(tPlain, t1.Sub(t0))
		tPre = append(tPre, t2.Sub(t1))
		// Let the pools refill, as they would between an agent's calls.
		time.Sleep(400 * time.Millisecond)
	}
	b.ReportMetric(ms(median(tPlain)), "plain-ms")
	b.ReportMetric(ms(median(tPre)), "preload-ms")
	b.ReportMetric(float64(median(tPre))/float64(median(tPlain)), "preload/plain")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkStartup measures from starting `prims stdio` to the initialize
// response, against starting the bare interpreter, in one run.
//
//	go test -run '^$' -bench Startup -benchtime 20x .
func BenchmarkStartup(b *testing.B) {
	py := testpython.Path(b)
	ctx := context.Background()
	var bare, prims []time.Duration
	for b.Loop() {
		t0 := time.Now()
		exec.Command(py, "-c", "pass").Run()
		t1 := time.Now()
		client := sdk.NewClient(&sdk.Implementation{Name: "bench"}, nil)
		cs, err := client.Connect(ctx, &sdk.CommandTransport{Command: primsCmd(b, "stdio", "--python", py, "--log-level", "error")}, nil)
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		cs.Close()
		bare = append(bare, t1.Sub(t0))
		prims = append(prims, t2.Sub(t1))
	}
	b.ReportMetric(ms(median(bare)), "python-start-ms")
	b.ReportMetric(ms(median(prims)), "initialize-ms")
	b.ReportMetric(float64(median(prims))/float64(median(bare)), "ratio")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkFirstRun measures the first run_code of a fresh `prims stdio`,
// made half a second after initialize as an agent's first call is (its
// model needs at least that long), with the default warm pool and with
// --warm 0, against a bare interpreter spawn, interleaved in one run.
//
//	go test -run '^$' -bench FirstRun -benchtime 20x .
func BenchmarkFirstRun(b *testing.B) {
	py := testpython.Path(b)
	print1 := map[string]any{"code": "print(1)"}
	first := func(args ...string) time.Duration {
		client := sdk.NewClient(&sdk.Implementation{Name: "bench"}, nil)
		cs, err := client.Connect(context.Background(), &sdk.CommandTransport{Command: primsCmd(b, append([]string{"stdio", "--python", py, "--log-level", "error"}, args...)...)}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer cs.Close()
		time.Sleep(500 * time.Millisecond)
		t0 := time.Now()
		callOK(b, cs, print1)
		return time.Since(t0)
	}
	var bare, warm, cold []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := exec.Command(py, "-c", "print(1)").Run(); err != nil {
			b.Fatal(err)
		}
		bare = append(bare, time.Since(t0))
		warm = append(warm, first())
		cold = append(cold, first("--warm", "0"))
	}
	reportAgainstBare(b, bare, sample{"warm", warm}, sample{"warm0", cold})
}
