// Package testenv is the one place a PRIMS test goes when the host lacks
// something it needs. A test names the feature; it is skipped with the
// reason, unless the run declared that feature required, in which case the
// test fails instead: CI lists what its hosts have in PRIMS_REQUIRE, so a
// suite that would stop testing there fails loudly rather than passing with
// skips.
//
//	if !landlockWorks() {
//		testenv.Skip(t, testenv.Landlock, "no Landlock here: %v", err)
//	}
//
// PRIMS_REQUIRE="python,pip,userns" go test ./...
package testenv

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// Features a test may need of its host.
const (
	Python   = "python"   // a Python 3.7+ interpreter found the way the product finds one
	Pip      = "pip"      // an interpreter with a pip that can build environments (pip >= 22.3)
	Shared   = "shared"   // an interpreter every user can run (a sandbox under an unprivileged uid)
	Pythons  = "pythons"  // two Python 3 versions (pyenv)
	Pyenv    = "pyenv"    // a pyenv interpreter under root's private home
	Ancient  = "ancient"  // a Python older than 3.7 (pyenv 2.7 or 3.6)
	Userns   = "userns"   // the namespaces sandbox tier
	Landlock = "landlock" // the landlock sandbox tier
	Root     = "root"     // tests run as root
	Proc     = "proc"     // a Linux /proc
	FIFO     = "fifo"     // named pipes
	Cgroup   = "cgroup"   // a memory cgroup per run: a delegated cgroup v2 subtree, or v1 as root
	Promtool = "promtool" // Prometheus's promtool on PATH, to check /metrics (Debian: prometheus)
)

// Features lists every feature name PRIMS_REQUIRE may hold.
var Features = []string{Python, Pip, Shared, Pythons, Pyenv, Ancient, Userns, Landlock, Root, Proc, FIFO, Cgroup, Promtool}

// Var is the environment variable that lists the required features,
// separated by commas or spaces; "all" requires every one.
const Var = "PRIMS_REQUIRE"

// Required reports whether the run declared feature required. An unknown
// name in PRIMS_REQUIRE is an error, so a typo cannot quietly require
// nothing.
func Required(feature string) (bool, error) {
	if !slices.Contains(Features, feature) {
		return false, fmt.Errorf("testenv: unknown feature %q", feature)
	}
	for _, f := range strings.FieldsFunc(os.Getenv(Var), func(r rune) bool { return r == ',' || r == ' ' }) {
		switch {
		case f == "all" || f == feature:
			return true, nil
		case !slices.Contains(Features, f):
			return false, fmt.Errorf("%s names an unknown feature %q (known: all, %s)", Var, f, strings.Join(Features, ", "))
		}
	}
	return false, nil
}

// Skip skips t because the host lacks feature, saying why; when the run
// requires feature it fails t instead.
func Skip(t testing.TB, feature, format string, args ...any) {
	t.Helper()
	why := fmt.Sprintf(format, args...)
	req, err := Required(feature)
	switch {
	case err != nil:
		t.Fatal(err)
	case req:
		t.Fatalf("required feature %q is missing (%s=%q): %s", feature, Var, os.Getenv(Var), why)
	}
	t.Skipf("needs %s: %s", feature, why)
}

// Need is Skip unless ok.
func Need(t testing.TB, ok bool, feature, format string, args ...any) {
	t.Helper()
	if !ok {
		Skip(t, feature, format, args...)
	}
}
