// Package testpython finds Python interpreters for tests the way the
// product does (pythonenv.Discover: --python, python3 on PATH through pyenv
// shims, pyenv versions, /usr/bin and /usr/local/bin), so a test runs on any
// host the product runs on, and a host without one skips or fails through
// testenv.
//
//	py := testpython.Find(t, testpython.Want{Pip: true}).Path
package testpython

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/workspace/pythonenv"
)

// Want says what a test needs of an interpreter.
type Want struct {
	Pip    bool // a pip that can install into environments
	Shared bool // runnable by every user (a sandbox under uid 65534 cannot reach /root)
}

var (
	once    sync.Once
	found   []pythonenv.Interpreter
	skipped []pythonenv.Skipped
)

// All returns every interpreter discovery finds on this host, those every
// user can run first (they also start fastest: no pyenv site hooks).
func All() ([]pythonenv.Interpreter, []pythonenv.Skipped) {
	once.Do(func() {
		all, sk := pythonenv.Discover(context.Background(), pythonenv.DiscoverOptions{})
		skipped = sk
		for _, in := range all {
			if Shared(in) {
				found = append(found, in)
			}
		}
		for _, in := range all {
			if !Shared(in) {
				found = append(found, in)
			}
		}
	})
	return found, skipped
}

// Find returns the first discovered interpreter that has what want asks
// for, or skips t (fails it where PRIMS_REQUIRE requires the feature).
func Find(t testing.TB, want Want) pythonenv.Interpreter {
	t.Helper()
	all, sk := All()
	if len(all) == 0 {
		testenv.Skip(t, testenv.Python, "no Python 3.7+ interpreter found (skipped: %+v)", sk)
	}
	for _, in := range all {
		if (!want.Pip || in.Pip != "") && (!want.Shared || Shared(in)) {
			return in
		}
	}
	switch {
	case want.Pip && want.Shared:
		for _, in := range all {
			if Shared(in) {
				testenv.Skip(t, testenv.Pip, "no interpreter every user can run has a pip >= 22.3: %s", in.NoPip)
			}
		}
		testenv.Skip(t, testenv.Shared, "every interpreter found is private to its owner: %s", paths(all))
	case want.Pip:
		testenv.Skip(t, testenv.Pip, "no interpreter found has a pip >= 22.3: %s", all[0].NoPip)
	default:
		testenv.Skip(t, testenv.Shared, "every interpreter found is private to its owner: %s", paths(all))
	}
	return pythonenv.Interpreter{}
}

// Path is Find(t, Want{Shared: true}).Path: an interpreter a sandbox under
// any uid can run.
func Path(t testing.TB) string {
	t.Helper()
	return Find(t, Want{Shared: true}).Path
}

// Versions returns n interpreters of distinct minor versions, preferring
// those every user can run, or skips t.
func Versions(t testing.TB, n int, want Want) []pythonenv.Interpreter {
	t.Helper()
	all, _ := All()
	var out []pythonenv.Interpreter
	seen := map[string]bool{}
	for _, in := range all {
		mm := majorMinor(in.Version)
		if seen[mm] || (want.Pip && in.Pip == "") || (want.Shared && !Shared(in)) {
			continue
		}
		seen[mm] = true
		out = append(out, in)
		if len(out) == n {
			return out
		}
	}
	testenv.Skip(t, testenv.Pythons, "needs %d Python versions, found %s", n, paths(all))
	return nil
}

// Shared reports whether every user can run in: the executable and its
// base prefix lie on paths every user may traverse.
func Shared(in pythonenv.Interpreter) bool {
	return othersCanReach(in.Path) && (in.BasePrefix == "" || othersCanReach(in.BasePrefix))
}

func othersCanReach(path string) bool {
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if p == filepath.Dir(p) {
			return true
		}
	}
}

func paths(all []pythonenv.Interpreter) []string {
	var ps []string
	for _, in := range all {
		ps = append(ps, in.Path)
	}
	return ps
}

func majorMinor(v string) string {
	dots := 0
	for i, r := range v {
		if r == '.' {
			if dots++; dots == 2 {
				return v[:i]
			}
		}
	}
	return v
}
