//go:build unix

package artifactstore_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/workspace/artifactstore"
)

// TestFileStoreDenied: a directory the server may not write is a denied
// bucket. Root writes anywhere, so as root the test runs again as uid 65534.
func TestFileStoreDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		testenv.RerunAsNobody(t, "^TestFileStoreDenied$", nil)
		return
	}
	dir := t.TempDir()
	must(t, os.Chmod(dir, 0o555))
	t.Cleanup(func() { os.Chmod(dir, 0o755) })
	ws := newWorkspace(t)
	writeOutput(t, ws, "a.txt", []byte("a"))
	_, err := open(t, "file://"+dir).Put(context.Background(), ws, "output/a.txt", "sessions/s1")
	want := "could not store output/a.txt in the file store: the store denied access"
	var se *artifactstore.Error
	if !errors.As(err, &se) || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), dir) {
		t.Fatalf("got %T %v\nwant an *artifactstore.Error starting %q, naming no host path", err, err, want)
	}
	// Control: the same store takes the file once the directory is writable.
	must(t, os.Chmod(dir, 0o755))
	if _, err := open(t, "file://"+dir).Put(context.Background(), ws, "output/a.txt", "sessions/s1"); err != nil {
		t.Fatalf("control: %v", err)
	}
}
