package sandbox

import (
	"os"
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
