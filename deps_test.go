package main

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLayering pins which of PRIMS' packages may import which: the sandbox
// knows nothing of MCP, and the workspace knows neither the sandbox nor MCP.
func TestLayering(t *testing.T) {
	const module = "github.com/prims-mcp/prims/"
	forbidden := map[string][]string{
		"workspace": {"mcp", "sandbox"},
		"sandbox":   {"mcp"},
	}
	for dir, banned := range forbidden {
		checked := 0
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			checked++
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				for _, b := range banned {
					if p == module+b || strings.HasPrefix(p, module+b+"/") {
						t.Errorf("%s imports %s", path, p)
					}
				}
			}
			return nil
		})
		if err != nil || checked == 0 {
			t.Fatalf("walk %s: %v (%d files)", dir, err, checked)
		}
	}
}
