package pythonenv

import (
	"context"
	"testing"
	"time"
)

// BenchmarkAcquire measures, in one run, a cold build of a new requirement
// set (fresh cache, so pip also downloads) against a cache hit, and splits
// the build into pip's own time and PRIMS's overhead (venv creation,
// metadata, rename, eviction scan). Run with:
//
//	go test -run '^$' -bench Acquire -benchtime 5x ./workspace/pythonenv/
func BenchmarkAcquire(b *testing.B) {
	interp := testInterp(b)
	idx := basicIndex(b)
	reqs := []string{"app", "two==2.0"}

	b.Run("cold", func(b *testing.B) {
		var build, pip, venv time.Duration
		for b.Loop() {
			b.StopTimer()
			c := newTestCache(b, idx.URL, nil)
			b.StartTimer()
			env, err := c.Acquire(context.Background(), interp, reqs, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			env.Release()
			c.builds.Wait()
			build += time.Duration(c.stats.build.Load())
			pip += time.Duration(c.stats.pip.Load())
			venv += time.Duration(c.stats.venv.Load())
			b.StartTimer()
		}
		n := float64(b.N)
		b.ReportMetric(float64(pip.Milliseconds())/n, "pip-ms/op")
		b.ReportMetric(float64(venv.Milliseconds())/n, "venv-ms/op")
		b.ReportMetric(float64((build-pip).Milliseconds())/n, "overhead-ms/op")
	})
	b.Run("hit", func(b *testing.B) {
		c := newTestCache(b, idx.URL, nil)
		acquire(b, c, interp, reqs...)
		for b.Loop() {
			env, err := c.Acquire(context.Background(), interp, reqs, nil)
			if err != nil {
				b.Fatal(err)
			}
			if !env.Hit {
				b.Fatal("not a hit")
			}
			env.Release()
		}
	})
}

// BenchmarkDiscover measures interpreter discovery, which runs at server
// start.
func BenchmarkDiscover(b *testing.B) {
	for b.Loop() {
		Discover(context.Background(), DiscoverOptions{})
	}
}
