package sandbox

import (
	"context"
	"strings"
	"testing"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/internal/testpython"
)

// TestZygoteEveryPython forks runs from a zygote of every interpreter
// discovery finds here (3.7 and up): zygote.py, msgs.py and the bootstrap
// must work, and confine the fork, in each, not only in the one the other
// tests use.
func TestZygoteEveryPython(t *testing.T) {
	if !Probe().Can(TierNamespaces) {
		testenv.Skip(t, testenv.Userns, "%s", Probe().Missing())
	}
	all, _ := testpython.All()
	if len(all) == 0 {
		testpython.Path(t) // skips, or fails where Python is required
	}
	r, err := New(Config{Tier: TierNamespaces, Warm: 1, Limits: testLimits})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const code = `import os, sys
st = open("/proc/self/status").read()
caps = [l.split()[1] for l in st.splitlines() if l.startswith(("CapEff", "CapPrm", "CapBnd"))]
open("/tmp/x", "w").write("x")
print("%d.%d" % sys.version_info[:2], sorted(set(caps)), "ctypes" in sys.modules)
`
	for _, py := range all {
		t.Run(py.Version, func(t *testing.T) {
			ws := mkWorkspace(t)
			defer r.ForgetDir(ws)
			mm := strings.Join(strings.SplitN(py.Version, ".", 3)[:2], ".")
			for i := range 2 {
				if i == 1 {
					waitWarm(t, r)
				}
				var out, errOut lockedBuffer
				res, err := r.Run(context.Background(), Job{Python: py.Path, Code: code, Dir: ws, ReadOnly: readOnlyOf(ws), Stdout: &out, Stderr: &errOut})
				if err != nil {
					t.Fatal(err)
				}
				want := mm + " ['0000000000000000'] False\n"
				if res.ExitCode != 0 || out.String() != want || res.Warm != (i == 1) {
					t.Fatalf("run %d: exit %d warm %v\nstdout %q, want %q\nstderr %s", i, res.ExitCode, res.Warm, out.String(), want, errOut.String())
				}
			}
		})
	}
}
