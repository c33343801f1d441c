package pythonenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/sandbox/egress"
	"github.com/prims-mcp/prims/workspace/pythonenv/pythonenvtest"
)

// confineWith is mcp.ConfineInstalls (which this package cannot import):
// pip in a sandbox of r's tier.
func confineWith(r *sandbox.Runner, out io.Writer) ConfineFunc {
	return func(ctx context.Context, c Confined) (int, error) {
		res, err := r.RunCommand(ctx, sandbox.Command{
			Args: c.Args, Env: c.Env, Dir: c.Dir, Writable: c.Writable, ReadOnly: c.ReadOnly,
			Egress: egress.Policy{Allow: c.Hosts, AllowPrivate: c.PrivateHosts}, Output: io.MultiWriter(c.Output, out), Timeout: c.Timeout,
		})
		if err != nil {
			return 0, err
		}
		if res.ExitCode == 0 && (res.TimedOut || res.Cancelled) {
			return -1, nil
		}
		return res.ExitCode, nil
	}
}

// hostileBuild is the build code of a hostile source distribution: it
// leaves a marker in its own build directory (proof it ran), then tries to
// write outside the environment, read secrets in the home and in /tmp and
// reach a loopback service. Each probe's outcome goes into the report the
// wheel installs.
const hostileBuild = `
import os, socket
def probe(name, fn):
    try:
        report.append("%s: %s" % (name, fn()))
    except Exception as e:
        report.append("%s: refused (%s)" % (name, type(e).__name__))
probe("marker", lambda: open("hostile-marker", "w").write("built here") and os.path.exists("hostile-marker"))
for i, p in enumerate(OUTSIDE):
    probe("write-outside-%d" % i, lambda: open(p, "w").write("PWNED") and "written")
probe("home-secret", lambda: open(HOME_SECRET).read())
probe("tmp-secret", lambda: open(TMP_SECRET).read())
probe("loopback", lambda: socket.create_connection(("127.0.0.1", PORT), timeout=3).close() or "connected")
`

// TestHostileSdist is issue 12's attack: a requirement served only as a
// source distribution runs its build code during the install. Confined,
// that code runs (its marker is written in its build directory) but cannot
// write outside the environment, read a secret in the home or in /tmp, or
// connect to a loopback service. The control installs the same package
// with pip on the host and sees every hole.
func TestHostileSdist(t *testing.T) {
	in := testInterp(t)
	if !othersCanReach(in.Path) && os.Geteuid() == 0 {
		testenv.Skip(t, testenv.Shared, "the sandbox user cannot run %s", in.Path)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	homeSecret := filepath.Join(home, ".prims-test-secret-"+tag)
	tmpSecret := filepath.Join(os.TempDir(), "prims-test-secret-"+tag)
	for _, p := range []string{homeSecret, tmpSecret} {
		if err := os.WriteFile(p, []byte("TOP-SECRET-"+tag), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(p) })
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()

	// install builds the hostile package into a fresh cache and returns its
	// build report and the paths it tried to write outside the environment.
	install := func(t *testing.T, confine func(io.Writer) ConfineFunc) (report string, outside []string) {
		dir := t.TempDir()
		// The landlock tier runs a root server's pip as another uid.
		os.Chmod(dir, 0o755)
		os.Chmod(filepath.Dir(dir), 0o755)
		outside = []string{
			filepath.Join(os.TempDir(), "prims-hostile-"+tag),
			filepath.Join(home, ".prims-hostile-"+tag),
			filepath.Join(dir, "pwned"), // the cache's root
			filepath.Join(dir, "envs", "pwned"),
		}
		for _, p := range outside {
			t.Cleanup(func() { os.Remove(p) })
		}
		build := fmt.Sprintf("OUTSIDE = %s\nHOME_SECRET = %q\nTMP_SECRET = %q\nPORT = %d\n",
			pyList(outside), homeSecret, tmpSecret, ln.Addr().(*net.TCPAddr).Port) + hostileBuild
		ix := pythonenvtest.NewIndex(t, pythonenvtest.Package{Name: "hostile", Version: "1.0", Build: build})
		var out bytes.Buffer
		opts := Options{Dir: dir, IndexURL: ix.URL, InstallTimeout: 2 * time.Minute}
		if confine != nil {
			opts.Confine = confine(&out)
		}
		c, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		env, err := c.Acquire(context.Background(), in, []string{"hostile"}, nil)
		if err != nil {
			t.Fatalf("install: %v\n%s", err, out.String())
		}
		defer env.Release()
		b, err := exec.Command(env.Python, "-c", "import hostile, os; print(open(os.path.join(os.path.dirname(hostile.__file__), 'build_report.txt')).read())").CombinedOutput()
		if err != nil {
			t.Fatalf("read the build report: %v\n%s", err, b)
		}
		return string(b), outside
	}

	t.Run("control", func(t *testing.T) {
		before := accepted.Load()
		report, outside := install(t, nil)
		t.Logf("build report on the host:\n%s", report)
		if !strings.Contains(report, "marker: True") || !strings.Contains(report, "TOP-SECRET-"+tag) || accepted.Load() == before {
			t.Errorf("the probe cannot see the holes it looks for:\n%s", report)
		}
		if _, err := os.Stat(outside[0]); err != nil {
			t.Errorf("control: the build could not write %s: %v", outside[0], err)
		}
	})

	for _, tier := range []sandbox.Tier{sandbox.TierNamespaces, sandbox.TierLandlock} {
		t.Run(string(tier), func(t *testing.T) {
			s := sandbox.Probe()
			if !s.Can(tier) {
				feature := testenv.Userns
				if tier == sandbox.TierLandlock {
					feature = testenv.Landlock
				}
				testenv.Skip(t, feature, "tier %s: %s", tier, s.Missing())
			}
			r, err := sandbox.New(sandbox.Config{Tier: tier})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			before := accepted.Load()
			report, outside := install(t, func(out io.Writer) ConfineFunc { return confineWith(r, out) })
			t.Logf("build report in the %s sandbox:\n%s", tier, report)
			if !strings.Contains(report, "marker: True") {
				t.Errorf("the build did not run, or could not write its own build directory:\n%s", report)
			}
			if strings.Contains(report, "TOP-SECRET") {
				t.Errorf("the build read a secret:\n%s", report)
			}
			// A write may land in the sandbox's own /tmp; none may reach
			// the host.
			for _, p := range outside {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s exists after the build", p)
				}
			}
			if accepted.Load() != before || !strings.Contains(report, "loopback: refused") {
				t.Errorf("the build connected to a loopback service:\n%s", report)
			}
		})
	}
}

func pyList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// TestHostileSdistUnprivileged runs TestHostileSdist again as uid 65534, as
// a server started by an ordinary user would be.
func TestHostileSdistUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("already unprivileged: TestHostileSdist covers this case")
	}
	in := testInterp(t)
	if !othersCanReach(in.Path) {
		testenv.Skip(t, testenv.Shared, "uid 65534 cannot run %s", in.Path)
	}
	testenv.RerunAsNobody(t, "^TestHostileSdist$", nil)
}

// BenchmarkAcquireSandboxed measures what the install sandbox costs: each
// iteration builds the same new requirement set cold twice, with pip on the
// host (the unconfined path) and in a sandbox of the best tier reaching the
// index through the egress proxy, and reports each build's overhead beyond
// pip's own install time on the host. Run with:
//
//	go test -run '^$' -bench AcquireSandboxed -benchtime 5x ./workspace/pythonenv/
func BenchmarkAcquireSandboxed(b *testing.B) {
	interp := testInterp(b)
	idx := basicIndex(b)
	reqs := []string{"app", "two==2.0"}
	r, err := sandbox.New(sandbox.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	var hostPip, hostBuild, boxBuild time.Duration
	build := func(confine ConfineFunc) (pip, total time.Duration) {
		c := newTestCache(b, idx.URL, func(o *Options) { o.Confine = confine })
		start := time.Now()
		env, err := c.Acquire(context.Background(), interp, reqs, nil)
		if err != nil {
			b.Fatal(err)
		}
		total = time.Since(start)
		env.Release()
		c.builds.Wait()
		return time.Duration(c.stats.pip.Load()), total
	}
	i := 0
	for b.Loop() {
		// Alternate which goes first: the second build of an iteration
		// finds the index's files in the page cache.
		host := func() {
			p, t := build(nil)
			hostPip += p
			hostBuild += t
		}
		box := func() {
			_, t := build(confineWith(r, io.Discard))
			boxBuild += t
		}
		if i++; i%2 == 0 {
			host()
			box()
		} else {
			box()
			host()
		}
	}
	n := float64(b.N)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / n }
	b.ReportMetric(ms(hostPip), "pip-ms/op")
	b.ReportMetric(ms(hostBuild-hostPip), "host-overhead-ms/op")
	b.ReportMetric(ms(boxBuild-hostPip), "sandboxed-overhead-ms/op")
	b.ReportMetric(ms(boxBuild-hostBuild), "sandbox-cost-ms/op")
}

// TestConfinedInstallNamesRefusedHost: an index whose project page links
// its file on another host installs on the host (the control), but in the
// install sandbox the proxy refuses that host, and the error names it and
// says what the operator can do.
func TestConfinedInstallNamesRefusedHost(t *testing.T) {
	in := testInterp(t)
	r, err := sandbox.New(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Tier() == sandbox.TierNone {
		testenv.Skip(t, testenv.Userns, "no sandbox tier here")
	}
	name, whl, err := pythonenvtest.Wheel(pythonenvtest.Package{Name: "elsewhere", Version: "1.0"})
	if err != nil {
		t.Fatal(err)
	}
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(whl) }))
	defer files.Close()
	filesHost := fmt.Sprintf("localhost:%d", files.Listener.Addr().(*net.TCPAddr).Port)
	index := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/simple/elsewhere/" {
			http.NotFound(w, req)
			return
		}
		fmt.Fprintf(w, `<a href="http://%s/files/%s">%s</a>`, filesHost, name, name)
	}))
	defer index.Close()
	for _, confined := range []bool{false, true} {
		dir := t.TempDir()
		os.Chmod(dir, 0o755)
		os.Chmod(filepath.Dir(dir), 0o755)
		opts := Options{Dir: dir, IndexURL: index.URL + "/simple/", InstallTimeout: time.Minute}
		if confined {
			opts.Confine = confineWith(r, io.Discard)
		}
		c, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		env, err := c.Acquire(context.Background(), in, []string{"elsewhere"}, nil)
		if !confined {
			if err != nil {
				t.Fatalf("control: on the host the install works: %v", err)
			}
			env.Release()
			continue
		}
		t.Logf("confined: %v", err)
		ie, ok := err.(*InstallError)
		if !ok || ie.Kind != "index_unreachable" || !strings.Contains(ie.Summary, filesHost) || !strings.Contains(ie.Hint, "--find-links") {
			t.Errorf("confined install: %#v", err)
		}
	}
}

// TestBuildCannotSteerTheServer: a build may write the environment, which
// the server then handles as itself. A link the build plants where the
// server writes the environment's metadata must not carry that write to a
// host file (the control, pip on the host and no check, shows it would),
// and a bin/python the build points elsewhere (which runs would bind in)
// fails the install.
func TestBuildCannotSteerTheServer(t *testing.T) {
	in := testInterp(t)
	r, err := sandbox.New(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Tier() == sandbox.TierNone {
		testenv.Skip(t, testenv.Userns, "no sandbox tier here")
	}
	target := filepath.Join(t.TempDir(), "host-file")
	const env = `import os
env = os.path.join(os.path.dirname(os.environ["TMPDIR"]), "env")
`
	ix := pythonenvtest.NewIndex(t,
		pythonenvtest.Package{Name: "metalink", Version: "1.0", Build: env + fmt.Sprintf("os.symlink(%q, os.path.join(env, %q))\n", target, metaFile)},
		pythonenvtest.Package{Name: "pylink", Version: "1.0", Build: env + `os.remove(os.path.join(env, "bin", "python"))
# Still runs Python in the sandbox (an exec resolves it in the caller),
# but on the host it leads to the server's own binary.
os.symlink("/proc/self/exe", os.path.join(env, "bin", "python"))
`},
	)
	install := func(confine ConfineFunc, req string) error {
		dir := t.TempDir()
		os.Chmod(dir, 0o755)
		os.Chmod(filepath.Dir(dir), 0o755)
		c, err := New(Options{Dir: dir, IndexURL: ix.URL, InstallTimeout: time.Minute, Confine: confine})
		if err != nil {
			t.Fatal(err)
		}
		e, err := c.Acquire(context.Background(), in, []string{req}, nil)
		if err == nil {
			e.Release()
		}
		return err
	}
	reset := func() { os.WriteFile(target, []byte("original"), 0o644) }

	reset()
	install(nil, "metalink")
	if b, _ := os.ReadFile(target); !strings.Contains(string(b), `"key"`) {
		t.Fatalf("control: the server did not write through the planted link (%q): the probe cannot see the hole", b)
	}
	reset()
	if err := install(confineWith(r, io.Discard), "metalink"); err != nil {
		t.Errorf("metalink: %v", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "original" {
		t.Errorf("the server wrote through the build's link: %q", b)
	}
	err = install(confineWith(r, io.Discard), "pylink")
	if ie, ok := err.(*InstallError); !ok || ie.Kind != "build_failed" || !strings.Contains(ie.Summary, "bin/python") {
		t.Errorf("pylink: %v, want build_failed naming bin/python", err)
	}
}
