package testenv

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// optional are the reasons a test may skip without going through Skip:
// opt-in runs, helper processes, documented limits, and (coveredBy) cases
// another test, named in the reason, covers. None of them is a host
// lacking something.
var optional = []string{
	"pass -",         // opt-in: -load, -soak
	"-short",         // go test -short
	"prints 1 GiB",   // skipped by -short
	"helper process", // the re-executed test binary's body
	"known limit",    // a documented limit of one tier
}

// coveredBy finds the name of the test a skip reason says covers the case.
var coveredBy = regexp.MustCompile(`\bTest[A-Z][A-Za-z0-9_]*`)

// bareSkips lists the calls in src that skip a test without Skip and for
// none of the optional reasons.
func bareSkips(filename string, src any) ([]string, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, filename, src, 0)
	if err != nil {
		return nil, err
	}
	var bad []string
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || (sel.Sel.Name != "Skip" && sel.Sel.Name != "Skipf" && sel.Sel.Name != "SkipNow") {
			return true
		}
		if x, ok := sel.X.(*ast.Ident); ok && x.Name == "testenv" {
			return true
		}
		reason := ""
		if len(call.Args) > 0 {
			if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				reason, _ = strconv.Unquote(lit.Value)
			}
		}
		for _, o := range optional {
			if strings.HasPrefix(reason, o) {
				return true
			}
		}
		if coveredBy.MatchString(reason) {
			return true
		}
		bad = append(bad, fmt.Sprintf("%s:%d: bare %s(%q)", filename, fset.Position(call.Pos()).Line, sel.Sel.Name, reason))
		return true
	})
	return bad, nil
}

// TestEverySkipGoesThroughTestenv pins the policy: a test that skips
// because the host lacks something calls Skip, so PRIMS_REQUIRE can turn
// it into a failure. A bare t.Skip is allowed only for the reasons above.
func TestEverySkipGoesThroughTestenv(t *testing.T) {
	// Control: the check sees a bare skip.
	bad, err := bareSkips("control_test.go", `package x
func TestX(t *testing.T) { t.Skip("no python3.11"); t.Skip("pass -load"); testenv.Skip(t, testenv.Python, "none") }`)
	if err != nil || len(bad) != 1 {
		t.Fatalf("control: bareSkips = %q, %v; want the one bare skip", bad, err)
	}

	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	var checked int
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		bad, err := bareSkips(rel, src)
		if err != nil {
			t.Errorf("parse %s: %v", rel, err)
		}
		for _, b := range bad {
			t.Errorf("%s: a test that skips because the host lacks something must call testenv.Skip with the feature", b)
		}
		checked++
		return nil
	})
	if checked < 10 {
		t.Fatalf("checked %d test files: the walk did not find the module", checked)
	}
}
