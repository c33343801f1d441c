package mcp

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prims-mcp/prims/sandbox/pyenv"
	"github.com/prims-mcp/prims/sandbox/pyenv/pyenvtest"
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
// earlier iteration installed. Target: second/none <= 1.2.
//
//	go test -run '^$' -bench Requirements -benchtime 10x ./mcp/
func BenchmarkRequirements(b *testing.B) {
	const max = 40
	var pkgs []pyenvtest.Package
	for i := range max {
		pkgs = append(pkgs, pyenvtest.Package{Name: fmt.Sprintf("bench-pkg-%d", i), Version: "1.0"})
	}
	ix := pyenvtest.NewIndex(b, pkgs...)
	envs, err := pyenv.New(pyenv.Options{Dir: b.TempDir(), IndexURL: ix.URL})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var none, first, second []time.Duration
	i := 0
	for b.Loop() {
		if i == max {
			b.Fatalf("at most %d iterations", max)
		}
		b.StopTimer()
		env := start(b, protocols[0], Config{Envs: envs})
		mod := pkgs[i].Module()
		req := map[string]any{"code": "import " + mod, "requirements": []string{pkgs[i].Name}}
		env.call(b, ctx, "run_code", map[string]any{"code": "print(1)"}, nil) // warm the session
		b.StartTimer()
		for _, step := range []struct {
			args any
			into *[]time.Duration
		}{
			{map[string]any{"code": "import sys"}, &none},
			{req, &first},
			{req, &second},
		} {
			t0 := time.Now()
			if res := env.call(b, ctx, "run_code", step.args, nil); res.IsError {
				b.Fatal(text(res))
			}
			*step.into = append(*step.into, time.Since(t0))
		}
		i++
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(median(none)), "none-ms")
	b.ReportMetric(ms(median(first)), "first-ms")
	b.ReportMetric(ms(median(second)), "second-ms")
	b.ReportMetric(float64(median(second))/float64(median(none)), "second/none")
	b.ReportMetric(0, "ns/op")
}
