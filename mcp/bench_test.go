package mcp

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prims-mcp/prims/workspace/pythonenv"
	"github.com/prims-mcp/prims/workspace/pythonenv/pythonenvtest"
)

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkRequirements measures, in one run and through the MCP server, a
// call without requirements, the first call with a new requirement set
// (real pip installs it from a local index), and a second call with the same
// set (a cache hit). Each iteration uses a fresh session and a package no
// earlier iteration installed. The first call imports the package, which
// proves the install; the second runs the same program as the call without
// requirements, so the difference is what the cached environment costs (an
// import of a site-packages module also costs its import, and the full
// interpreter shutdown; see bootstrap.py). Target: second/none <= 1.2.
//
//	go test -run '^$' -bench Requirements -benchtime 10x ./mcp/
func BenchmarkRequirements(b *testing.B) {
	const max = 40
	var pkgs []pythonenvtest.Package
	for i := range max {
		pkgs = append(pkgs, pythonenvtest.Package{Name: fmt.Sprintf("bench-pkg-%d", i), Version: "1.0"})
	}
	ix := pythonenvtest.NewIndex(b, pkgs...)
	envs, err := pythonenv.New(pythonenv.Options{Dir: b.TempDir(), IndexURL: ix.URL})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var none, tFirst, tSecond []time.Duration
	i := 0
	for b.Loop() {
		if i == max {
			b.Fatalf("at most %d iterations", max)
		}
		b.StopTimer()
		env := start(b, protocols[0], Config{Envs: envs})
		mod := pkgs[i].Module()
		first := map[string]any{"code": "import " + mod, "requirements": []string{pkgs[i].Name}}
		second := map[string]any{"code": "import sys", "requirements": []string{pkgs[i].Name}}
		env.call(b, ctx, "run_code", map[string]any{"code": "print(1)"}, nil) // warm the session
		b.StartTimer()
		for _, step := range []struct {
			args any
			into *[]time.Duration
		}{
			{map[string]any{"code": "import sys"}, &none},
			{first, &tFirst},
			{second, &tSecond},
		} {
			var out RunOutput
			t0 := time.Now()
			if res := env.call(b, ctx, "run_code", step.args, &out); res.IsError {
				b.Fatal(text(res))
			}
			*step.into = append(*step.into, time.Since(t0))
			if step.into == &tSecond && !out.EnvCached {
				b.Fatalf("the second call did not run in the cached environment: %+v", out)
			}
		}
		i++
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(median(none)), "none-ms")
	b.ReportMetric(ms(median(tFirst)), "first-ms")
	b.ReportMetric(ms(median(tSecond)), "second-ms")
	b.ReportMetric(float64(median(tSecond))/float64(median(none)), "second/none")
	b.ReportMetric(0, "ns/op")
}
