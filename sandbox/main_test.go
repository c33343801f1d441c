package sandbox

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/prims-mcp/prims/internal/testpython"
)

// TestMain lets the test binary serve as the sandbox init, as main does in
// the prims binary.
func TestMain(m *testing.M) {
	MaybeInit()
	os.Exit(m.Run())
}

// testPython is an interpreter discovery finds that every sandbox user can
// reach (a run under uid 65534 cannot enter /root).
func testPython(t testing.TB) string {
	t.Helper()
	return testpython.Path(t)
}

// mkWorkspace makes a directory laid out like a PRIMS workspace, private to
// this user, with one input under mounts/.
func mkWorkspace(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "prims-ws-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
		os.RemoveAll(dir)
	})
	for _, d := range []string{"mounts", "output", "logs", ".home", ".tmp"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "mounts", "input.txt"), []byte("input"), 0o600)
	return dir
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
