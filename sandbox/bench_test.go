package sandbox

import (
	"context"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/prims-mcp/prims/internal/testpython"
)

// BenchmarkRun compares print(1) through each tier with a bare interpreter
// spawn. The variants take turns within every iteration, so that the
// machine's noise hits them alike, and each reports its median and its
// overhead over the bare spawn; "warm" is a run handed to a waiting sandbox.
//
//	go test -run '^$' -bench BenchmarkRun -benchtime 60x ./sandbox
func BenchmarkRun(b *testing.B) {
	py := testpython.Path(b)
	type variant struct {
		name string
		run  func() error
		d    []time.Duration
	}
	vs := []*variant{{name: "bare", run: func() error { return exec.Command(py, "-c", "print(1)").Run() }}}
	for _, tier := range []Tier{TierNone, TierLandlock, TierNamespaces} {
		r, err := New(Config{Tier: tier})
		if err != nil {
			b.Logf("skip %s: %v", tier, err)
			continue
		}
		job := Job{Python: py, Code: "print(1)", Dir: mkWorkspace(b)}
		vs = append(vs, &variant{name: string(tier), run: func() error {
			res, err := r.Run(context.Background(), job)
			if err == nil && res.ExitCode != 0 {
				b.Fatalf("%s: exit %d", tier, res.ExitCode)
			}
			return err
		}})
	}
	b.Run("cold", func(b *testing.B) {
		for _, v := range vs {
			v.d = v.d[:0]
		}
		for b.Loop() {
			for _, v := range vs {
				t0 := time.Now()
				if err := v.run(); err != nil {
					b.Fatal(err)
				}
				v.d = append(v.d, time.Since(t0))
			}
		}
		bare := median(vs[0].d)
		for _, v := range vs {
			m := median(v.d)
			b.ReportMetric(ms(m), v.name+"-ms")
			if v != vs[0] {
				b.ReportMetric(ms(m-bare), v.name+"-over-bare-ms")
			}
		}
		if n := len(vs) - 1; n > 0 {
			b.ReportMetric(float64(median(vs[n].d))/float64(bare), vs[n].name+"/bare")
		}
	})

	r, err := New(Config{Warm: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	job := Job{Python: py, Code: "print(1)", Dir: mkWorkspace(b)}
	b.Run("warm", func(b *testing.B) {
		r.Run(context.Background(), job) // fill the pool
		var warm, bare []time.Duration
		for b.Loop() {
			// Let the pool refill and the new sandbox finish setting up, as
			// it does while an agent thinks between calls.
			b.StopTimer()
			for r.PoolStats().Waiting == 0 {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond)
			b.StartTimer()
			t0 := time.Now()
			res, err := r.Run(context.Background(), job)
			if err == nil && !res.Warm {
				b.Fatal("not warm")
			}
			warm = append(warm, time.Since(t0))
			t0 = time.Now()
			if err := vs[0].run(); err != nil {
				b.Fatal(err)
			}
			bare = append(bare, time.Since(t0))
		}
		b.ReportMetric(ms(median(warm)), "warm-ms")
		b.ReportMetric(ms(median(bare)), "bare-ms")
		b.ReportMetric(float64(median(warm))/float64(median(bare)), "warm/bare")
	})
}

func median(d []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(d))
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
