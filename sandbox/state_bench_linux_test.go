package sandbox

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prims-mcp/prims/internal/testpython"
)

// jupyterHelper starts an IPython kernel with Debian's jupyter_client and
// times execute round trips of print(1) on request: one line in, the
// seconds it took out.
const jupyterHelper = `
import sys, time
from jupyter_client.manager import start_new_kernel
km, kc = start_new_kernel(kernel_name="python3")
kc.execute_interactive("x = 1", timeout=60, output_hook=lambda m: None)
print("ready", flush=True)
for _ in sys.stdin:
    t = time.perf_counter()
    kc.execute_interactive("print(1)", timeout=60, output_hook=lambda m: None)
    print(time.perf_counter() - t, flush=True)
kc.stop_channels()
km.shutdown_kernel(now=True)
`

// BenchmarkStateCall compares, in one run with the variants taking turns
// in every iteration: a bare interpreter spawn (print(1)), a fresh print(1)
// run in the namespaces tier (no warm pool), a print(len(data)) call on a
// state holding 300 MiB (a bytearray, in 4 KiB pages; and a numpy array,
// in huge pages, when numpy is there), and an IPython kernel's execute round trip
// (Debian's python3-ipykernel, which it installs when missing). It then
// makes 8 copies of the state (fork_from) and reports the PSS and RSS of
// the 9 interpreters: PSS counts shared pages once.
//
//	go test -run '^$' -bench BenchmarkStateCall -benchtime 40x ./sandbox
func BenchmarkStateCall(b *testing.B) {
	py := testpython.Path(b)
	r, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	dir := mkWorkspace(b)
	h, err := r.OpenStates(Job{Python: py, Dir: dir, ReadOnly: readOnlyOf(dir)})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	ctx := context.Background()
	if err := h.New(ctx, "big", ""); err != nil {
		b.Fatal(err)
	}
	load := "data = bytearray(300 << 20)\nfor i in range(0, len(data), 4096): data[i] = 1"
	if res, err := h.Run(ctx, "big", Job{Code: load}); err != nil || !res.Committed {
		b.Fatalf("loading 300 MiB: %v, committed %v", err, res.Committed)
	}
	// The same 300 MiB in a numpy array, which numpy places in transparent
	// huge pages: its fork copies 150 page-table entries, not 76,800.
	numpy := h.New(ctx, "np", "") == nil
	if numpy {
		res, err := h.Run(ctx, "np", Job{Code: "import numpy\ndata = numpy.ones(300 << 17)"})
		numpy = err == nil && res.Committed
	}
	if !numpy {
		b.Log("no numpy for this interpreter: the numpy state is left out")
	}
	jup := startJupyter(b)

	type variant struct {
		name string
		run  func() (time.Duration, error)
		d    []time.Duration
	}
	timed := func(f func() error) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			t0 := time.Now()
			err := f()
			return time.Since(t0), err
		}
	}
	job := Job{Python: py, Code: "print(1)", Dir: dir, ReadOnly: readOnlyOf(dir)}
	vs := []*variant{
		{name: "bare", run: timed(func() error { return exec.Command(py, "-c", "print(1)").Run() })},
		{name: "fresh", run: timed(func() error {
			res, err := r.Run(ctx, job)
			if err == nil && res.ExitCode != 0 {
				err = fmt.Errorf("exit %d", res.ExitCode)
			}
			return err
		})},
		{name: "state300", run: timed(func() error {
			res, err := h.Run(ctx, "big", Job{Code: "print(len(data))"})
			if err == nil && !res.Committed {
				err = fmt.Errorf("not committed: exit %d", res.ExitCode)
			}
			return err
		})},
	}
	if numpy {
		vs = append(vs, &variant{name: "state300np", run: timed(func() error {
			res, err := h.Run(ctx, "np", Job{Code: "print(len(data))"})
			if err == nil && !res.Committed {
				err = fmt.Errorf("not committed: exit %d", res.ExitCode)
			}
			return err
		})})
	}
	if jup != nil {
		vs = append(vs, &variant{name: "jupyter", run: jup.roundTrip})
	}
	for b.Loop() {
		for _, v := range vs {
			d, err := v.run()
			if err != nil {
				b.Fatalf("%s: %v", v.name, err)
			}
			v.d = append(v.d, d)
		}
	}
	med := map[string]time.Duration{}
	for _, v := range vs {
		med[v.name] = median(v.d)
		b.ReportMetric(ms(med[v.name]), v.name+"-ms")
	}
	b.ReportMetric(float64(med["state300"])/float64(med["bare"]), "state300/bare")
	b.ReportMetric(float64(med["fresh"])/float64(med["bare"]), "fresh/bare")
	if numpy {
		b.ReportMetric(float64(med["state300np"])/float64(med["bare"]), "state300np/bare")
	}
	if jup != nil {
		b.ReportMetric(float64(med["state300"])/float64(med["jupyter"]), "state300/jupyter")
		if numpy {
			b.ReportMetric(float64(med["state300np"])/float64(med["jupyter"]), "state300np/jupyter")
		}
	}

	// 8 copies of the state: their pages are the original's until written.
	names := []string{"big"}
	for i := range 8 {
		name := "copy" + strconv.Itoa(i)
		if err := h.New(ctx, name, "big"); err != nil {
			b.Fatal(err)
		}
		names = append(names, name)
	}
	var pss, rss int64
	for _, n := range names {
		pss += h.Memory(n)
		pid, _ := h.holder(n)
		rss += residentMemory(pid)
	}
	b.ReportMetric(float64(pss)/(1<<20), "pss9-MiB")
	b.ReportMetric(float64(rss)/(1<<20), "rss9-MiB")
}

type jupyter struct {
	cmd *exec.Cmd
	in  *os.File
	out *bufio.Scanner
}

// startJupyter starts the helper kernel, installing python3-ipykernel with
// apt-get when it is missing; nil (logged) when it cannot.
func startJupyter(b *testing.B) *jupyter {
	const py = "/usr/bin/python3.11"
	if exec.Command(py, "-c", "import jupyter_client, ipykernel").Run() != nil {
		b.Log("installing python3-ipykernel")
		if out, err := exec.Command("apt-get", "install", "-y", "python3-ipykernel").CombinedOutput(); err != nil {
			b.Logf("no Jupyter round trip: apt-get install python3-ipykernel: %v\n%s", err, out)
			return nil
		}
	}
	cmd := exec.Command(py, "-c", jupyterHelper)
	// The kernelspec runs "python3": Debian's, not a pyenv shim's.
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/bin")
	inR, inW, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stdin = inR
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	inR.Close()
	j := &jupyter{cmd: cmd, in: inW, out: bufio.NewScanner(stdout)}
	b.Cleanup(func() { inW.Close(); _ = cmd.Wait() })
	if !j.out.Scan() || j.out.Text() != "ready" {
		b.Logf("no Jupyter round trip: the kernel did not start (%q)", j.out.Text())
		return nil
	}
	return j
}

func (j *jupyter) roundTrip() (time.Duration, error) {
	if _, err := j.in.WriteString("go\n"); err != nil {
		return 0, err
	}
	if !j.out.Scan() {
		return 0, fmt.Errorf("the kernel helper ended: %v", j.out.Err())
	}
	s, err := strconv.ParseFloat(strings.TrimSpace(j.out.Text()), 64)
	return time.Duration(s * float64(time.Second)), err
}
