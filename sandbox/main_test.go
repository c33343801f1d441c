package sandbox

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain lets the test binary serve as the sandbox init, as main does in
// the prims binary.
func TestMain(m *testing.M) {
	MaybeInit()
	os.Exit(m.Run())
}

// testPython is Debian's interpreter, which every sandbox user can reach.
func testPython(t testing.TB) string {
	t.Helper()
	const py = "/usr/bin/python3.11"
	if _, err := os.Stat(py); err != nil {
		t.Skipf("%s is not installed", py)
	}
	return py
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
