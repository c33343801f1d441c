package main

import (
	"context"
	"os/exec"
	"slices"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkRunCodeVsBare measures a run_code round trip of print(1) through
// a real `prims stdio` process against spawning the same interpreter bare,
// interleaved in one run so machine noise hits both alike. It reports the
// medians and their ratio (target: ratio <= 1.5).
//
//	go test -run '^$' -bench RunCodeVsBare -benchtime 100x .
func BenchmarkRunCodeVsBare(b *testing.B) {
	py := testPython(b)
	ctx := context.Background()
	client := sdk.NewClient(&sdk.Implementation{Name: "bench"}, nil)
	cs, err := client.Connect(ctx, &sdk.CommandTransport{Command: primsCmd(b, "stdio", "--python", py, "--log-level", "error")}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer cs.Close()
	params := &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": "print(1)"}}
	// Warm both paths (page cache, first workspace creation).
	for range 3 {
		if _, err := cs.CallTool(ctx, params); err != nil {
			b.Fatal(err)
		}
		exec.Command(py, "-c", "print(1)").Run()
	}
	var bare, prims []time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if out, err := exec.Command(py, "-c", "print(1)").Output(); err != nil || string(out) != "1\n" {
			b.Fatalf("bare: %q %v", out, err)
		}
		t1 := time.Now()
		res, err := cs.CallTool(ctx, params)
		if err != nil || res.IsError {
			b.Fatalf("run_code: %v", err)
		}
		t2 := time.Now()
		bare = append(bare, t1.Sub(t0))
		prims = append(prims, t2.Sub(t1))
	}
	b.StopTimer()
	mb, mp := median(bare), median(prims)
	b.ReportMetric(float64(mb.Microseconds())/1000, "bare-ms")
	b.ReportMetric(float64(mp.Microseconds())/1000, "run_code-ms")
	b.ReportMetric(float64(mp)/float64(mb), "ratio")
	b.ReportMetric(0, "ns/op") // the medians above are the result
}

// BenchmarkStartup measures from starting `prims stdio` to the initialize
// response, against starting the bare interpreter, in one run.
//
//	go test -run '^$' -bench Startup -benchtime 20x .
func BenchmarkStartup(b *testing.B) {
	py := testPython(b)
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
	mb, mp := median(bare), median(prims)
	b.ReportMetric(float64(mb.Microseconds())/1000, "python-start-ms")
	b.ReportMetric(float64(mp.Microseconds())/1000, "initialize-ms")
	b.ReportMetric(float64(mp)/float64(mb), "ratio")
	b.ReportMetric(0, "ns/op")
}
