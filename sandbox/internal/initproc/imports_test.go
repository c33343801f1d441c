package initproc

import (
	"os/exec"
	"strings"
	"testing"
)

// TestInitImportsFew: the init is initialized, and runs, before every
// package that sorts after it or waits on an import it lacks (see init), so
// each heavy import here would put the server's dependencies back on every
// run's path. The control is package sandbox, which does import them.
func TestInitImportsFew(t *testing.T) {
	heavy := []string{"net", "net/http", "os/exec", "log/slog", "path/filepath", "github.com/modelcontextprotocol/", "google.golang.org/"}
	deps := func(pkg string) []string {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		return strings.Fields(string(out))
	}
	found := func(list []string) []string {
		var got []string
		for _, d := range list {
			for _, h := range heavy {
				if d == h || (strings.HasSuffix(h, "/") && strings.HasPrefix(d, h)) {
					got = append(got, d)
				}
			}
		}
		return got
	}
	if got := found(deps("github.com/prims-mcp/prims/sandbox")); len(got) == 0 {
		t.Fatal("control: package sandbox imports none of the heavy packages; the check cannot see them")
	}
	if got := found(deps("github.com/prims-mcp/prims/sandbox/internal/initproc")); len(got) > 0 {
		t.Errorf("the init imports %q: keep it to the standard library's basics, x/sys and Landlock", got)
	}
}
