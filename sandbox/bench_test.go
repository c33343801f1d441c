package sandbox

import (
	"context"
	"os/exec"
	"slices"
	"testing"
	"time"
)

// BenchmarkRun compares, in one run, print(1) through each tier with a bare
// interpreter spawn, and reports the medians and the sandbox's overhead:
//
//	go test -run '^$' -bench BenchmarkRun -benchtime 50x ./sandbox
func BenchmarkRun(b *testing.B) {
	py := testPython(b)
	medians := map[string]time.Duration{}
	var prep func() // untimed, before each timed run
	measure := func(name string, run func() error) {
		b.Run(name, func(b *testing.B) {
			var d []time.Duration
			for b.Loop() {
				if prep != nil {
					prep()
				}
				t0 := time.Now()
				if err := run(); err != nil {
					b.Fatal(err)
				}
				d = append(d, time.Since(t0))
			}
			slices.Sort(d)
			medians[name] = d[len(d)/2]
			b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "ms/median")
		})
	}
	measure("bare", func() error { return exec.Command(py, "-c", "print(1)").Run() })
	for _, tier := range []Tier{TierNone, TierLandlock, TierNamespaces} {
		r, err := New(Config{Tier: tier})
		if err != nil {
			b.Logf("skip %s: %v", tier, err)
			continue
		}
		ws := mkWorkspace(b)
		measure(string(tier), func() error {
			res, err := r.Run(context.Background(), Job{Python: py, Code: "print(1)", Dir: ws})
			if err == nil && res.ExitCode != 0 {
				b.Fatalf("exit %d", res.ExitCode)
			}
			return err
		})
	}
	if r, err := New(Config{Warm: 1}); err == nil {
		ws := mkWorkspace(b)
		job := Job{Python: py, Code: "print(1)", Dir: ws}
		r.Run(context.Background(), job) // fill the pool
		prep = func() {
			// Let the pool refill and the new sandbox finish setting up, as
			// it does while an agent thinks between calls.
			for r.PoolStats().Waiting == 0 {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond)
		}
		measure("warm", func() error {
			res, err := r.Run(context.Background(), job)
			if err == nil && !res.Warm {
				b.Fatal("not warm")
			}
			return err
		})
		r.Close()
	}
	bare := medians["bare"]
	for _, n := range []string{"none", "landlock", "namespaces", "warm"} {
		if m, ok := medians[n]; ok && bare > 0 {
			b.Logf("%-10s median %6.2f ms  = %.2fx bare  (+%.2f ms over bare, +%.2f ms over none)",
				n, ms(m), float64(m)/float64(bare), ms(m-bare), ms(m-medians["none"]))
		}
	}
	b.Logf("bare       median %6.2f ms", ms(bare))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
