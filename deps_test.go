package main

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// TestLayering pins the one-way arrows between PRIMS' packages, as go list
// sees them (the build's own view, build tags included):
//
//	main -> mcp -> session -> sandbox, workspace, workspace/pythonenv
//
// Nothing points back up: the sandbox knows nothing of MCP or the session,
// and the workspace and its environments know neither the sandbox nor MCP.
// Production imports are checked transitively (Deps); a test may reach a
// lower sibling (the environments' tests confine pip in a real sandbox), but
// never a layer above its own.
func TestLayering(t *testing.T) {
	const module = "github.com/prims-mcp/prims/"
	type rule struct {
		pkg      string   // a package or, with a trailing "/...", a tree
		banned   []string // trees its code may not depend on
		bannedTs []string // trees its tests may not import
	}
	rules := []rule{
		{"workspace/...", []string{"mcp", "session", "sandbox"}, []string{"mcp", "session"}},
		{"sandbox/...", []string{"mcp", "session", "workspace/pythonenv"}, []string{"mcp", "session"}},
		{"session", []string{"mcp"}, []string{"mcp"}},
		{"internal/...", []string{"mcp", "session"}, nil},
	}
	in := func(p, tree string) bool {
		return p == module+tree || strings.HasPrefix(p, module+tree+"/")
	}
	for _, r := range rules {
		pkgs := goList(t, "./"+r.pkg)
		if len(pkgs) == 0 {
			if r.pkg == "session" {
				continue // not there yet: nothing to pin
			}
			t.Fatalf("go list ./%s: no packages", r.pkg)
		}
		for _, p := range pkgs {
			for _, d := range p.Deps {
				for _, b := range r.banned {
					if in(d, b) {
						t.Errorf("%s depends on %s", p.ImportPath, d)
					}
				}
			}
			for _, d := range append(p.TestImports, p.XTestImports...) {
				for _, b := range r.bannedTs {
					if in(d, b) {
						t.Errorf("the tests of %s import %s", p.ImportPath, d)
					}
				}
			}
		}
	}
}

type listedPackage struct {
	ImportPath                      string
	Deps, TestImports, XTestImports []string
}

// goList returns the packages pattern names; none (not an error) when the
// pattern matches no directory.
func goList(t *testing.T, pattern string) []listedPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Deps,TestImports,XTestImports", pattern)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && strings.Contains(string(ee.Stderr), "matched no packages") {
			return nil
		}
		t.Fatalf("go list %s: %v\n%s", pattern, err, out)
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list %s: %v", pattern, err)
		}
		if strings.HasPrefix(p.ImportPath, "github.com/prims-mcp/prims") {
			pkgs = append(pkgs, p)
		}
	}
	return pkgs
}
