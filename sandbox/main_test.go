package sandbox

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/prims-mcp/prims/workspace"
)

// TestMain lets the test binary serve as the sandbox init, as main does in
// the prims binary.
func TestMain(m *testing.M) {
	MaybeInit()
	if testMainHook != nil {
		testMainHook()
	}
	os.Exit(m.Run())
}

// testMainHook, when a platform's tests set it, runs before any test (the
// attack harness forbids user namespaces there when asked to).
var testMainHook func()

// mkWorkspace makes a PRIMS workspace (workspace.New) with one input under
// mounts/ and returns the program's directory; readOnlyOf gives the paths a
// job must list in ReadOnly to see its mounts and logs.
func mkWorkspace(t testing.TB) string {
	t.Helper()
	ws, err := workspace.New("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		testWorkspaces.Delete(ws.Dir())
		ws.Close()
	})
	testWorkspaces.Store(ws.Dir(), ws)
	os.WriteFile(filepath.Join(ws.ReadOnly()[0], "input.txt"), []byte("input"), 0o644)
	return ws.Dir()
}

var testWorkspaces sync.Map

func readOnlyOf(dir string) []string {
	if ws, ok := testWorkspaces.Load(dir); ok {
		return ws.(*workspace.Workspace).ReadOnly()
	}
	return nil
}

// lockedBuffer takes both streams of a run from their two pumps.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
